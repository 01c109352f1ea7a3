"""tool_select data: the tools YAML, `cotharness datagen tools` (synthesis, split, determinism), the
evaluation loader's errors, and a fifth tool that is a YAML edit only."""

import json
import re
from collections import Counter

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from cotharness.cli import app
from harness_tasks.cot_json import parse
from harness_tasks.data_files import DataFileError
from harness_tasks.tasks import get_task, schema_for
from harness_tasks.tool_select import utils
from harness_tasks.tool_select.tools import DEFAULT_TOOLS_FILE, ToolsFileError, load_tools
from trainer.data import sft_rows

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate

SEED_TOOLS = ["rag_retrieval", "web_search", "code_execution", "direct_chat"]
SPLITS = ("train", "dev", "test")


def datagen(*args):
    return CliRunner().invoke(app, ["datagen", "tools", *map(str, args)])


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def same_request(text):  # the test's own idea of "the same request"
    return re.sub(r"\s+", " ", text).strip().rstrip(".?!").casefold()


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tool_data") / "data"
    result = datagen("--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_synthesis_covers_every_tool_with_valid_calls(default_data):
    yaml_tools = {t["name"]: t for t in yaml.safe_load(DEFAULT_TOOLS_FILE.read_text())["tools"]}
    rows = [r for s in SPLITS for r in read(default_data / f"{s}.jsonl")]
    plain = Counter(r["tool"] for r in rows if not r["ambiguous"])
    hard = Counter(r["tool"] for r in rows if r["ambiguous"])
    assert list(yaml_tools) == SEED_TOOLS
    assert plain == {t: 100 for t in SEED_TOOLS} and hard == {t: 10 for t in SEED_TOOLS}
    for r in rows:
        Draft202012Validator(yaml_tools[r["tool"]]["parameters"]).validate(r["parameters"])
        assert r["reasoning"].strip() and r["source"] == "synthetic"
        assert r["tools"] == [{k: t[k] for k in ("name", "description", "parameters")} for t in yaml_tools.values()]
        if r["ambiguous"]:
            assert r["alternative"] in yaml_tools and r["alternative"] != r["tool"]
        else:
            assert r["alternative"] is None
    keys = [same_request(r["query"]) for r in rows]
    assert len(set(keys)) == len(keys) and len({r["id"] for r in rows}) == len(rows)
    # templates take turns: every request template of every tool is used
    for name, tool in yaml_tools.items():
        for kind in ("queries", "ambiguous"):
            for template in tool["synthesis"][kind]:
                pattern = ".+".join(map(re.escape, re.split(r"\{[\w.]+\}", template["query"])))
                assert any(re.fullmatch(pattern, r["query"]) for r in rows if r["tool"] == name), template


def test_split_is_80_10_10_per_tool_with_ambiguous_rows_everywhere(default_data):
    splits = {s: read(default_data / f"{s}.jsonl") for s in SPLITS}
    for tool in SEED_TOOLS:
        n = {s: sum(r["tool"] == tool for r in rows) for s, rows in splits.items()}
        total = sum(n.values())
        assert abs(n["dev"] - 0.1 * total) <= 1 and abs(n["test"] - 0.1 * total) <= 1, n
        assert abs(n["train"] - 0.8 * total) <= 2, n
        assert all(any(r["tool"] == tool and r["ambiguous"] for r in rows) for rows in splits.values())
    queries = [{r["query"] for r in rows} for rows in splits.values()]
    assert not (queries[0] & queries[1] or queries[0] & queries[2] or queries[1] & queries[2])
    manifest = json.loads((default_data / "manifest.json").read_text())
    assert manifest["splits"]["test"]["rows"] == len(splits["test"]) and manifest["database"] is None
    assert (default_data / "tools.yaml").read_bytes() == DEFAULT_TOOLS_FILE.read_bytes()


def test_same_arguments_same_files_and_another_seed_other_rows(default_data, tmp_path):
    assert datagen("--out", tmp_path / "again").exit_code == 0
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "tools.yaml", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (default_data / name).read_bytes(), name
    assert datagen("--out", tmp_path / "seed1", "--seed", 1).exit_code == 0
    other, first = read(tmp_path / "seed1" / "test.jsonl"), read(default_data / "test.jsonl")
    assert len(other) == len(first) and {r["query"] for r in other} != {r["query"] for r in first}


def test_bundled_sample_is_the_default_test_split(default_data):
    assert utils.SAMPLE_FILE.read_bytes() == (default_data / "test.jsonl").read_bytes(), (
        "harness_tasks/tool_select/data/sample.jsonl is stale: regenerate it with `cotharness datagen tools "
        "--out DIR` and copy DIR/test.jsonl there")


def test_per_tool_option_and_too_few_templates(tmp_path):
    result = datagen("--out", tmp_path / "small", "--per-tool", 50, "--ambiguous-per-tool", 0)
    assert result.exit_code == 0, result.output
    rows = [r for s in SPLITS for r in read(tmp_path / "small" / f"{s}.jsonl")]
    assert Counter(r["tool"] for r in rows) == {t: 50 for t in SEED_TOOLS} and not any(r["ambiguous"] for r in rows)
    result = datagen("--out", tmp_path / "big", "--per-tool", 5000)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(r"error: .*tools\.yaml: tool '\w+': .* give only \d+ distinct requests, 5000 asked for",
                     result.output)
    assert not (tmp_path / "big").exists()


def _tools_file(tmp_path, edit):
    data = yaml.safe_load(DEFAULT_TOOLS_FILE.read_text())
    edit(data)
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(keys, value):
    def edit(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set(["tools", 1, "parameters", "type"], "objekt"), "tools.1 (web_search).parameters: not a valid JSON Schema"),
    (_set(["tools", 1, "parameters"], {"type": "string"}), 'tools.1 (web_search).parameters: must be a JSON Schema with "type": "object"'),
    (_set(["tools", 0, "description"], KeyError), "tools.0 (rag_retrieval).description: Field required"),
    (_set(["tools", 2, "paramters"], {}), "tools.2 (code_execution).paramters: Extra inputs are not permitted"),
    (_set(["tools", 3, "name"], "Web_Search"), "tool names must be unique (ignoring case); repeated: ['Web_Search', 'web_search']"),
    (_set(["tools", 3, "name"], "direct chat"), "tools.3 (direct chat).name: String should match pattern"),
    (_set(["tools", 1, "synthesis", "queries", 0, "query"], "Forecast for {town}?"),
     "tools.1 (web_search).synthesis.queries.0.query: unknown slot {town}"),
    (_set(["tools", 0, "synthesis", "ambiguous", 0, "also"], "fax"), "tools.0 (rag_retrieval).synthesis.ambiguous.0.also: 'fax'"),
    (_set(["tools", 1, "synthesis", "queries", 8, "query"], "News this {period}?"), "slot 'period' holds mappings"),
    (_set(["tools"], []), "tools: List should have at least 2 items"),
])
def test_tools_file_errors_name_the_file_and_the_key(tmp_path, edit, message):
    path = _tools_file(tmp_path, edit)
    with pytest.raises(ToolsFileError) as err:
        load_tools(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_bad_tools_file_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "tools.yaml"
    path.write_text("tools:\n  - name: a\n    description: x\n    parameters: {type: object}\n  - [oops\n")
    result = datagen("--out", tmp_path / "out", "--tools", path)
    assert result.exit_code == 2 and result.output.startswith(f"error: {path}: invalid YAML")
    # a gold call that breaks the tool's own schema is caught while synthesizing, with the template's key
    path = _tools_file(tmp_path, _set(["tools", 1, "synthesis", "queries", 0, "parameters", "recency"], "hourly"))
    result = datagen("--out", tmp_path / "out", "--tools", path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "tools.1 (web_search).synthesis.queries.0.parameters: with {'city':" in result.output
    assert "recency: 'hourly' is not one of ['any', 'day', 'week', 'month', 'year']" in result.output


@pytest.mark.parametrize("line,message", [
    ({"id": "x", "query": "Hi", "tool": "fax"}, "rows.jsonl:2: tool='fax' is not one of the row's tools"),
    ({"query": "", "tool": "direct_chat"}, "rows.jsonl:2: column 'query' is missing, empty or not text"),
    ({"query": "Hi", "parameters": {}}, "rows.jsonl: 1 of 2 rows have an empty 'tool' (first on line 2)"),
    ({"query": "Weather?", "tool": "web_search", "parameters": {"recency": "day"}},
     "rows.jsonl:2: gold parameters do not satisfy web_search's schema: parameters: 'query' is a required property"),
    ({"query": "Hi", "tool": "direct_chat",
      "tools": [{"name": "a", "description": "x", "parameters": {"type": "object"}}]},
     "rows.jsonl:2: tools: List should have at least 2 items"),
    ({"query": "Hi", "tool": "direct_chat", "tools": "[{"}, "rows.jsonl:2: 'tools' is not valid JSON"),
    ({"query": "Hi", "tool": "direct_chat", "ambiguous": "maybe"}, "rows.jsonl:2: 'ambiguous' must be true or false"),
    ({"query": "Hi", "Tool": "direct_chat"}, "rows.jsonl:2: column 'Tool': did you mean 'tool'?"),
])
def test_evaluation_rows_errors_name_file_and_line(tmp_path, line, message):
    first = {"query": "Good morning!"} if "Tool" in line else {"query": "Good morning!", "tool": "direct_chat"}
    path = write_jsonl(tmp_path / "rows.jsonl", [first, line])
    with pytest.raises(DataFileError) as err:
        utils.read_docs(path)
    assert str(err.value).startswith(str(tmp_path)) and message in str(err.value), str(err.value)


def test_csv_rows_tools_file_and_unlabelled_rows(tmp_path):
    specs = load_tools().specs()
    path = tmp_path / "rows.csv"
    path.write_text('query,tool,parameters,tools\n"What is 3 times 4?",code_execution,"{""code"": ""print(3 * 4)""}",'
                    + '"' + json.dumps(specs).replace('"', '""') + '"\nGood morning!,,,\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"rows.csv: 1 of 2 rows have an empty 'tool' \(first on line 3\)"):
        utils.read_docs(path)  # a labelled file with a blank gold tool: refused, never scored on fewer rows
    docs = utils.read_docs(path, empty_labels="skip")
    assert len(docs) == 1 and docs[0]["label"] == "code_execution"
    assert json.loads(docs[0]["parameters"]) == {"code": "print(3 * 4)"}
    assert utils.doc_to_text(docs[0]) == get_task("tool_select").prompt({"query": "What is 3 times 4?"})
    unlabelled = tmp_path / "hidden.csv"  # no tool column at all: predictions only, the bundled tools
    unlabelled.write_text("query\nGood morning!\n", encoding="utf-8")
    (doc,) = utils.read_docs(unlabelled)
    assert doc["label"] is None and doc["parameters"] is None and json.loads(doc["tools"]) == specs
    with pytest.raises(DataFileError, match="no such tools file"):
        utils.read_docs(unlabelled, tools_file=tmp_path / "none.yaml")


def test_prompt_shows_each_tool_and_the_answer_reads_back():
    task = get_task("tool_select")
    prompt = task.prompt({"query": "Is the Louvre open on Monday?"})
    for spec in load_tools().specs():
        assert f"- {spec['name']}: {spec['description']}\n  Parameters (JSON Schema): " \
               f"{json.dumps(spec['parameters'], ensure_ascii=False)}" in prompt
    assert prompt.startswith("[INST] ") and "User request: Is the Louvre open on Monday?" in prompt
    answer = task.answer("Opening hours are on the web.", "web_search", parameters={"query": "Louvre hours Monday"})
    assert answer == ('{"reasoning": "Opening hours are on the web.", "tool": "web_search", '
                      '"parameters": {"query": "Louvre hours Monday"}}')
    parsed = parse(answer[:-1], task.schema)  # as lm-eval leaves it: the last brace is cut with the stop sequence
    assert (parsed.label, parsed.extra) == ("web_search", {"parameters": {"query": "Louvre hours Monday"}})
    assert parse('{"reasoning": "x", "tool": "calculator", "parameters": {}}', task.schema).label is None
    assert list(schema_for("tool_select").labels) == SEED_TOOLS


CALENDAR = {
    "name": "calendar_lookup",
    "description": "Read the user's own calendar: meetings, free slots and events on a given day.",
    "parameters": {"type": "object", "properties": {
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "what": {"type": "string", "enum": ["meetings", "free_slots"]}},
        "required": ["date", "what"], "additionalProperties": False},
    "synthesis": {
        "slots": {"day": [f"2025-03-{d:02d}" for d in range(3, 23)],
                  "ask": [{"text": "What meetings do I have on", "what": "meetings"},
                          {"text": "When am I free on", "what": "free_slots"},
                          {"text": "Show my free slots for", "what": "free_slots"}]},
        "queries": [
            {"query": "{ask.text} {day}?", "parameters": {"date": "{day}", "what": "{ask.what}"},
             "reasoning": "This is about the user's own calendar on {day}, which only the calendar tool can read."},
            {"query": "Do I have anything booked on {day}?", "parameters": {"date": "{day}", "what": "meetings"},
             "reasoning": "Bookings on {day} are in the user's calendar."}],
        "ambiguous": [{"query": "Am I free for lunch on {day}?", "also": "direct_chat",
                       "parameters": {"date": "{day}", "what": "free_slots"},
                       "reasoning": "It sounds like small talk, but only the calendar knows the user's free time."}]},
}


def test_a_fifth_tool_is_a_yaml_edit(tmp_path):
    """Synthesis, prompt, parsing, metrics and SFT rows pick up a tool added to a copy of the YAML."""
    tools_path = _tools_file(tmp_path, lambda data: data["tools"].append(CALENDAR))
    out = tmp_path / "data"
    result = datagen("--out", out, "--tools", tools_path, "--per-tool", 50, "--ambiguous-per-tool", 5)
    assert result.exit_code == 0, result.output
    rows = [r for s in SPLITS for r in read(out / f"{s}.jsonl")]
    assert Counter(r["tool"] for r in rows)["calendar_lookup"] == 55
    test_docs = utils.read_docs(out / "test.jsonl")
    assert {d["label"] for d in test_docs} == {*SEED_TOOLS, "calendar_lookup"}
    assert "- calendar_lookup: Read the user's own calendar" in utils.doc_to_text(test_docs[0])

    # each document is parsed against its own tools: a calendar answer counts there and nowhere else
    answer = '{"reasoning": "r", "tool": "calendar_lookup", "parameters": {"date": "2025-03-03", "what": "meetings"}}'
    assert json.loads(utils.AnswerFilter().apply([[answer]], [test_docs[0]])[0][0])["label"] == "calendar_lookup"
    assert json.loads(utils.AnswerFilter().apply([[answer]], [{"query": "x"}])[0][0])["label"] is None

    gold = {r["query"]: r for r in read(out / "test.jsonl")}

    def perfect(prompt):
        row = gold[re.search(r"User request: (.*)\n", prompt).group(1)]
        return json.dumps({"reasoning": row["reasoning"], "tool": row["tool"], "parameters": row["parameters"]})

    res = evaluate(ScriptedLM(generate=perfect), ["tool_select"], out / "test.jsonl")["results"]["tool_select"]
    assert {k: res[f"{k},cot_json"] for k in ("acc", "f1_macro", "params_valid", "params_required_match",
                                              "parse_fail")} == {"acc": 1.0, "f1_macro": 1.0, "params_valid": 1.0,
                                                                 "params_required_match": 1.0, "parse_fail": 0.0}
    sft = sft_rows(out / "train.jsonl", get_task("tool_select"), "</s>", label_column="tool",
                   thought_column="reasoning")
    calendar = [s for s, r in zip(sft, read(out / "train.jsonl"), strict=True) if r["tool"] == "calendar_lookup"]
    assert calendar and all('"tool": "calendar_lookup", "parameters": {"date": "2025-03-' in s["completion"]
                            for s in calendar)


def test_rows_without_tools_use_the_tools_file_from_metadata(tmp_path):
    tools_path = _tools_file(tmp_path, lambda data: data["tools"].append(CALENDAR))
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"query": "When am I free on 2025-03-05?", "tool": "calendar_lookup",
         "parameters": {"date": "2025-03-05", "what": "free_slots"}}])
    with pytest.raises(DataFileError, match=r"rows.jsonl:1: tool='calendar_lookup' is not one of"):
        utils.load(test_file=str(rows))  # the bundled tools have no calendar
    doc = utils.load(test_file=str(rows), tools_file=str(tools_path))["test"][0]
    assert [t["name"] for t in json.loads(doc["tools"])] == [*SEED_TOOLS, "calendar_lookup"]
    assert "- calendar_lookup:" in utils.doc_to_text(doc)
