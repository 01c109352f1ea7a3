"""`datagen prepare`: which rows each ablation keeps, the shared split, statistics, and clear errors."""

import json

import pytest
import typer
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from typer.testing import CliRunner

from datagen.teacher.prepare import PrepareError, command, prepare
from harness_tasks.data_files import DataFileError
from harness_tasks.errors import UserError
from harness_tasks.tasks import get_task
from trainer.data import check_lengths, sft_rows

from conftest import write_jsonl

TASK = get_task("nli_cot")
NO_LENGTHS = {"tokenizer": None, "train_config": None}  # no tokenizer: fast tests


def thought(i, gold, pred, *, pair=None, score=None, failed=False):
    """A row as `cotharness datagen thoughts` (and `score`) writes it."""
    premise, hypothesis = pair or (f"Premise number {i} about the harbour.", f"Hypothesis {i}.")
    row = {"id": str(i), "premise": premise, "hypothesis": hypothesis, "source_file": "x.csv", "true_label": gold,
           "thought_process": None if failed else f"teacher thought {i}", "predicted_label": None if failed else pred,
           "correct": None if failed or gold is None else pred == gold,
           "meta": {"thoughts": {"status": "failed" if failed else "ok", "error": None, "model": "m",
                                 "backend": "mistral", "request_hash": "h", "attempts": 1, "reprompts": 0,
                                 "tokens_in": 10, "tokens_out": 20, "repaired": False}}}
    if score is not None:
        row.update(judge_score=score, judge_analysis="ok", judge_improved_thought=None, judge_label=pred)
    return row


def reflection(row, status="ok"):
    """A row as `cotharness datagen reflect` writes it: the thoughts row plus the reflection."""
    ok = status == "ok"
    return {**row, "error_analysis": "missed it" if ok else None,
            "improved_thought_process": f"reflected thought {row['id']}" if ok else None,
            "meta": {**row["meta"], "reflect": {"status": status}}}


# 12 rows: 1 failed, 1 duplicate (of 1, other whitespace), 2 conflicting copies, 1 without gold,
# 3 wrong (3 and 4 reflected, 5's reflection failed).
ROWS = [thought(1, 1, 1, score=5), thought(2, 0, 0, score=4), thought(3, 1, 0, score=2), thought(4, 0, 1, score=3),
        thought(5, 1, 0, score=4), thought(6, 1, None, failed=True),
        thought(7, 1, 1, pair=("Premise  number 1 about\tthe harbour.", "Hypothesis 1. "), score=5),
        thought(8, 1, 1, pair=("Same pair.", "Same."), score=5), thought(9, 0, 1, pair=("Same pair.", "Same."), score=5),
        thought(10, None, 1, score=5), thought(11, 0, 0, score=2), thought(12, 1, 1, score=5)]
REFLECTIONS = [reflection(ROWS[2]), reflection(ROWS[3]), reflection(ROWS[4], status="failed")]


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "thoughts.jsonl", ROWS), write_jsonl(tmp_path / "reflections.jsonl", REFLECTIONS)


def read(out, ablation_dir):
    return {split: [json.loads(line) for line in (out / ablation_dir / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "dev")}


def kept(out, ablation_dir):
    """{id: (thought, label, source)} over train and dev."""
    splits = read(out, ablation_dir)
    return {r["id"]: (r["thought_process"], r["label"], r["source"]) for r in splits["train"] + splits["dev"]}


def test_each_ablation_keeps_the_right_rows(files, tmp_path):
    thoughts, reflections = files
    stats = prepare(thoughts, tmp_path / "out", reflections=reflections, **NO_LENGTHS)
    out = tmp_path / "out"
    t = {i: f"teacher thought {i}" for i in range(13)}
    assert kept(out, "correct_only") == {"1": (t[1], 1, "teacher"), "2": (t[2], 0, "teacher"),
                                         "11": (t[11], 0, "teacher"), "12": (t[12], 1, "teacher")}
    assert kept(out, "correct_reflected") == {**kept(out, "correct_only"),
                                              "3": ("reflected thought 3", 1, "reflected"),
                                              "4": ("reflected thought 4", 0, "reflected")}
    # the teacher's own thought and label, wrong ones included; the row without gold too
    assert kept(out, "all") == {**kept(out, "correct_only"), "3": (t[3], 0, "teacher"), "4": (t[4], 1, "teacher"),
                                "5": (t[5], 0, "teacher"), "10": (t[10], 1, "teacher")}
    assert stats["rows"] == {"input": 12, "failed": 1, "duplicates": 1, "conflicts": 2, "answered_unique": 8,
                             "without_gold": 1}
    ab = stats["ablations"]
    assert (ab["correct"]["rows"], ab["reflected"]["rows"], ab["all"]["rows"]) == (4, 6, 8)
    assert ab["correct"]["left_out"] == {"no_gold": 1, "wrong": 3}
    assert ab["reflected"]["left_out"] == {"no_gold": 1, "wrong_reflection_failed": 1}
    assert ab["reflected"]["sources"] == {"reflected": 2, "teacher": 4}
    assert stats["gold_labels"] == {"1": 4, "0": 3}
    json.loads((out / "stats.json").read_text())  # written, valid JSON
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"thoughts", "reflections"} and manifest["options"]["seed"] == 0
    assert "correct_only/train.jsonl" in manifest["outputs"]


def test_min_score_drops_low_teacher_rows_but_keeps_reflections(files, tmp_path):
    thoughts, reflections = files
    stats = prepare(thoughts, tmp_path / "out", reflections=reflections, min_score=3, **NO_LENGTHS)
    out = tmp_path / "out"
    assert set(kept(out, "correct_only")) == {"1", "2", "12"}  # 11 scored 2
    assert set(kept(out, "correct_reflected")) == {"1", "2", "12", "3", "4"}  # 3 scored 2 but was rewritten
    assert set(kept(out, "all")) == {"1", "2", "4", "5", "10", "12"}
    assert stats["ablations"]["all"]["left_out"] == {"below_min_score": 2}


def test_only_the_asked_ablations_are_written_but_all_are_counted(files, tmp_path):
    stats = prepare(files[0], tmp_path / "out", ablations=["correct"], **NO_LENGTHS)
    assert (tmp_path / "out/correct_only/train.jsonl").is_file()
    assert not (tmp_path / "out/all").exists() and not (tmp_path / "out/correct_reflected").exists()
    assert stats["ablations"]["all"]["rows"] == 8 and not stats["ablations"]["all"]["written"]
    assert stats["ablations"]["reflected"]["left_out"]["wrong_no_reflection"] == 3


def test_reflections_inside_the_thought_rows(tmp_path):
    rows = [reflection(r) if r["id"] in ("3", "4") else r for r in ROWS]
    prepare(write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out", ablations=["reflected"], **NO_LENGTHS)
    assert kept(tmp_path / "out", "correct_reflected")["4"] == ("reflected thought 4", 0, "reflected")


def many_rows(n=60):
    return [thought(i, i % 2, i % 2 if i % 3 else 1 - i % 2) for i in range(n)]


def test_split_by_pair_shared_by_the_ablations_and_fixed_by_the_seed(tmp_path):
    rows = many_rows()
    reflections = [reflection(r) for r in rows if r["predicted_label"] != r["true_label"]]
    thoughts = write_jsonl(tmp_path / "t.jsonl", rows)
    refl = write_jsonl(tmp_path / "r.jsonl", reflections)
    runs = {seed_dir: prepare(thoughts, tmp_path / seed_dir, reflections=refl, seed=seed, dev_fraction=0.2,
                              **NO_LENGTHS) for seed_dir, seed in [("a", 0), ("b", 0), ("c", 1)]}
    assert runs["a"]["split"] == {"seed": 0, "dev_fraction": 0.2, "pairs": 60, "dev_pairs": 12}
    dev_of = {}
    for name in ("correct_only", "correct_reflected", "all"):
        splits = read(tmp_path / "a", name)
        pairs = {split: {(r["premise"], r["hypothesis"]) for r in rows} for split, rows in splits.items()}
        assert not pairs["train"] & pairs["dev"]
        dev_of[name] = pairs["dev"]
        for split in ("train", "dev"):  # same seed: the same bytes
            assert (tmp_path / "a" / name / f"{split}.jsonl").read_bytes() == \
                   (tmp_path / "b" / name / f"{split}.jsonl").read_bytes()
    # the dev pairs of each ablation are the shared dev pairs it holds
    assert dev_of["all"] == dev_of["correct_reflected"] and len(dev_of["all"]) == 12
    assert dev_of["correct_only"] < dev_of["all"]
    other = {(r["premise"], r["hypothesis"]) for r in read(tmp_path / "c", "all")["dev"]}
    assert other != dev_of["all"]


def test_teacher_metrics_against_an_independent_computation(files, tmp_path):
    stats = prepare(files[0], tmp_path / "out", **NO_LENGTHS, ablations=["correct", "all"])
    # the unique answered rows with gold: not 6 (failed), 7 (duplicate), 8/9 (conflict), 10 (no gold)
    pairs = [(r["true_label"], r["predicted_label"]) for r in ROWS if r["id"] in {"1", "2", "3", "4", "5", "11", "12"}]
    gold, pred = zip(*pairs, strict=True)
    teacher = stats["teacher"]
    assert teacher["rows"] == 7
    assert teacher["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert teacher["precision"] == pytest.approx(precision_score(gold, pred, pos_label=1))
    assert teacher["recall"] == pytest.approx(recall_score(gold, pred, pos_label=1))
    assert teacher["f1"] == pytest.approx(f1_score(gold, pred, pos_label=1))
    tn, fp, fn, tp = confusion_matrix(gold, pred, labels=[0, 1]).ravel()
    assert (teacher["tp"], teacher["fp"], teacher["fn"], teacher["tn"]) == (tp, fp, fn, tn)


def test_lengths_match_the_trainers_count(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rows = many_rows(30)
    for r in rows[::4]:
        r["thought_process"] += " and a much longer stretch of reasoning" * 8
    tok = AutoTokenizer.from_pretrained(tiny_model)
    direct = sorted(len(tok(TASK.prompt(r) + TASK.answer(r["thought_process"], r["predicted_label"])
                            + tok.eos_token).input_ids) for r in rows)
    max_length = direct[len(direct) // 2]
    out = tmp_path / "out"
    stats = prepare(write_jsonl(tmp_path / "t.jsonl", rows), out, ablations=["correct", "all"],
                    tokenizer=str(tiny_model), max_length=max_length, train_config=None)
    summary = stats["lengths"]["ablations"]["all"]
    assert summary["over_max_length"] == sum(n > max_length for n in direct) > 0
    assert (summary["tokens_min"], summary["tokens_max"], summary["rows"]) == (direct[0], direct[-1], 30)
    # the trainer's own check over the written files counts the same rows over max_length
    for name, ablation in (("correct_only", "correct"), ("all", "all")):
        over = sum(len(check_lengths(sft_rows(out / name / f"{s}.jsonl", TASK, tok.eos_token), tok, max_length,
                                     s).over) for s in ("train", "dev"))
        assert stats["lengths"]["ablations"][ablation]["over_max_length"] == over
    assert (out / "lengths.png").stat().st_size > 0


def test_every_written_file_loads_in_the_trainer(tmp_path):
    rows = many_rows()
    reflections = write_jsonl(tmp_path / "r.jsonl", [reflection(r) for r in rows if r["id"] != "3"])
    stats = prepare(write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out", reflections=reflections, **NO_LENGTHS)
    paths = sorted((tmp_path / "out").glob("*/*.jsonl"))
    assert len(paths) == 6
    for path in paths:
        assert len(sft_rows(path, TASK, "</s>")) == stats["ablations"][{"correct_only": "correct", "all": "all",
                                                                          "correct_reflected": "reflected"}
                                                                         [path.parent.name]][path.stem]


def test_an_empty_split_is_written_and_flagged(tmp_path, capsys):
    # two pairs, one in each split, and only one of them correct: one correct_only file is empty
    thoughts = write_jsonl(tmp_path / "t.jsonl", [thought(1, 1, 1), thought(2, 1, 0)])
    prepare(thoughts, tmp_path / "out", ablations=["correct"], dev_fraction=0.5, **NO_LENGTHS)
    empty = [p for p in sorted((tmp_path / "out/correct_only").glob("*.jsonl")) if not p.read_text()]
    assert len(empty) == 1 and f"{empty[0]} is empty" in capsys.readouterr().err


def test_an_unloadable_tokenizer_skips_the_lengths_in_one_line(files, tmp_path, capsys):
    stats = prepare(files[0], tmp_path / "out", ablations=["all"], tokenizer=str(tmp_path / "no-such-tokenizer"))
    assert stats["lengths"] is None and "no-such-tokenizer" in stats["lengths_skipped"]
    err = capsys.readouterr().err
    assert "--tokenizer DIR" in err and "Traceback" not in err
    assert not (tmp_path / "out/lengths.png").exists()


def test_the_seed_projects_files(tmp_path):
    """sample_thoughts.jsonl / sample_reflections.jsonl: int ids, no meta; reflections carry the new label."""
    def seed(i, gold, pred):
        return {"id": i, "premise": f"Seed premise {i}.", "hypothesis": f"Seed hypothesis {i}.",
                "thought_process": f"seed thought {i}", "predicted_label": pred, "true_label": gold,
                "correct": pred == gold, "chat_history": [{"role": "user", "content": "..."}], "reprompt_counts": 0}

    rows = [seed(0, 1, 1), seed(1, 0, 0), seed(2, 1, 0), seed(3, 1, 0), seed(4, 0, 1)]
    refl = [{"id": r["id"], "premise": r["premise"], "hypothesis": r["hypothesis"], "predicted_label": label,
             "true_label": r["true_label"], "thought_process": r["thought_process"], "error_analysis": "e",
             "improved_thought_process": f"improved {r['id']}"} for r, label in ((rows[2], 1), (rows[3], 0), (rows[4], 0))]
    thoughts = write_jsonl(tmp_path / "sample_thoughts.jsonl", rows)
    reflections = tmp_path / "sample_reflections.jsonl"
    reflections.write_text("\n".join(json.dumps(r) for r in refl) + "\n\n")  # the seed file ends in a blank line
    stats = prepare(thoughts, tmp_path / "out", reflections=reflections, **NO_LENGTHS)
    assert kept(tmp_path / "out", "correct_reflected") == {
        "0": ("seed thought 0", 1, "teacher"), "1": ("seed thought 1", 0, "teacher"),
        "2": ("improved 2", 1, "reflected"), "4": ("improved 4", 0, "reflected")}
    # 3's reflection still reached the wrong label: it is left out, not trained with the gold label
    assert stats["ablations"]["reflected"]["left_out"] == {"wrong_reflection_not_gold": 1}
    assert stats["teacher"]["accuracy"] == pytest.approx(2 / 5)


# --- errors: one clear line -------------------------------------------------------------------------

def test_a_missing_thoughts_file(tmp_path):
    with pytest.raises(DataFileError, match="no-such.jsonl: no such file"):
        prepare(tmp_path / "no-such.jsonl", tmp_path / "out", **NO_LENGTHS)


def test_a_missing_column_names_the_line(tmp_path):
    rows = [thought(1, 1, 1), {k: v for k, v in thought(2, 0, 0).items() if k != "hypothesis"}]
    with pytest.raises(DataFileError, match=r"t\.jsonl:2: missing column\(s\) \['hypothesis'\]"):
        prepare(write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out", **NO_LENGTHS)


def test_reflected_without_reflections(files, tmp_path):
    with pytest.raises(PrepareError, match="--ablation reflected needs --reflections"):
        prepare(files[0], tmp_path / "out", **NO_LENGTHS)
    assert not (tmp_path / "out").exists()  # nothing half done


def test_reflections_must_match_the_thoughts(files, tmp_path):
    stray = write_jsonl(tmp_path / "r1.jsonl", [reflection(ROWS[2]), reflection(thought(99, 1, 0))])
    with pytest.raises(DataFileError, match=r"r1\.jsonl:2: id '99' is not in"):
        prepare(files[0], tmp_path / "out", reflections=stray, **NO_LENGTHS)
    other = write_jsonl(tmp_path / "r2.jsonl", [{**reflection(ROWS[2]), "premise": "Something else."}])
    with pytest.raises(DataFileError, match=r"r2\.jsonl:1: premise/hypothesis of id '3' differ from .*thoughts\.jsonl:3"):
        prepare(files[0], tmp_path / "out", reflections=other, **NO_LENGTHS)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_bad_dev_fraction(files, tmp_path, fraction):
    with pytest.raises(PrepareError, match="--dev-fraction"):
        prepare(files[0], tmp_path / "out", reflections=files[1], dev_fraction=fraction, **NO_LENGTHS)


def test_min_score_without_scores(tmp_path):
    rows = [thought(i, 1, 1) for i in range(3)]
    with pytest.raises(PrepareError, match="--min-score: no row .* has a judge_score"):
        prepare(write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out", ablations=["all"], min_score=3,
                **NO_LENGTHS)


def cli():
    app = typer.Typer()
    app.command()(command)
    return app


def test_the_command_ends_a_mistake_in_one_line_with_exit_2(files, tmp_path):
    result = CliRunner().invoke(cli(), ["--thoughts", str(files[0]), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: --ablation reflected needs --reflections FILE (the output of `cotharness datagen reflect`): "
        f"the rows of {files[0]} carry no reflections"]
    result = CliRunner().invoke(cli(), ["--thoughts", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"


def test_the_command_writes_the_asked_ablations(files, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["--thoughts", str(files[0]), "--out", str(out), "--ablation", "correct",
                                        "--ablation", "all", "--dev-fraction", "0.25", "--seed", "3",
                                        "--train-config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["all", "correct_only", "manifest.json", "stats.json"]
    assert "teacher vs gold" in result.stdout and "token lengths skipped" in result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["split"]["seed"] == 3 and stats["lengths"] is None


def test_an_earlier_run_is_refused_unless_forced_and_no_stale_ablation_is_left(files, tmp_path):
    out = tmp_path / "out"
    prepare(files[0], out, reflections=files[1], **NO_LENGTHS)
    assert {p.name for p in out.iterdir()} >= {"all", "correct_only", "correct_reflected"}
    with pytest.raises(UserError, match="holds an earlier run's files .*pass --force"):
        prepare(files[0], out, ablations=["correct"], **NO_LENGTHS)
    prepare(files[0], out, ablations=["correct"], force=True, **NO_LENGTHS)
    # the folders of the ablations not written now went with the run that wrote them
    assert sorted(p.name for p in out.iterdir()) == ["correct_only", "manifest.json", "stats.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["outputs"]) == ["correct_only/dev.jsonl", "correct_only/train.jsonl", "stats.json"]
