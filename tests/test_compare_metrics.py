"""One definition per metric: cotharness compare reports what lm-eval reported, by the same functions,
and its intervals come from the same functions over resampled documents."""

import json
import re

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from harness_tasks import metrics

from compare_helpers import logged, nli_data, nli_run, results_file, strict_json, summary
from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate_to_dir


def assert_summary_equals_results(out, run_dir, name, task):
    """Every metric of the results file, to the last digit (NaN there is null in the summary)."""
    rows, reported = summary(out), logged(run_dir, task)
    assert reported
    for metric, value in reported.items():
        row = rows[(name, task, metric)]
        if isinstance(value, float) and np.isnan(value):
            assert row["value"] is None and row["ci_low"] is None, metric
        else:
            assert row["value"] == value, (metric, row["value"], value)


def test_nli_cot_summary_equals_results_with_a_class_absent_from_gold(tmp_path):
    """Every gold label is 1; three answers say 0 (predicted, never gold), one does not parse."""
    from cotharness.compare import compare

    data = nli_data(tmp_path / "test.jsonl", [1] * 12)
    base = nli_run(tmp_path / "base", data, {i: 0 if i < 3 else None if i == 3 else 1 for i in range(12)})
    tuned = nli_run(tmp_path / "tuned", data, {i: 0 if i == 5 else 1 for i in range(12)})
    report = compare([base, tuned], tmp_path / "r", names=["base", "tuned"])
    for name, run in (("base", base), ("tuned", tuned)):
        assert_summary_equals_results(tmp_path / "r", run, name, "nli_cot")
    rows = summary(tmp_path / "r")
    # macro-F1 over the classes seen in gold or predictions: class 0 (F1 0) counts
    assert rows[("base", "nli_cot", "f1_macro")]["value"] == pytest.approx((2 * 8 / (8 + 12) + 0) / 2)
    assert {"precision", "recall", "f1", "acc_no_entailment"} <= {m for _, _, m in rows}
    # the predicted-only class is a column of the confusion matrix: its 3 documents are not lost
    conf = report["tasks"]["nli_cot"]["models"]["base"]["confusion"]
    assert conf == {"labels": ["entailment", "no entailment", "unparsed"], "matrix": [[8, 3, 1]],
                    "gold_labels": ["entailment"]}


def call(tool, parameters):
    return json.dumps({"reasoning": "Because.", "tool": tool, "parameters": parameters})


def test_tool_select_summary_equals_results(tmp_path):
    """code_execution is predicted but is no document's gold tool; params_* are reported too."""
    from cotharness.compare import compare

    rows = [{"id": "t0", "query": "Find reviews of the Steam Deck.", "tool": "web_search",
             "parameters": {"query": "Steam Deck reviews"}},
            {"id": "t1", "query": "Find the weather in Lisbon.", "tool": "web_search",
             "parameters": {"query": "weather Lisbon"}},
            {"id": "t2", "query": "How do I request a laptop?", "tool": "rag_retrieval",
             "parameters": {"query": "request a laptop", "collection": "handbook"}},
            {"id": "t3", "query": "Does Quill support webhooks?", "tool": "rag_retrieval",
             "parameters": {"query": "Quill webhooks", "collection": "product_docs"}},
            {"id": "t4", "query": "Thanks!", "tool": "direct_chat"}]
    answers = {"Find reviews of the Steam Deck.": call("web_search", {"query": "steam deck reviews"}),
               "Find the weather in Lisbon.": call("code_execution", {"code": "print('Lisbon')"}),
               "How do I request a laptop?": call("rag_retrieval", {"query": "request a laptop"}),
               "Does Quill support webhooks?": "no idea",
               "Thanks!": call("direct_chat", {})}
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    lm = ScriptedLM(generate=lambda p: answers[re.search(r"User request: (.*)\n", p).group(1)])
    run = evaluate_to_dir(lm, ["tool_select"], data, tmp_path / "run")
    other = evaluate_to_dir(ScriptedLM(generate=lambda p: call("web_search", {"query": "x"})), ["tool_select"], data,
                            tmp_path / "other")
    report = compare([run, other], tmp_path / "r", names=["m", "web"])
    assert set(logged(run, "tool_select")) == {"acc", "f1_macro", "params_valid", "params_required_match", "parse_fail"}
    assert_summary_equals_results(tmp_path / "r", run, "m", "tool_select")
    assert_summary_equals_results(tmp_path / "r", other, "web", "tool_select")
    conf = report["tasks"]["tool_select"]["models"]["m"]["confusion"]
    assert "code_execution" in conf["labels"] and "code_execution" not in conf["gold_labels"]


def test_teacher_row_goes_through_the_task_metrics(tmp_path):
    """The teacher's macro-F1 counts the class it predicted that no gold label has, like lm-eval's."""
    from cotharness.compare import compare

    golds = [1] * 10
    data = nli_data(tmp_path / "test.jsonl", golds)
    base = nli_run(tmp_path / "base", data, dict.fromkeys(range(10), 1))
    teacher_answers = {i: 0 if i < 4 else 1 for i in range(10)}
    thoughts = write_jsonl(tmp_path / "thoughts.jsonl", [
        {"id": f"t{i}", "premise": f"Premise {i}.", "hypothesis": f"h{i}", "true_label": 1,
         "thought_process": "Because.", "predicted_label": teacher_answers[i]} for i in range(10)])
    compare([base, thoughts], tmp_path / "r", names=["base", "teacher"])
    rows = summary(tmp_path / "r")
    items = [(1, teacher_answers[i]) for i in range(10)]
    assert rows[("teacher", "nli_cot", "f1_macro")]["value"] == metrics.f1_macro(items) == pytest.approx((12 / 16) / 2)
    assert rows[("teacher", "nli_cot", "precision")]["value"] == 1.0
    assert rows[("teacher", "nli_cot", "recall")]["value"] == pytest.approx(0.6)


def test_perfect_model_on_49_plus_1(tmp_path):
    """A resample without the one "no entailment" document has no such class: macro-F1 stays 100%,
    not 50%; a 100% share gets a Wilson interval, not the zero-width [100, 100]."""
    from cotharness.compare import compare

    golds = [1] * 49 + [0]
    data = nli_data(tmp_path / "test.jsonl", golds)
    perfect = nli_run(tmp_path / "perfect", data, dict(enumerate(golds)))
    compare([perfect], tmp_path / "r", names=["perfect"])
    rows = summary(tmp_path / "r")
    f1 = rows[("perfect", "nli_cot", "f1_macro")]
    assert (f1["value"], f1["ci_low"], f1["ci_high"], f1["ci_method"]) == (1.0, 1.0, 1.0, "bootstrap")
    acc = rows[("perfect", "nli_cot", "acc")]
    low, high = proportion_confint(50, 50, method="wilson")
    assert acc["ci_method"] == "wilson" and acc["ci_low"] == pytest.approx(low) and acc["ci_high"] == pytest.approx(1.0)
    assert low < 0.95
    fail = rows[("perfect", "nli_cot", "parse_fail")]
    assert fail["value"] == 0.0 and fail["ci_low"] == 0.0 and fail["ci_high"] == pytest.approx(1 - low)
    assert "†" in (tmp_path / "r" / "summary.md").read_text()
    assert strict_json(tmp_path / "r" / "manifest.json")["intervals"]["wilson"]


# --- the aggregations themselves ---------------------------------------------------------------------

def expand(items, counts):
    """The documents of one resample: each item repeated as often as the resample drew it."""
    return [item for item, c in zip(items, counts, strict=True) for _ in range(int(c))]


@pytest.mark.parametrize("name", ["f1_macro", "precision", "recall", "f1", "mean_defined", "mean"])
def test_batched_form_is_the_scalar_on_each_resample(name):
    rng = np.random.default_rng(1)
    n = 30
    gold = rng.choice(["a", "b", "c"], size=n, p=[0.8, 0.15, 0.05])
    pred = [None if rng.random() < 0.1 else str(x) for x in rng.choice(["a", "b", "c", "d"], size=n)]
    items = {"f1_macro": list(zip(gold, pred, strict=True)),
             "precision": [(p == "a", g == "a") for g, p in zip(gold, pred, strict=True)],
             "mean_defined": [None if g != "b" else int(p == g) for g, p in zip(gold, pred, strict=True)],
             "mean": [int(p == g) for g, p in zip(gold, pred, strict=True)]}
    items["recall"] = items["f1"] = items["precision"]
    fn, its = metrics.AGGREGATIONS[name], items[name]
    weights = rng.multinomial(n, np.full(n, 1 / n), size=200)
    np.testing.assert_array_equal(fn(its, weights), [fn(expand(its, w)) for w in weights])
    assert isinstance(fn(its), float) and fn(its) == fn(its, np.ones((1, n)))[0]


def test_mean_is_lm_evals_mean():
    from lm_eval.api.registry import get_aggregation

    for items in ([0, 1, 1, 0, 1, 1, 1], [1] * 7, [0], [True, False, True]):
        assert metrics.mean(items) == get_aggregation("mean")(items)


def test_f1_macro_counts_a_class_only_predicted():
    assert metrics.f1_macro([(1, 1)] * 5 + [(1, 0)] * 3) == pytest.approx((10 / 13 + 0) / 2)
    assert metrics.f1_macro([("a", "a")] * 49 + [("b", "b")]) == 1.0
    assert metrics.f1_macro([("a", None)]) == 0.0  # a parse failure is a miss, not a class


def test_results_file_records_the_aggregation_compare_uses(tmp_path):
    """lm-eval writes a !function aggregation as its source: compare finds it by name."""
    from cotharness.compare_stats import task_metrics

    run = nli_run(tmp_path / "run", nli_data(tmp_path / "t.jsonl", [1, 0]), {0: 1, 1: 0})
    found = {m.name: m.aggregation for m in task_metrics(json.loads(results_file(run).read_text()), "nli_cot")}
    assert found == {"acc": "mean", "f1_macro": "f1_macro", "precision": "precision", "recall": "recall", "f1": "f1",
                     "acc_entailment": "mean_defined", "acc_no_entailment": "mean_defined", "parse_fail": "mean"}


def test_a_value_unlike_the_results_file_is_a_note(tmp_path):
    """compare recomputes each run's values on its own documents and says where they differ from
    what lm-eval wrote (a results file from another version of a metric, or edited)."""
    from cotharness.compare import compare

    run = nli_run(tmp_path / "run", nli_data(tmp_path / "t.jsonl", [1, 0, 1, 1]), {0: 1, 1: 1, 2: 0, 3: 1})
    path = results_file(run)
    results = json.loads(path.read_text())
    results["results"]["nli_cot"]["f1_macro,cot_json"] = 0.5
    path.write_text(json.dumps(results))
    report = compare([run], tmp_path / "r", names=["run"])
    (note,) = report["notes"]
    assert note.startswith("run: nli_cot f1_macro is ") and "but 0.5 in its results file" in note
    assert summary(tmp_path / "r")[("run", "nli_cot", "f1_macro")]["value"] == metrics.f1_macro(
        [(1, 1), (0, 1), (1, 0), (1, 1)])
