import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness_tasks import cot_json
from harness_tasks.nli_cot.utils import SCHEMA

ANSWER = '{"thought_process": "Step 1: a. Step 2: b.", "predicted_label": 1}'

CATALOGUE = [
    # (model output, label, method)
    (ANSWER, 1, "json"),
    ('{\n    "thought_process": "Step 1: a.",\n    "predicted_label": 0\n}', 0, "json"),
    ("```json\n" + ANSWER + "\n```", 1, "json"),
    ("Sure, here is my answer:\n" + ANSWER + "\nI hope this helps {really}.", 1, "json"),
    # the same object repeated / objects glued together: the first complete answer wins
    (ANSWER + ANSWER.replace(": 1}", ": 0}") * 3, 1, "json"),
    (ANSWER + "\n" + ANSWER.replace(": 1}", ": 0}"), 1, "json"),
    # stop sequence "}\n" cut the final brace off
    ('{"thought_process": "Step 1: a.", "predicted_label": 0', 0, "json"),
    # truncated after the label, with trailing junk json-repair has to close
    ('{"thought_process": "Step 1: a.", "predicted_label": 1, "extra": "unfinish', 1, "repaired"),
    ("{'thought_process': 'it is so', 'predicted_label': 0}", 0, "repaired"),
    ('{"thought_process": "a", "predicted_label": 1,}', 1, "repaired"),
    ('{"thought_process": "a", "predicted_label": "1"}', 1, "json"),
    ('{"thought_process": "a", "predicted_label": "0"}', 0, "json"),
    ('{"thought_process": "a", "predicted_label": "Entailment"}', 1, "json"),
    ('{"thought_process": "a", "predicted_label": "no entailment"}', 0, "json"),
    ('{"thought_process": "a", "predicted_label": "not_entailment"}', 0, "json"),
    ('{"thought_process": "a", "predicted_label": 1.0}', 1, "json"),
    ('{"thought_process": "a", "label": 0}', 0, "json"),
    ('{"thought_process": "set {a, b} and \\"quoted\\" words", "predicted_label": 1}', 1, "json"),
    ('{"thought_process": "He said "yes" to it", "predicted_label": 0}', 0, "repaired"),
    ('{"answer": {"thought_process": "nested", "predicted_label": 1}}', 1, "json"),
    # unrepairable but with an explicit label field
    ('thought_process: "x" ... "predicted_label": 0 ]]]', 0, "regex"),
    # typographic quotes as delimiters (models do write them); inside a valid string they are text
    ('{“thought_process”: “Step 1: it says so.”, “predicted_label”: 1}', 1, "repaired"),
    ('{“thought_process”: “He said “hi” and left”, “predicted_label”: “0”}', 0, "repaired"),
    ("{‘thought_process’: ‘x’, ‘predicted_label’: 0}", 0, "repaired"),
    ('{"thought_process": "The sign read “closed”.", "predicted_label": 0}', 0, "json"),
]

FAILURES = [
    "",
    "The hypothesis is entailed by the premise.",  # prose: never read a label out of it
    "Step 1: the premise. Step 2: the hypothesis. Step 3: so 1.",  # the seed's "1" in "Step 1" bug
    '{"thought_process": "Step 1: ... Step 2: ...", "predicted_label": 1 or 0}',  # echoed template
    '{"thought_process": "a", "predicted_label": 1 (entailment)}',
    '{"thought_process": "a", "predicted_label": 2}',
    '{"thought_process": "a", "predicted_label": true}',
    '{"thought_process": "a", "predicted_label": "maybe"}',
    '{"thought_process": "Step 1: the premise says',  # truncated before the label
    '{"thought_process": "a", "predicted_label": ',
    "{}",
    "{" * 50,
    '{“thought_process”: “Step 1: ... Step 2: ...”, “predicted_label”: 1 or 0}',  # echoed, typographic
    "The premise “entails” the hypothesis: 1.",
]


@pytest.mark.parametrize("text,label,method", CATALOGUE)
def test_catalogue(text, label, method):
    parsed = parse(text)
    assert (parsed.label, parsed.method) == (label, method)


@pytest.mark.parametrize("text", FAILURES)
def test_no_guessing(text):
    parsed = parse(text)
    assert parsed.label is None and parsed.method == "none"


def parse(text, schema=SCHEMA):
    """The parser in the main task's answer format unless a test gives another."""
    return cot_json.parse(text, schema)


def test_thought_is_extracted():
    assert parse(ANSWER).thought == "Step 1: a. Step 2: b."
    assert parse("{'thought_process': 'it is so', 'predicted_label': 0}").thought == "it is so"
    # truncated before the label: the reasoning is kept even though there is no answer
    assert parse('{"thought_process": "Step 1: half').thought == "Step 1: half"


def test_non_string_input():
    assert parse(None).label is None
    assert parse(12).label is None


def test_custom_schema_string_labels():
    from harness_tasks.schema import AnswerSchema

    tools = AnswerSchema(labels={"web_search": "web search", "direct_chat": "direct chat"},
                         thought_key="reasoning", label_key="tool")
    assert parse('{"reasoning": "needs fresh facts", "tool": "web_search"}', tools).label == "web_search"
    assert parse('{"reasoning": "x", "tool": "Direct Chat"}', tools).label == "direct_chat"
    assert parse('{"reasoning": "x", "tool": "calculator"}', tools).label is None


def test_long_garbage_is_bounded(monkeypatch):
    """Work is bounded by construction: json-repair sees a few short windows, whatever the input."""
    seen = []
    real = cot_json.json_repair.loads
    monkeypatch.setattr(cot_json.json_repair, "loads", lambda s: seen.append(len(s)) or real(s))
    garbage = '{"a": "' + 'x{ "predicted_label": 1, "y' * 200_000
    assert parse(garbage).label == 1
    assert 0 < len(seen) <= cot_json.MAX_REPAIR_STARTS
    assert max(seen) <= cot_json.REPAIR_WINDOW


def test_repair_skipped_where_no_label_is_written(monkeypatch):
    """A repaired label counts only where the window writes it, so windows without one are not repaired
    (random tokens of an untrained model: most of the scoring time otherwise); the thought is still read."""
    seen = []
    real = cot_json.json_repair.loads
    monkeypatch.setattr(cot_json.json_repair, "loads", lambda s: seen.append(s) or real(s))
    assert parse('{"thought_process": "Step 1: half, {"x\': 3, {"y": [').as_dict() == {
        "label": None, "thought": "Step 1: half, {", "method": "none", "extra": None}
    assert seen == []
    assert parse("{'thought_process': 'it is so', 'predicted_label': 0,}").method == "repaired"
    assert len(seen) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,\'\\ 01abpredictd_label\nthought_process')) | st.characters(),
               max_size=400))
def test_never_raises(text):
    parsed = parse(text)
    assert parsed.label in (0, 1, None)
    assert parsed.method in ("json", "repaired", "regex", "none")
    assert (parsed.label is None) == (parsed.method == "none")


@settings(max_examples=200, deadline=None)
@given(thought=st.text(max_size=200), label=st.sampled_from([0, 1]), prefix=st.text(max_size=50),
       suffix=st.text(max_size=50))
def test_valid_answer_always_found(thought, label, prefix, suffix):
    text = json.dumps({"thought_process": thought, "predicted_label": label})
    # prose around the answer must not change it, as long as the prose has no answer of its own
    if "{" in prefix or "label" in prefix.lower() + suffix.lower():
        return
    assert parse(prefix + "\n" + text + "\n" + suffix).label == label


def test_filter_output_round_trips():
    from harness_tasks.nli_cot.utils import AnswerFilter

    out = AnswerFilter().apply([[ANSWER], ["nonsense"]], [{}, {}])
    assert [cot_json.filtered_answer(r[0]) for r in out] == [
        {"label": 1, "method": "json"}, {"label": None, "method": "none"}]
    assert SCHEMA.positive == 1
