"""cotharness compare on real lm-eval output files from scripted models."""

import json
import shutil

import pytest
from scipy.stats import chi2
from typer.testing import CliRunner

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate_to_dir

N = 40


def answer(label):
    return json.dumps({"thought_process": "Step 1: ...", "predicted_label": label})


def point_at(run_dir, model_args):
    """The run's recorded --model_args, as lm-eval writes them for a model loaded by name."""
    (path,) = run_dir.rglob("results_*.json")
    results = json.loads(path.read_text())
    results["config"]["model_args"] = model_args
    path.write_text(json.dumps(results))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("compare")
    data = write_jsonl(d / "test.jsonl", [{"id": i, "premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 2}
                                          for i in range(N)])

    def tuned(prompt):  # right except on h0..h3, where it says the opposite
        i = int(prompt.split("Hypothesis: h", 1)[1].split("\n", 1)[0])
        return answer(1 - i % 2 if i < 4 else i % 2)

    base = evaluate_to_dir(ScriptedLM(generate=lambda p: "I think so."), ["nli_cot"], data, d / "base")
    tuned_dir = evaluate_to_dir(ScriptedLM(generate=tuned), ["nli_cot"], data, d / "tuned")
    other = write_jsonl(d / "other.jsonl", [{"premise": "x", "hypothesis": "h1", "label": 1}] * N)
    different = evaluate_to_dir(ScriptedLM(generate=tuned), ["nli_cot"], other, d / "different")
    # the tokens of the answers are counted with the first run's tokenizer: a local one here, recorded
    # as `simple_evaluate(model_args="pretrained=...")` records it (a string)
    point_at(base, f"pretrained={tiny_model}")
    return base, tuned_dir, different


def test_report(runs, tiny_model, tmp_path):
    from cotharness.compare import compare

    out = tmp_path / "report"
    report = compare(list(runs[:2]), out, names=["base", "tuned"])
    rows = {(r["model"], r["metric"]): r for r in json.loads((out / "summary.json").read_text())}
    assert rows[("base", "acc")]["value"] == 0.0 and rows[("base", "parse_fail")]["value"] == 1.0
    tuned = rows[("tuned", "acc")]
    assert tuned["value"] == pytest.approx(36 / N) and tuned["delta_vs_base"] == pytest.approx(36 / N)
    assert tuned["ci_low"] < tuned["value"] < tuned["ci_high"] <= 1.0
    # 36 discordant pairs, all one way: chi-squared with continuity correction (exact below 25 pairs)
    assert tuned["mcnemar_p"] == pytest.approx(chi2.sf((36 - 1) ** 2 / 36, df=1))
    assert rows[("tuned", "acc_entailment")]["value"] == pytest.approx(18 / 20)
    assert {"model", "task", "metric", "value", "ci_low", "ci_high"} <= set(rows[("tuned", "acc")])
    conf = report["tasks"]["nli_cot"]["models"]
    assert conf["tuned"]["confusion"]["labels"] == ["entailment", "no entailment"]
    assert conf["tuned"]["confusion"]["matrix"] == [[18, 2], [2, 18]]
    assert conf["base"]["confusion"]["matrix"] == [[0, 0, 20], [0, 0, 20]]  # all unparsed
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    answers = [json.loads(line)["resps"][0][0] for line in next(runs[1].rglob("samples_*.jsonl")).open()]
    expected = sum(len(tok(a, add_special_tokens=False).input_ids) for a in answers) / len(answers)
    assert expected > 10 and conf["tuned"]["mean_generated_tokens"] == pytest.approx(expected)
    assert conf["tuned"]["generated_tokens_counted_by"] == f"tokenizer of {tiny_model}"
    for name in ("summary.md", "summary.csv", "confusion_nli_cot.png", "bars_nli_cot.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "bars_nli_cot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "| tuned |" in md and "McNemar" in md
    # per class: the confusion [[18, 2], [2, 18]] gives 90% precision, recall and F1 for entailment
    assert conf["tuned"]["per_class"]["entailment"] == pytest.approx(
        {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 20, "predicted": 20})
    assert conf["base"]["per_class"]["entailment"]["recall"] == 0.0
    assert "| entailment | 0.0 / 0.0 / 0.0 | 90.0 / 90.0 / 90.0 | 20 |" in md
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["versions"]["lm_eval"] and "commit" in meta["git"]


def test_refuses_different_documents(runs, tmp_path):
    from cotharness.compare import compare

    with pytest.raises(ValueError, match="different documents"):
        compare([runs[0], runs[2]], tmp_path / "x")


def test_missing_results_named(tmp_path):
    from cotharness.compare import compare

    with pytest.raises(FileNotFoundError, match="no lm-eval results"):
        compare([tmp_path], tmp_path / "x")


def test_cli(runs, tmp_path):
    from cotharness.cli import app

    result = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "acc" in result.output and (tmp_path / "r" / "summary.md").is_file()


def test_no_local_tokenizer_means_no_counts(runs, tmp_path):
    """A hub id offline (or a folder without a tokenizer): no token counts, not an error."""
    from cotharness.compare import compare

    base = shutil.copytree(runs[0], tmp_path / "base")
    point_at(base, {"pretrained": "some-org/not-downloaded-7b"})
    report = compare([base, runs[1]], tmp_path / "r", names=["base", "tuned"])
    assert report["tasks"]["nli_cot"]["models"]["tuned"]["mean_generated_tokens"] is None


def test_a_tokenizer_bug_is_not_swallowed(runs, tmp_path, monkeypatch):
    """Only "no local tokenizer" means no counts; anything else is a bug and raises."""
    import transformers

    from cotharness.compare import compare

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the tokenizer")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="a bug in the tokenizer"):
        compare(list(runs[:2]), tmp_path / "r")


def test_piped_table_keeps_every_column(runs, tmp_path):
    """Piped into a narrow pipe (COLUMNS=60), no column is dropped and no cell cut with an ellipsis."""
    from cotharness.cli import app

    names = "the-base-model-with-a-long-name,the-fine-tuned-adapter-with-a-long-name"
    result = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[1]), "--names", names,
                                      "--out", str(tmp_path / "r")], env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    header = next(line for line in result.output.splitlines() if "metric" in line)
    for column in ("task", "model", "metric", "value %", "95% CI", "Δ vs base", "McNemar p"):
        assert column in header
    rows = [line for line in result.output.splitlines() if "the-fine-tuned-adapter-with-a-long-name" in line]
    assert any("acc_no_entailment" in line and "[" in line for line in rows)
