"""cotharness compare with a teacher's thoughts file beside real lm-eval outputs (scripted models)."""

import json
import random
import re

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from typer.testing import CliRunner

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate_to_dir

N = 20
GOLD = [i % 2 for i in range(N)]
TEACHER = {i: GOLD[i] if i % 5 else 1 - GOLD[i] for i in range(N)}  # wrong on 0, 5, 10, 15
TEACHER[7] = None  # failed row
BASE = {i: GOLD[i] if i < 12 else 1 - GOLD[i] for i in range(N)}  # wrong on 12..19
BASE.update({18: None, 19: None})  # parse failures
TUNED = {i: GOLD[i] for i in range(N)}
TOKENS_OUT = {i: 30 + i for i in range(N)}


def premise(i):
    return f"Sentence {i} is about cats."


def answer(label):
    return json.dumps({"thought_process": "Step 1: ...", "predicted_label": label})


def scripted(labels):
    def generate(prompt):
        label = labels[int(re.search(r"Hypothesis: h(\d+)", prompt).group(1))]
        return "I think so." if label is None else answer(label)

    return ScriptedLM(generate=generate)


def teacher_rows(indices, gold=GOLD):
    """A datagen thoughts file: own ids, shuffled rows, whitespace that differs from the test file."""
    rows = []
    for i in indices:
        failed = TEACHER[i] is None
        rows.append({"id": f"teacher-{1000 + i}", "premise": f"  Sentence {i}  is about\ncats. ", "hypothesis": f"h{i}",
                     "family": "x", "true_label": gold[i],
                     "thought_process": None if failed else f"Because {i}.", "predicted_label": TEACHER[i],
                     "correct": None if failed else TEACHER[i] == gold[i],
                     "meta": {"thoughts": {"status": "failed" if failed else "ok", "error": "429" if failed else None,
                                           "model": "open-mistral-7b", "backend": "mistral", "request_hash": "ab",
                                           "attempts": 3 if failed else 1, "reprompts": 0,
                                           "tokens_in": 100, "tokens_out": TOKENS_OUT[i], "repaired": False}}})
    random.Random(0).shuffle(rows)
    return rows


def write_teacher(path, rows, manifest=True):
    write_jsonl(path, rows)
    if manifest:
        path.with_name(path.stem + ".manifest.json").write_text(json.dumps(
            {"stage": "thoughts", "task": "nli_cot", "backend": "mistral", "model": "open-mistral-7b"}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    data = write_jsonl(d / "test.jsonl", [{"id": f"d{i}", "premise": premise(i), "hypothesis": f"h{i}",
                                           "label": GOLD[i]} for i in range(N)])
    base = evaluate_to_dir(scripted(BASE), ["nli_cot"], data, d / "base")
    tuned = evaluate_to_dir(scripted(TUNED), ["nli_cot"], data, d / "tuned")
    teacher = write_teacher(d / "thoughts.jsonl", teacher_rows(range(N)))
    return base, tuned, teacher


def rows_of(out):
    return {(r["model"], r["metric"]): r for r in json.loads((out / "summary.json").read_text())}


def correct(labels, indices=range(N)):
    return [labels[i] == GOLD[i] for i in indices]


def test_teacher_base_tuned(runs, tmp_path):
    from cotharness.compare import SERVER_COUNTS, compare

    base, tuned, teacher = runs
    out = tmp_path / "report"
    report = compare([teacher, base, tuned], out)  # names: the teacher's model, the directories
    rows = rows_of(out)
    assert list(report["tasks"]["nli_cot"]["models"]) == ["open-mistral-7b", "base", "tuned"]
    t_acc = sum(correct(TEACHER)) / N  # the failed row is wrong
    assert t_acc == 15 / N
    assert rows[("open-mistral-7b", "acc")]["value"] == pytest.approx(t_acc)
    assert rows[("open-mistral-7b", "parse_fail")]["value"] == pytest.approx(1 / N)
    assert rows[("open-mistral-7b", "acc")]["n"] == N and report["notes"] == []
    # deltas and McNemar against the first run, the teacher
    b_acc = sum(correct(BASE)) / N
    assert rows[("base", "acc")]["value"] == pytest.approx(b_acc)
    assert rows[("base", "acc")]["delta_vs_base"] == pytest.approx(b_acc - t_acc)
    pairs = list(zip(correct(TEACHER), correct(BASE), strict=True))
    table = [[sum(t and b for t, b in pairs), sum(t and not b for t, b in pairs)],
             [sum(b and not t for t, b in pairs), sum(not t and not b for t, b in pairs)]]
    assert table[0][1] + table[1][0] < 25  # compare uses the exact test below 25 discordant pairs
    assert rows[("base", "acc")]["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert rows[("tuned", "acc")]["value"] == 1.0
    # confusion matrix: the failed row is an unparsed answer, never a default label
    conf = report["tasks"]["nli_cot"]["models"]["open-mistral-7b"]["confusion"]
    assert conf["labels"] == ["entailment", "no entailment", "unparsed"]
    names = {1: 0, 0: 1, None: 2}  # label -> column
    expected = [[0, 0, 0], [0, 0, 0]]
    for i in range(N):
        expected[names[GOLD[i]]][names[TEACHER[i]]] += 1
    assert conf["matrix"] == expected and expected[names[GOLD[7]]][2] == 1
    # the teacher's generated tokens: its server's counts on answered rows
    detail = report["tasks"]["nli_cot"]["models"]["open-mistral-7b"]
    answered = [TOKENS_OUT[i] for i in range(N) if TEACHER[i] is not None]
    assert detail["mean_generated_tokens"] == pytest.approx(sum(answered) / len(answered))
    assert detail["generated_tokens_counted_by"] == SERVER_COUNTS and detail["wall_seconds"] is None
    md = (out / "summary.md").read_text()
    assert "| open-mistral-7b |" in md and "tokens_out" in md
    meta = json.loads((out / "manifest.json").read_text())
    t = meta["runs"][0]["teacher"]
    from harness_tasks.manifest import sha256_file

    assert (t["path"], t["sha256"], t["model"], t["backend"], t["task"]) == (
        str(teacher), sha256_file(teacher), "open-mistral-7b", "mistral", "nli_cot")
    assert meta["runs"][1]["name"] == "base" and "model_args" in meta["runs"][1]
    assert (out / "confusion_nli_cot.png").stat().st_size > 0


def test_teacher_anywhere_and_names(runs, tmp_path):
    from cotharness.compare import compare

    base, _, teacher = runs
    compare([base, teacher], tmp_path / "r", names=["base", "mistral"])
    rows = rows_of(tmp_path / "r")
    assert rows[("mistral", "acc")]["delta_vs_base"] == pytest.approx((sum(correct(TEACHER)) - sum(correct(BASE))) / N)


def test_gold_disagreement(runs, tmp_path):
    from cotharness.compare import compare

    gold = list(GOLD)
    gold[3] = 1 - gold[3]
    bad = write_teacher(tmp_path / "bad.jsonl", teacher_rows(range(N), gold))
    with pytest.raises(ValueError, match=r"gold labels disagree: document 3 \(id 'd3'\).*teacher-1003"):
        compare([runs[0], bad], tmp_path / "x")


def test_partial_teacher_file(runs, tmp_path):
    """A file lacking documents of the reference run: refused, or compared on the shared ones."""
    from cotharness.compare import compare

    part = list(range(5, 17))
    teacher = write_teacher(tmp_path / "part.jsonl", teacher_rows(part))
    with pytest.raises(ValueError, match=r"different documents \(base 20, teacher 12 \(part.jsonl\); 12 in all"):
        compare([runs[0], teacher], tmp_path / "x", names=["base", "teacher"])
    report = compare([runs[0], teacher], tmp_path / "r", names=["base", "teacher"], intersect=True)
    rows = rows_of(tmp_path / "r")
    assert rows[("base", "acc")]["n"] == rows[("teacher", "acc")]["n"] == len(part)
    assert rows[("base", "acc")]["value"] == pytest.approx(sum(correct(BASE, part)) / len(part))
    assert rows[("teacher", "acc")]["value"] == pytest.approx(sum(correct(TEACHER, part)) / len(part))
    assert report["notes"] == [f"nli_cot: compared on the {len(part)} documents all runs share; base lost "
                               f"{N - len(part)} of its {N}, teacher lost 0 of its {len(part)}"]


def test_seed_format_without_manifest(runs, tmp_path):
    """Seed thoughts: no meta, int ids, no manifest: named after the file, task from --teacher-task."""
    from cotharness.compare import compare

    rows = [{k: v for k, v in r.items() if k != "meta"} | {"id": n} for n, r in enumerate(teacher_rows(range(N)))]
    seed = write_teacher(tmp_path / "seed_thoughts.jsonl", rows, manifest=False)
    report = compare([runs[0], seed], tmp_path / "r")
    assert list(report["tasks"]["nli_cot"]["models"])[1] == "seed_thoughts"
    assert rows_of(tmp_path / "r")[("seed_thoughts", "acc")]["value"] == pytest.approx(sum(correct(TEACHER)) / N)


def test_cli(runs, tmp_path):
    from cotharness.cli import app

    base, tuned, _ = runs
    teacher = write_teacher(tmp_path / "part.jsonl", teacher_rows(range(10)))
    args = ["compare", str(teacher), str(base), str(tuned), "--out", str(tmp_path / "r"), "--names", "mistral,base,tuned"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "error: nli_cot: the runs evaluated different documents" in result.output
    result = CliRunner().invoke(app, [*args, "--intersect"])
    assert result.exit_code == 0, result.output
    assert "mistral" in result.output and "acc" in result.output and "base lost 10 of its 20" in result.output
    assert "| mistral |" in (tmp_path / "r" / "summary.md").read_text()


@pytest.mark.parametrize("case", ["only_teacher", "missing_file", "unknown_task", "not_thoughts"])
def test_cli_errors(runs, tmp_path, case):
    from cotharness.cli import app

    teacher = runs[2]
    args = {"only_teacher": [str(teacher)],
            "missing_file": [str(runs[0]), str(tmp_path / "nope.jsonl")],
            "unknown_task": [str(runs[0]), str(write_teacher(tmp_path / "t.jsonl", teacher_rows(range(N)), False)),
                             "--teacher-task", "nope"],
            "not_thoughts": [str(runs[0]), str(write_jsonl(tmp_path / "test.jsonl", [
                {"premise": premise(0), "hypothesis": "h0", "label": 0}]))]}[case]
    result = CliRunner().invoke(app, ["compare", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert len(result.output.strip().splitlines()) == 1
