"""tool_select: a user request and the tools on offer -> ``{"reasoning", "tool", "parameters"}``.

Data: JSONL or CSV rows ``{id, query, tool, parameters, ambiguous, source, tools}``; only ``query`` is
required. ``tool`` is the gold tool (rows without one get predictions only), ``parameters`` the gold
call's arguments (a JSON object, or its JSON text in CSV), ``tools`` the tool specs the row is asked
about (a list, or JSON text in CSV; ``cotharness datagen tools`` embeds them). Rows without ``tools``
use ``--metadata '{"tools_file": ...}'``, else the bundled tools.yaml. The bundled sample is the test
split of ``cotharness datagen tools --seed 0`` with the default tools, used unless
``--metadata '{"test_file": ...}'`` names another file. Metric definitions: ``scoring.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from harness_tasks.cot_json import CoTJSONFilter, filtered_answer
from harness_tasks.data_files import (
    DataFileError,
    check_header,
    labelled_rows,
    read_table,
    row_id,
    to_dataset,
)
from harness_tasks.tasks import TaskSpec
from harness_tasks.tool_select import scoring
from harness_tasks.tool_select.tools import (
    PARAMETERS_KEY,
    ToolsFileError,
    default_specs,
    load_tools,
    parameter_errors,
    parse_specs,
    row_specs,
    schema_for_names,
    schema_for_row,
)

FIELDS = ("query",)
SAMPLE_FILE = Path(__file__).resolve().parent / "data" / "sample.jsonl"
# The schema of the bundled tools: what `schema_for("tool_select")` reports (label names for display).
# Each document is parsed against the tools it was asked about (AnswerFilter.schema_for_doc).
SCHEMA = schema_for_names(tuple(s["name"] for s in default_specs()))


def context(row: dict) -> dict:
    """Template fields for the tool list: the row's own tools, else the bundled ones."""
    tools = [{"name": s["name"], "description": s["description"],
              "parameters_json": json.dumps(s["parameters"], ensure_ascii=False)} for s in row_specs(row)]
    return {"tools": tools, "parameters_key": PARAMETERS_KEY}


TASK = TaskSpec(name="tool_select", template="tool_select", fields=FIELDS, schema=SCHEMA, context=context,
                row_schema=schema_for_row)

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _json_cell(value, where: str, column: str):
    """A JSON value from a JSONL field or a CSV cell (JSON text); None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{where}: {column!r} is not valid JSON ({err.msg})") from None
    return value


def _flag(value, where: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).strip().lower() in _TRUE | _FALSE:
        return str(value).strip().lower() in _TRUE
    raise DataFileError(f"{where}: 'ambiguous' must be true or false, got {value!r}")


def read_docs(path: str | Path, tools_file: str | Path | None = None, empty_labels: str = "error") -> list[dict]:
    """Validated documents: ``{id, query, tools (JSON text), label, parameters (JSON text or None),
    ambiguous, source}``. JSON text rather than objects: each tool's schema and each call's
    parameters have their own keys, which one table column cannot hold. The gold ``tool`` is read
    by the row's schema (``to_label``: any case); a ``tool`` column with empty cells is an error
    unless ``empty_labels="skip"`` (``data_files``)."""
    path = Path(path)
    table = read_table(path)
    if not table.rows:
        raise DataFileError(f"{path}: no rows")
    check_header(table, ("query", "tool", "parameters", "tools", "ambiguous", "id"))
    rows = labelled_rows(table.rows, "tool", str(path), empty_labels) if "tool" in table.columns else table.rows
    position = {lineno: i for i, (lineno, _) in enumerate(table.rows)}
    fallback = None
    docs = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        query = row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataFileError(f"{where}: column 'query' is missing, empty or not text; found {sorted(row)}")
        try:
            if row.get("tools") not in (None, "", []):
                specs = parse_specs(row["tools"], where)
            else:
                if fallback is None:
                    fallback = load_tools(tools_file).specs() if tools_file else default_specs()
                specs = fallback
        except ToolsFileError as err:
            raise DataFileError(str(err)) from None
        names = [s["name"] for s in specs]
        tool = row.get("tool")
        if tool is not None:  # the one label rule (what training reads), against this row's tools
            tool = schema_for_names(tuple(names)).to_label(tool)
            if tool is None:
                raise DataFileError(f"{where}: tool={row['tool']!r} is not one of the row's tools {names}")
        parameters = _json_cell(row.get("parameters"), where, "parameters")
        if parameters is not None:
            if tool is None:
                raise DataFileError(f"{where}: gold 'parameters' without a gold 'tool'")
            errors = parameter_errors(specs[names.index(tool)], parameters)
            if errors:
                raise DataFileError(f"{where}: gold parameters do not satisfy {tool}'s schema: {errors[0]}")
        rid = row.get("id")
        docs.append({"id": row_id(rid, position[lineno]), "query": query,
                     "tools": json.dumps(specs, ensure_ascii=False), "label": tool,
                     "parameters": None if parameters is None else json.dumps(parameters, ensure_ascii=False),
                     "ambiguous": _flag(row.get("ambiguous"), where),
                     "source": None if row.get("source") in (None, "") else str(row["source"])})
    return docs


def load(test_file: str | None = None, tools_file: str | None = None, empty_labels: str = "error",
         **_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` for lm-eval; also receives model args and other metadata (ignored here:
    ``cotharness eval`` checks the user's keys against these parameters)."""
    return datasets.DatasetDict({"test": to_dataset(read_docs(test_file or SAMPLE_FILE, tools_file, empty_labels))})


def doc_to_text(doc: dict) -> str:
    return TASK.prompt(doc)


def doc_to_target(doc: dict) -> str:
    return doc["label"] or ""


class AnswerFilter(CoTJSONFilter):
    schema = SCHEMA

    def schema_for_doc(self, doc: dict):
        return schema_for_row(doc)  # the tools this document was asked about


def process_results(doc: dict, results: list) -> dict:
    answer = filtered_answer(results[0])
    gold_params = None if doc["parameters"] is None else json.loads(doc["parameters"])
    pred_params = (answer.get("extra") or {}).get(PARAMETERS_KEY)
    return scoring.score(json.loads(doc["tools"]), doc["label"], gold_params, answer["label"], pred_params)
