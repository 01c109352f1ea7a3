"""tool_select in lm-eval: exact metric arithmetic with scripted answers, a run of the tiny model, and
training rows whose prompt is byte-identical to what lm-eval sends."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotharness.cli import app
from harness_tasks.tasks import get_task
from harness_tasks.tool_select import utils
from trainer.data import sft_rows

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate

BIN = Path(sys.executable).parent
METRICS = {"acc", "f1_macro", "parse_fail", "params_valid", "params_required_match"}


def call(tool, parameters, reasoning="Because."):
    return json.dumps({"reasoning": reasoning, "tool": tool, "parameters": parameters})


# (row, what the model answers, expected acc / params_valid / params_required_match; None = not scored)
CASES = [
    ({"query": "How do I request a new laptop using our internal systems?", "tool": "rag_retrieval",
      "parameters": {"query": "request a new laptop", "collection": "handbook"}},
     # as lm-eval leaves it: the stop sequence "}\n" took the last brace
     call("rag_retrieval", {"query": "request a new laptop", "collection": "handbook"})[:-1], (1, 1, 1)),
    ({"query": "What's the weather forecast for Lisbon this weekend?", "tool": "web_search",
      "parameters": {"query": "weather forecast Lisbon weekend", "recency": "day"}},
     "I would search the web for the forecast.", (0, 0, 0)),  # unparseable
    ({"query": "What is 37 multiplied by 19?", "tool": "code_execution", "parameters": {"code": "print(37 * 19)"}},
     call("direct_chat", {}), (0, 0, 0)),  # wrong tool, though a well-formed direct_chat call
    ({"query": 'Is there a known fix for the "sync timeout" error in Relay?', "tool": "rag_retrieval",
      "parameters": {"query": "sync timeout error Relay", "collection": "support_tickets", "top_k": 5}},
     call("rag_retrieval", {"query": "sync timeout error Relay", "collection": "support_tickets", "top_k": "five"}),
     (1, 0, 1)),  # an optional parameter breaks the schema; the required ones match
    ({"query": "Does Quill support webhooks on the Team plan?", "tool": "rag_retrieval",
      "parameters": {"query": "Quill webhooks Team plan", "collection": "product_docs"}},
     call("rag_retrieval", {"query": "Quill webhooks Team plan"}), (1, 0, 0)),  # required collection missing
    ({"query": "Find recent reviews of the Steam Deck.", "tool": "web_search",
      "parameters": {"query": "Steam Deck reviews", "recency": "month", "max_results": 5}},
     call("web_search", {"query": "  steam deck REVIEWS ", "recency": "week"}), (1, 1, 1)),  # case, spaces
    ({"query": "Thanks, that was really helpful.", "tool": "direct_chat"},  # no gold parameters
     call("direct_chat", {}), (1, 1, None)),
    ({"query": "Convert 250 US dollars to euros.", "tool": "web_search",
      "parameters": {"query": "US dollars to euros exchange rate", "recency": "day"}},
     call("web_search", "US dollars to euros exchange rate"), (1, 0, 0)),  # parameters not an object
]


def test_metric_arithmetic_with_scripted_answers(tmp_path):
    rows = [{"id": f"d{i}", **row} for i, (row, _, _) in enumerate(CASES)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    answers = {row["query"]: answer for row, answer, _ in CASES}
    lm = ScriptedLM(generate=lambda prompt: answers[re.search(r"User request: (.*)\n", prompt).group(1)])
    out = evaluate(lm, ["tool_select"], path)
    res = {k.split(",")[0]: v for k, v in out["results"]["tool_select"].items() if k.endswith(",cot_json")
           and "_stderr" not in k}
    assert set(res) == METRICS
    assert res["acc"] == pytest.approx(6 / 8)
    assert res["parse_fail"] == pytest.approx(1 / 8)
    assert res["params_valid"] == pytest.approx(3 / 8)  # every document
    assert res["params_required_match"] == pytest.approx(3 / 7)  # the 7 with gold parameters
    # per tool F1: rag 3 right of 3 predicted / 3 gold = 1; web 2 of 2 / 3 = 0.8; code 0; direct 1 of 2 / 1 = 2/3
    assert res["f1_macro"] == pytest.approx((1 + 0.8 + 0 + 2 / 3) / 4)
    samples = sorted(out["samples"]["tool_select"], key=lambda s: s["doc_id"])
    for sample, (_, _, (acc, valid, match)) in zip(samples, CASES, strict=True):
        assert (sample.get("acc"), sample["params_valid"], sample["params_required_match"]) == (acc, valid, match)
    # what per-class reports and `cotharness compare` read: gold doc["label"], the filter's label
    wrong = samples[2]
    assert wrong["doc"]["label"] == "code_execution"
    assert json.loads(wrong["filtered_resps"][0])["label"] == "direct_chat"
    assert tuple(wrong["f1_macro"]) == ("code_execution", "direct_chat")


def test_unlabelled_rows_score_validity_only(tmp_path):
    """A file without a tool column (a labelled file may not have blank gold tools): no accuracy, and
    parameters are checked against the tool the model chose."""
    path = write_jsonl(tmp_path / "hidden.jsonl", [{"query": 'Translate "good luck" into French.'}])
    lm = ScriptedLM(generate=lambda prompt: call("web_search", {"query": "good luck in French"}))
    (sample,) = evaluate(lm, ["tool_select"], path)["samples"]["tool_select"]
    assert (sample.get("acc"), sample["params_valid"], sample["params_required_match"]) == (None, 1, None)


def test_training_prompt_is_the_evaluation_prompt(tmp_path):
    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["datagen", "tools", "--out", str(out), "--per-tool", "50"])
    assert result.exit_code == 0, result.output
    task = get_task("tool_select")
    sft = sft_rows(out / "train.jsonl", task, "</s>", label_column="tool", thought_column="reasoning")
    docs = utils.load(test_file=str(out / "train.jsonl"))["test"]  # through the Arrow table, as lm-eval reads it
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(sft) == len(docs) == len(rows) > 0
    for s, doc, row in zip(sft, docs, rows, strict=True):
        assert s["prompt"] == utils.doc_to_text(doc)
        assert s["completion"] == json.dumps({"reasoning": row["reasoning"], "tool": row["tool"],
                                              "parameters": row["parameters"]}, ensure_ascii=False) + "</s>"


def test_tiny_model_run_reports_every_metric(tiny_model, tmp_path):
    """`cotharness eval` on the bundled sample, from another directory."""
    out = tmp_path / "out"
    proc = subprocess.run([BIN / "cotharness", "eval", "--tasks", "tool_select", "--model_args",
                           f"pretrained={tiny_model}", "--device", "cpu", "--batch_size", "2", "--limit", "4",
                           "--gen_kwargs", "max_gen_toks=16", "--output_path", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (path,) = out.rglob("results_*.json")
    res = json.loads(path.read_text())
    values = {k.split(",")[0]: v for k, v in res["results"]["tool_select"].items()
              if k.endswith(",cot_json") and "_stderr" not in k}
    assert set(values) == METRICS and res["n-samples"]["tool_select"]["effective"] == 4
    # an untrained model writes no valid tool call: every call metric is zero, nothing is guessed
    assert values["parse_fail"] == 1.0
    assert values["acc"] == values["params_valid"] == values["params_required_match"] == 0.0
    (samples,) = out.rglob("samples_tool_select_*.jsonl")
    docs = [json.loads(line)["doc"] for line in samples.read_text().splitlines()]
    assert all(d["label"] in utils.SCHEMA.labels for d in docs)

