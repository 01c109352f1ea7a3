"""cotharness compare refuses what it cannot pair, and says what it left out."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from harness_tasks.manifest import sha256_file

from compare_helpers import nli_data, nli_run, results_file, strict_json, summary
from conftest import write_jsonl
from loopback_server import LoopbackServer
from scripted_lm import ScriptedLM

GOLD = [i % 2 for i in range(8)]
RIGHT = dict(enumerate(GOLD))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """eight documents; the first four of them (like --limit 4); four others at the same positions."""
    d = tmp_path_factory.mktemp("pairing")
    eight = nli_data(d / "eight.jsonl", GOLD)
    four = write_jsonl(d / "four.jsonl", [json.loads(line) for line in eight.read_text().splitlines()[:4]])
    other = write_jsonl(d / "other.jsonl", [{"id": f"d{i}", "premise": f"Another premise {i}.", "hypothesis": f"h{i}",
                                             "label": GOLD[i]} for i in range(8)])
    wrong = {i: 1 - g for i, g in RIGHT.items()}
    return {"dir": d, "eight": nli_run(d / "eight", eight, RIGHT), "four": nli_run(d / "four", four, wrong),
            "other": nli_run(d / "other", other, RIGHT),
            "direct": nli_run(d / "direct", eight, wrong, tasks=("nli_cot", "nli_direct"))}


def cli(*args):
    from cotharness.cli import app

    return CliRunner().invoke(app, ["compare", *map(str, args)])


def one_error(result, *parts):
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    for part in parts:
        assert part in result.output, (part, result.output)


def test_different_document_sets_are_refused(runs, tmp_path):
    result = cli(runs["eight"], runs["four"], "--names", "eight,four", "--out", tmp_path / "r")
    one_error(result, "different documents", "eight 8", "four 4", "--intersect")
    assert not (tmp_path / "r" / "summary.json").exists()


def test_intersect_compares_the_shared_documents_and_says_what_was_lost(runs, tmp_path):
    from cotharness.compare import compare

    out = tmp_path / "r"
    report = compare([runs["eight"], runs["four"]], out, names=["eight", "four"], intersect=True)
    rows = summary(out)
    assert rows[("eight", "nli_cot", "acc")]["n"] == 4 and rows[("four", "nli_cot", "acc")]["value"] == 0.0
    (note,) = [n for n in report["notes"] if "lost" in n]
    assert "4 documents" in note and "eight lost 4 of its 8" in note and "four lost 0 of its 4" in note
    assert note in (out / "summary.md").read_text() and note in strict_json(out / "manifest.json")["notes"]
    assert strict_json(out / "manifest.json")["tasks"]["nli_cot"]["documents_lost"]["eight"] == {"documents": 8,
                                                                                                 "lost": 4}
    result = cli(runs["eight"], runs["four"], "--names", "eight,four", "--intersect", "--out", tmp_path / "c")
    assert result.exit_code == 0 and f"note: {note}" in result.output


def test_same_positions_other_documents_are_refused(runs, tmp_path):
    from cotharness.compare import compare

    with pytest.raises(ValueError, match=r"different documents: they differ on document 0 \(id 'd0'\) \(doc_hash\)"):
        compare([runs["eight"], runs["other"]], tmp_path / "r", names=["a", "b"])


def test_without_doc_hash_the_logged_documents_are_compared(runs, tmp_path):
    """Samples without doc_hash (another tool, an older lm-eval): never None == None."""
    from cotharness.compare import compare

    stripped = []
    for name in ("eight", "other"):
        copy = shutil.copytree(runs[name], tmp_path / name)
        for path in copy.rglob("samples_*.jsonl"):
            samples = [json.loads(line) for line in path.read_text().splitlines()]
            write_jsonl(path, [{k: v for k, v in s.items() if k != "doc_hash"} for s in samples])
        stripped.append(copy)
    with pytest.raises(ValueError, match=r"differ on document 0 \(id 'd0'\) \(the logged documents\)"):
        compare(stripped, tmp_path / "r", names=["a", "b"])
    same = shutil.copytree(stripped[0], tmp_path / "eight_again")
    compare([stripped[0], same], tmp_path / "ok", names=["a", "b"])  # the same documents pair


def test_runs_with_one_name_are_refused(runs, tmp_path):
    x, y = tmp_path / "x" / "out", tmp_path / "y" / "out"
    shutil.copytree(runs["eight"], x)
    shutil.copytree(runs["eight"], y)
    one_error(cli(x, y, "--out", tmp_path / "r"), "named 'out'", str(x), str(y), "--names")
    assert cli(x, y, "--names", "a,b", "--out", tmp_path / "r").exit_code == 0
    one_error(cli(x, y, "--names", "a,a", "--out", tmp_path / "r"), "named 'a'")


def test_several_results_files_in_a_folder(runs, tmp_path):
    from cotharness.compare import compare

    folder = shutil.copytree(runs["eight"], tmp_path / "twice")
    nli_run(folder, runs["dir"] / "eight.jsonl", {i: 1 for i in range(8)})  # lm-eval adds a second results file
    found = sorted(folder.rglob("results_*.json"))
    assert len(found) == 2
    one_error(cli(folder, runs["four"], "--out", tmp_path / "r"), "2 lm-eval results files", str(found[0]),
              str(found[1]), "give the one to compare")
    # the file itself as the run: that run, not the newest
    report = compare([found[0], runs["eight"]], tmp_path / "r", names=["first", "again"])
    assert {r["value"] for r in report["rows"] if r["metric"] == "acc"} == {1.0}
    files = strict_json(tmp_path / "r" / "manifest.json")["runs"][0]["files"]
    assert files[0] == {"path": str(found[0]), "sha256": sha256_file(found[0])}
    (samples,) = [f for f in files if "samples_nli_cot_" in f["path"]]
    assert samples["path"].endswith(found[0].name.replace("results_", "samples_nli_cot_").replace(".json", ".jsonl"))
    assert samples["sha256"] == sha256_file(samples["path"])


def test_a_task_missing_from_a_run_is_noted(runs, tmp_path):
    out = tmp_path / "r"
    result = cli(runs["direct"], runs["eight"], "--names", "both,cot", "--out", out)
    assert result.exit_code == 0, result.output
    note = "nli_direct: left out, not in cot (only in both)"
    assert f"note: {note}" in result.output
    assert note in (out / "summary.md").read_text() and note in strict_json(out / "manifest.json")["notes"]
    assert {t for _, t, _ in summary(out)} == {"nli_cot"}


def test_teacher_file_lacking_documents_is_refused_unless_intersect(runs, tmp_path):
    teacher = write_jsonl(tmp_path / "teacher.jsonl", [
        {"id": f"t{i}", "premise": f"Premise {i}.", "hypothesis": f"h{i}", "true_label": GOLD[i],
         "thought_process": "Because.", "predicted_label": GOLD[i]} for i in range(5)])
    one_error(cli(runs["eight"], teacher, "--out", tmp_path / "r"), "different documents", "eight 8", "teacher 5",
              "--intersect")
    result = cli(runs["eight"], teacher, "--intersect", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "note: nli_cot: compared on the 5 documents all runs share; eight lost 3 of its 8" in result.output
    files = strict_json(tmp_path / "r" / "manifest.json")["runs"][1]["files"]
    assert files == [{"path": str(teacher), "sha256": sha256_file(teacher)}]


def test_all_unscored_task_writes_valid_json(tmp_path, monkeypatch):
    """instruct_judged where the judge never gives a score: no mean score, null rather than NaN."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from cotharness.compare import compare
    from harness_tasks.tasks import TASKS_DIR

    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-compare-0123456789")
    monkeypatch.chdir(tmp_path)  # no stray .env
    data = write_jsonl(tmp_path / "instructions.jsonl", [{"id": f"i{i}", "instruction": f"Say {i}."} for i in range(4)])
    dirs = []
    with LoopbackServer(lambda body: "I cannot rate this response.") as judge:
        for name in ("base", "tuned"):
            tracker = EvaluationTracker(output_path=str(tmp_path / name))
            manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={
                "test_file": str(data), "judge_model": "judge", "judge_url": judge.url,
                "judge_cache": str(tmp_path / f"{name}.sqlite")})
            results = simple_evaluate(model=ScriptedLM(generate=lambda p: "An answer."), tasks=["instruct_judged"],
                                      task_manager=manager, log_samples=True, bootstrap_iters=0,
                                      evaluation_tracker=tracker)
            samples = results.pop("samples")
            tracker.save_results_aggregated(results=results, samples=samples)
            tracker.save_results_samples(task_name="instruct_judged", samples=samples["instruct_judged"])
            dirs.append(tmp_path / name)
    assert json.loads(results_file(dirs[0]).read_text())["results"]["instruct_judged"]["unscored,judge"] == 1.0
    out = tmp_path / "r"
    compare(dirs, out, names=["base", "tuned"])
    rows = summary(out)  # strict: NaN would fail here
    score = rows[("tuned", "instruct_judged", "judge_score")]
    assert score["value"] is None and score["ci_low"] is None and score["delta_vs_base"] is None
    assert rows[("tuned", "instruct_judged", "unscored")]["value"] == 1.0
    strict_json(out / "manifest.json")
    assert "nan" not in (out / "summary.csv").read_text().lower()
