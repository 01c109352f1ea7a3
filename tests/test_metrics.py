"""Metric arithmetic through real lm-eval runs with a scripted model."""

import json

import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate

DOCS = [  # hypothesis -> gold, model output
    ("h0", 1, '{"thought_process": "t", "predicted_label": 1}'),  # right
    ("h1", 1, '{"thought_process": "t", "predicted_label": 0}'),  # wrong
    ("h2", 1, "I am quite sure it is entailed."),  # unparseable: wrong, never a default label
    ("h3", 0, '{"thought_process": "t", "predicted_label": 0}'),  # right
    ("h4", 0, "```json\n{'thought_process': 't', 'predicted_label': 1,}\n```"),  # wrong (repaired)
    ("h5", 0, '{"thought_process": "t", "predicted_label": "no entailment"}'),  # right
]
GOLD = [g for _, g, _ in DOCS]
PRED = [1, 0, -1, 0, 1, 0]  # -1 = parse failure


def script(outputs):
    def generate(prompt):
        hypothesis = prompt.split("Hypothesis: ", 1)[1].split("\n", 1)[0]
        return outputs[hypothesis]
    return generate


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "test.jsonl", [
        {"id": f"d{i}", "premise": f"p{i}", "hypothesis": h, "label": g} for i, (h, g, _) in enumerate(DOCS)])


def test_cot_metrics_exact(data):
    lm = ScriptedLM(generate=script({h: out for h, _, out in DOCS}))
    res = evaluate(lm, ["nli_cot"], data)["results"]["nli_cot"]
    m = {k.split(",")[0]: v for k, v in res.items() if k.endswith(",cot_json")}
    assert m["acc"] == pytest.approx(3 / 6)
    assert m["parse_fail"] == pytest.approx(1 / 6)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * 1 / (2 + 3))
    assert m["acc_entailment"] == pytest.approx(1 / 3)
    assert m["acc_no_entailment"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx((2 / 5 + 4 / 6) / 2)
    # and the same numbers from an independent implementation (parse failure = its own wrong class)
    assert m["f1_macro"] == pytest.approx(f1_score(GOLD, PRED, labels=[0, 1], average="macro"))
    assert m["precision"] == pytest.approx(precision_score(GOLD, PRED, labels=[1], average="micro"))
    assert m["recall"] == pytest.approx(recall_score(GOLD, PRED, labels=[1], average="micro"))


def test_unparseable_model_scores_zero_not_majority(data):
    lm = ScriptedLM(generate=lambda prompt: "The hypothesis is entailed, so the answer is 1.")
    m = evaluate(lm, ["nli_cot"], data)["results"]["nli_cot"]
    assert m["acc,cot_json"] == 0.0
    assert m["parse_fail,cot_json"] == 1.0
    assert m["f1_macro,cot_json"] == 0.0


def test_unlabelled_file_gives_predictions_only(tmp_path):
    path = tmp_path / "hidden.csv"
    path.write_text("premise,hypothesis\np0,h0\np1,h1\np2,h2\n", encoding="utf-8")
    lm = ScriptedLM(generate=script({h: out for h, _, out in DOCS}))
    out = evaluate(lm, ["nli_cot"], path)
    metrics = {k for k in out["results"]["nli_cot"] if "," in k and "_stderr" not in k}
    assert metrics == {"parse_fail,cot_json"}
    samples = out["samples"]["nli_cot"]
    preds = [json.loads(s["filtered_resps"][0])["label"] for s in sorted(samples, key=lambda s: s["doc_id"])]
    assert preds == [1, 0, None]


def test_direct_task_argmax(data):
    # "yes" wins for h0, h1, h4; "no" for the others -> preds 1,1,0,0,1,0
    yes_docs = {"h0", "h1", "h4"}

    def loglikelihood(prompt, continuation):
        hypothesis = prompt.split("Hypothesis: ", 1)[1].split("\n", 1)[0]
        return -1.0 if (continuation.strip() == "yes") == (hypothesis in yes_docs) else -2.0

    m = evaluate(ScriptedLM(loglikelihood=loglikelihood), ["nli_direct"], data)["results"]["nli_direct"]
    assert m["acc,none"] == pytest.approx(4 / 6)
    assert m["recall,none"] == pytest.approx(2 / 3)
    assert m["parse_fail,none"] == 0.0


def test_prompts_are_the_training_prompts(data):
    """What lm-eval sends the model is byte-identical to the prompt the trainer renders."""
    from harness_tasks.data_files import load_task_rows
    from harness_tasks.tasks import get_task

    lm = ScriptedLM(generate=script({h: out for h, _, out in DOCS}))
    evaluate(lm, ["nli_cot"], data)
    task = get_task("nli_cot")
    expected = sorted(task.prompt(r) for r in load_task_rows(data, task.fields, task.schema.labels))
    assert sorted(lm.prompts) == expected
    assert all(p.startswith("[INST] ") and p.endswith(" [/INST]") and "<s>" not in p for p in lm.prompts)
