"""The puzzte tasks: data loading, exact metrics, lm-eval on the tiny model, training rows, the teacher
stage, prepare and the three-row comparison (teacher, base, fine-tuned)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from cotharness.cli import app
from datagen.synthetic.puzzles import generate
from harness_tasks.data_files import DataFileError
from harness_tasks.puzzte import utils
from harness_tasks.tasks import get_task, schema_for

from conftest import REPO, write_jsonl
from loopback_server import LoopbackServer
from scripted_lm import ScriptedLM, evaluate, evaluate_to_dir

TWO_WAY = {"entailment": 1, "contradiction": 0, "ambiguous": 0}
THREE_WAY = {"entailment": 1, "contradiction": 0, "ambiguous": 2}


def answer(label) -> str:
    return json.dumps({"thought_process": "Step 1: I checked the cases.", "predicted_label": label})


def statement_of(prompt: str) -> str:
    return re.search(r"^Statement: (.*)$", prompt, re.MULTILINE).group(1)


def puzzle_of(prompt: str) -> str:
    return re.search(r"^Puzzle: (.*)$", prompt, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def puzzles(tmp_path_factory) -> Path:
    """Generated rows as `cotharness datagen puzzles` writes them (3-way label names, thoughts, family)."""
    return write_jsonl(tmp_path_factory.mktemp("puzzles") / "dev.jsonl", generate("dev", 18, seed=1))


# --- data -----------------------------------------------------------------------------------------

def test_tasks_and_schemas_are_found():
    assert get_task("puzzte").schema.labels == {1: "entailment", 0: "not entailment"}
    assert schema_for("puzzte_3way").labels == {1: "entailment", 0: "contradiction", 2: "ambiguous"}
    assert schema_for("puzzte").positive == 1 and schema_for("puzzte_3way").positive is None


def test_bundled_sample_in_both_label_sets():
    rows = [json.loads(line) for line in utils.SAMPLE_FILE.read_text().splitlines()]
    two, three = utils.load()["test"], utils.load_3way()["test"]
    assert two["label"] == [TWO_WAY[r["label"]] for r in rows]
    assert three["label"] == [THREE_WAY[r["label"]] for r in rows]
    assert set(two["family"]) == {"comparison", "knights_knaves", "zebra"} and two["id"][0] == "test-0"


def test_local_files_with_label_names_and_ids(tmp_path):
    jsonl = write_jsonl(tmp_path / "mixed.jsonl", [
        {"premise": "P1", "hypothesis": "H1", "label": "entailment", "family": "zebra"},
        {"premise": "P2", "hypothesis": "H2", "label": "Contradiction"},
        {"premise": "P3", "hypothesis": "H3", "label": "ambiguity"},  # the source dataset's spelling
        {"premise": "P4", "hypothesis": "H4", "label": 2},
        {"premise": "P5", "hypothesis": "H5", "label": "0"},
        {"premise": "P6", "hypothesis": "H6"},  # no gold in a labelled file: refused unless skipped
    ])
    with pytest.raises(DataFileError, match=r"mixed.jsonl: 1 of 6 rows have an empty 'label' \(first on line 6\)"):
        utils.load_3way(test_file=str(jsonl))
    three = utils.load_3way(test_file=str(jsonl), empty_labels="skip")["test"]
    assert three["label"] == [1, 0, 2, 2, 0]
    assert three["family"] == ["zebra", None, None, None, None] and three["id"] == [str(i) for i in range(5)]
    with pytest.raises(DataFileError, match=r"mixed.jsonl:4: label=2 is not one of \[1, 0\] "
                                            r"\(1 = entailment, 0 = not entailment"):
        utils.load(test_file=str(jsonl), empty_labels="skip")  # 2 is a 3-way id only
    csv = tmp_path / "seed.csv"  # the original release's column names
    csv.write_text("puzzle_text,question,answer,puzzle_type\n\"A, B and C ran.\",A won.,not entailed,comparison\n"
                   "X.,Y.,1,zebra\nX.,Z.,ambiguous,zebra\n", encoding="utf-8")
    two = utils.load(test_file=str(csv))["test"]
    assert two["premise"][0] == "A, B and C ran." and two["label"] == [0, 1, 0]
    assert two["family"] == ["comparison", "zebra", "zebra"]


@pytest.mark.parametrize("content,suffix,message", [
    ('{"premise": "A", "hypothesis": "B", "label": "entailment"}\n{"premise": "A", "hypothesis": "B", '
     '"label": "maybe"}\n', ".jsonl", ":2: label='maybe' is not one of [1, 0, 2]"),
    ('{"premise": "A", "hypothesis": "B", "label": "not entailment"}\n', ".jsonl",
     ":1: label='not entailment' is not one of [1, 0, 2] (1 = entailment, 0 = contradiction, "
     "2 = ambiguous; ids or names, any case)"),
    ('{"context": "A", "label": 1}\n', ".jsonl",
     ":1: missing column(s) 'hypothesis' (or question, sentence2, statement); found ['context', 'label']"),
    ("premise,hypothesis,label\nA,,1\n", ".csv", ":2: column 'hypothesis' is empty"),
])
def test_bad_files_name_file_line_and_value(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError) as err:
        utils.load_3way(test_file=str(path))
    assert str(err.value).startswith(str(path)) and message in str(err.value)


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    """datasets' cache in tmp, so loading local directories leaves nothing behind."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def test_dataset_directory_through_datasets(tmp_path, local_cache):
    """`dataset` goes through datasets.load_dataset, which reads a hub id or a local directory alike."""
    jsonl_dir = tmp_path / "jsonl_ds"
    jsonl_dir.mkdir()
    write_jsonl(jsonl_dir / "validation.jsonl", [{"premise": "P", "hypothesis": "H", "label": "contradiction"}])
    write_jsonl(jsonl_dir / "train.jsonl", [{"premise": "Q", "hypothesis": "H", "label": "entailment"}])
    assert utils.load(dataset=str(jsonl_dir), split="validation")["test"]["label"] == [0]
    # tasksource-style parquet with ClassLabel columns: ids are read through the names, whose order
    # differs from our ids on purpose
    features = datasets.Features({"puzzle_text": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.ClassLabel(names=["ambiguity", "contradiction", "entailment"]),
                                  "puzzle_type": datasets.ClassLabel(names=["comparison", "knights_knaves", "zebra"])})
    data = {"puzzle_text": ["P0", "P1", "P2", "P3"], "question": ["H0", "H1", "H2", "H3"], "answer": [0, 1, 2, -1],
            "puzzle_type": [2, 1, 0, 0]}
    parquet_dir = tmp_path / "parquet_ds"
    parquet_dir.mkdir()
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(parquet_dir / "test.parquet"))
    with pytest.raises(DataFileError, match=r"\(split 'test'\): 1 of 4 rows have an empty 'answer' \(first on row 4\)"):
        utils.load_3way(dataset=str(parquet_dir))  # -1: datasets' "no label", among labelled rows
    three = utils.load_3way(dataset=str(parquet_dir), empty_labels="skip")["test"]
    assert three["label"] == [2, 0, 1] and three["id"] == ["0", "1", "2"]
    assert three["family"] == ["zebra", "knights_knaves", "comparison"]
    assert utils.load(dataset=str(parquet_dir), empty_labels="skip")["test"]["label"] == [0, 0, 1]
    saved = tmp_path / "saved"  # save_to_disk output: load_from_disk
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(saved))
    assert utils.load_3way(dataset=str(saved), empty_labels="skip")["test"]["premise"] == ["P0", "P1", "P2"]
    hidden = tmp_path / "hidden"  # a test split with every label -1 (datasets' "no label"): predictions only
    datasets.Dataset.from_dict({**data, "answer": [-1] * 4}, features=features).save_to_disk(str(hidden))
    assert utils.load_3way(dataset=str(hidden))["test"]["label"] == [None] * 4
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(data, features=features)}).save_to_disk(
        str(tmp_path / "saved_dict"))
    assert utils.load_3way(dataset=str(tmp_path / "saved_dict"), split="validation",
                           empty_labels="skip")["test"]["label"] == [2, 0, 1]


def test_dataset_errors_name_dataset_split_and_row(tmp_path, local_cache):
    bad = tmp_path / "bad_ds"
    bad.mkdir()
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "maybe"])})
    datasets.Dataset.from_dict({"premise": ["A", "B"], "hypothesis": ["C", "D"], "label": [0, 1]},
                               features=features).to_parquet(str(bad / "test.parquet"))
    with pytest.raises(DataFileError, match=rf"dataset '{re.escape(str(bad))}' \(split 'test'\) row 2: "
                                            r"label='maybe' is not one of \[1, 0\]"):
        utils.load(dataset=str(bad))
    with pytest.raises(DataFileError, match=r"\(split 'validation'\): cannot be loaded: .*Unknown split"):
        utils.load(dataset=str(bad), split="validation")
    with pytest.raises(DataFileError, match=r"dataset 'tasksource/puzzte' \(split 'test'\): cannot be loaded"):
        utils.load(dataset="tasksource/puzzte")  # HF_HUB_OFFLINE=1 (conftest) and nothing cached
    with pytest.raises(DataFileError, match="give test_file or dataset, not both"):
        utils.load(test_file="x.jsonl", dataset=str(bad))


# --- metrics: scripted outputs, exact numbers ------------------------------------------------------

GOLD = ["entailment", "entailment", "contradiction", "ambiguous", "ambiguous", "contradiction"]


@pytest.fixture(scope="module")
def six_docs(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("six") / "six.jsonl",
                       [{"premise": f"Puzzle {i}.", "hypothesis": f"Claim {i}.", "label": g} for i, g in enumerate(GOLD)])


def scripted(outputs: dict[int, str]) -> ScriptedLM:
    return ScriptedLM(generate=lambda prompt: outputs[int(re.search(r"Claim (\d+)", statement_of(prompt)).group(1))])


def test_two_way_metrics_exact(six_docs):
    # gold (2-way): 1 1 0 0 0 0
    lm = scripted({0: answer(1), 1: "It follows, I am sure.", 2: answer("contradiction"), 3: answer(1),
                   4: answer(0), 5: answer("maybe")})  # 1 and 5: no valid label, so wrong
    m = evaluate(lm, ["puzzte"], six_docs)["results"]["puzzte"]
    assert m["acc,cot_json"] == pytest.approx(3 / 6)  # docs 0, 2, 4
    assert m["acc_entailment,cot_json"] == pytest.approx(1 / 2)
    assert m["acc_not_entailment,cot_json"] == pytest.approx(2 / 4)
    assert m["parse_fail,cot_json"] == pytest.approx(2 / 6)
    # entailment: predicted on 0 and 3, right on 0; gold on 0 and 1
    assert (m["precision,cot_json"], m["recall,cot_json"], m["f1,cot_json"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    # F1 per class: entailment 2*1/(2+2); not entailment 2*2/(2 predicted + 4 gold)
    assert m["f1_macro,cot_json"] == pytest.approx((1 / 2 + 4 / 6) / 2)


def test_three_way_metrics_exact(six_docs):
    # gold (3-way): 1 1 0 2 2 0
    lm = scripted({0: answer("entailment"), 1: '{"thought_process": "cut off', 2: answer(0), 3: answer(2),
                   4: answer(0), 5: answer("ambiguous")})
    m = evaluate(lm, ["puzzte_3way"], six_docs)["results"]["puzzte_3way"]
    assert m["acc,cot_json"] == pytest.approx(3 / 6)  # docs 0, 2, 3
    assert m["acc_entailment,cot_json"] == pytest.approx(1 / 2)
    assert m["acc_contradiction,cot_json"] == pytest.approx(1 / 2)
    assert m["acc_ambiguous,cot_json"] == pytest.approx(1 / 2)
    assert m["parse_fail,cot_json"] == pytest.approx(1 / 6)
    # F1: entailment 2*1/(1+2), contradiction 2*1/(2+2), ambiguous 2*1/(2+2)
    assert m["f1_macro,cot_json"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert "precision,cot_json" not in m  # no positive class in the 3-way task


# --- lm-eval on the tiny model ---------------------------------------------------------------------

def test_lm_eval_runs_both_tasks_on_the_tiny_model(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [Path(sys.executable).parent / "lm_eval", "--include_path", "harness_tasks", "--tasks", "puzzte,puzzte_3way",
         "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32", "--device", "cpu",
         "--batch_size", "4", "--limit", "4", "--gen_kwargs", "max_gen_toks=12", "--output_path", str(out),
         "--log_samples"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (path,) = out.rglob("results_*.json")
    results = json.loads(path.read_text())["results"]

    def names(task):
        return {k.split(",")[0] for k in results[task] if k.endswith(",cot_json") and "_stderr" not in k}

    assert names("puzzte") == {"acc", "f1_macro", "precision", "recall", "f1", "acc_entailment",
                               "acc_not_entailment", "parse_fail"}
    assert names("puzzte_3way") == {"acc", "f1_macro", "acc_entailment", "acc_contradiction", "acc_ambiguous",
                                    "parse_fail"}
    # the untrained model writes no answer: every document is a parse failure and wrong
    assert results["puzzte"]["parse_fail,cot_json"] == 1.0 and results["puzzte"]["acc,cot_json"] == 0.0
    (samples,) = out.rglob("samples_puzzte_3way_*.jsonl")
    docs = [json.loads(line)["doc"] for line in samples.read_text().splitlines()]
    assert [d["label"] for d in docs] == [1, 1, 1, 0]  # the sample's first rows: families turn, labels by threes
    assert {d["family"] for d in docs} == {"comparison", "knights_knaves", "zebra"}


# --- training rows: the prompt lm-eval sends ------------------------------------------------------

@pytest.mark.parametrize("task,labels", [("puzzte", TWO_WAY), ("puzzte_3way", THREE_WAY)])
def test_sft_rows_are_the_eval_prompts(puzzles, task, labels):
    from trainer.data import sft_rows

    rows = [json.loads(line) for line in puzzles.read_text().splitlines()]
    sft = sft_rows(puzzles, get_task(task), "</s>")
    lm = ScriptedLM(generate=lambda prompt: answer(1))
    evaluate(lm, [task], puzzles)
    assert sorted(lm.prompts) == sorted(r["prompt"] for r in sft)  # byte-identical, as lm-eval sends them
    docs = (utils.load if task == "puzzte" else utils.load_3way)(test_file=str(puzzles))["test"]
    doc_to_text = utils.doc_to_text if task == "puzzte" else utils.doc_to_text_3way
    assert [r["prompt"] for r in sft] == [doc_to_text(d) for d in docs]
    for row, sft_row in zip(rows, sft, strict=True):
        target = json.loads(sft_row["completion"].removesuffix("</s>"))
        assert target == {"thought_process": row["thought_process"], "predicted_label": labels[row["label"]]}


# --- teacher thoughts, prepare, and the three-row comparison ----------------------------------------

def teacher_label(statement: str) -> int:
    """The scripted teacher's rule: "entailment" for statements about knights, else not."""
    return int("knight" in statement)


def teacher(body: dict) -> str:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return answer(teacher_label(statement_of(user)))


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_teacher_prepare_and_compare_three_rows(puzzles, tiny_model, tmp_path, monkeypatch):
    from cotharness.compare import compare

    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-puzzte-0123456789")
    monkeypatch.chdir(tmp_path)
    rows = [json.loads(line) for line in puzzles.read_text().splitlines()]
    gold = [TWO_WAY[r["label"]] for r in rows]
    with LoopbackServer(teacher) as server:  # generated rows go in as they are: 3-way label names
        invoke("datagen", "thoughts", "--task", "puzzte", "--input", puzzles, "--out", "t.jsonl",
               "--server-url", server.url)
    thoughts = [json.loads(line) for line in Path("t.jsonl").read_text().splitlines()]
    assert [t["true_label"] for t in thoughts] == gold
    right = [teacher_label(r["hypothesis"]) == g for r, g in zip(rows, gold, strict=True)]
    assert [t["correct"] for t in thoughts] == right and 0 < sum(right) < len(rows)

    invoke("datagen", "prepare", "--task", "puzzte", "--thoughts", "t.jsonl", "--out", "sft", "--ablation", "correct",
           "--tokenizer", tiny_model, "--train-config", REPO / "configs/train/puzzte.yaml")
    stats = json.loads(Path("sft/stats.json").read_text())
    assert stats["teacher"]["accuracy"] == pytest.approx(sum(right) / len(rows))
    assert stats["ablations"]["correct"]["rows"] == sum(right)

    # base: always "not entailment", every third answer unreadable; tuned: right but for one document
    keys = [(r["premise"], r["hypothesis"]) for r in rows]  # unique within a split
    base = {k: "no idea" if i % 3 == 0 else answer(0) for i, k in enumerate(keys)}
    tuned = {k: answer(g if i != 1 else 1 - g) for i, (k, g) in enumerate(zip(keys, gold, strict=True))}
    runs = [evaluate_to_dir(ScriptedLM(generate=lambda p, o=outputs: o[puzzle_of(p), statement_of(p)]), ["puzzte"],
                            puzzles, tmp_path / name, model_name=name) for name, outputs in (("base", base), ("tuned", tuned))]
    report = compare([Path("t.jsonl"), *runs], tmp_path / "cmp")
    assert list(report["tasks"]["puzzte"]["models"]) == ["open-mistral-7b", "base", "tuned"]
    value = {(r["model"], r["metric"]): r["value"] for r in report["rows"]}

    def acc(correct, cls=None):
        picked = [c for c, g in zip(correct, gold, strict=True) if cls is None or g == cls]
        return sum(picked) / len(picked)

    base_right = [i % 3 != 0 and g == 0 for i, g in enumerate(gold)]
    tuned_right = [i != 1 for i in range(len(gold))]
    for model, correct in (("open-mistral-7b", right), ("base", base_right), ("tuned", tuned_right)):
        assert value[model, "acc"] == pytest.approx(acc(correct))
        assert value[model, "acc_entailment"] == pytest.approx(acc(correct, 1))
        assert value[model, "acc_not_entailment"] == pytest.approx(acc(correct, 0))
    lines = (tmp_path / "cmp/summary.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    assert "| acc_entailment" in lines[header] and "| acc_not_entailment" in lines[header]
    assert [line.split(" | ")[0] for line in lines[header + 2:header + 5]] == ["| open-mistral-7b", "| base", "| tuned"]
