"""Task rows -> TRL prompt/completion rows, with token-length checks.

The prompt is the task's own template (``TaskSpec.prompt``: byte-identical to what lm-eval sends
at evaluation) and the completion is the JSON answer followed by EOS. Rows longer than
``max_length`` are dropped or refused, never truncated: truncation would cut the EOS off and teach
the model not to stop.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from harness_tasks.data_files import (
    DataFileError,
    check_header,
    label_of,
    labelled_rows,
    read_table,
    require_columns,
)
from harness_tasks.tasks import TaskSpec


def sft_rows(path: str | Path, task: TaskSpec, eos_token: str, label_column: str = "label",
             thought_column: str = "thought_process", empty_labels: str = "error") -> list[dict]:
    """``[{"prompt", "completion"}]`` from a data file of task rows with a thought and a gold label, or,
    for a free-text task (``task.target``), with the fields its target is made of.

    Read by eval's rules (``harness_tasks.data_files``): exact headers, labels by the task's schema,
    empty labels an error unless ``empty_labels="skip"``."""
    path = Path(path)
    table = read_table(path)
    if task.target is not None:
        check_header(table, (*task.fields, "id"))
        rows = table.rows
    else:
        check_header(table, (*task.fields, thought_column, label_column, "id"))
        labelled = label_column in table.columns  # else: the missing column is named per row below
        rows = labelled_rows(table.rows, label_column, str(path), empty_labels) if labelled else table.rows
    out = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        if task.target is not None:
            out.append({"prompt": _prompt(task, row, where), "completion": _target(task, row, where) + eos_token})
            continue
        require_columns(row, (*task.fields, thought_column, label_column), where)
        for c in task.fields:  # as eval refuses them: an empty premise teaches nothing
            if not isinstance(row[c], str) or not row[c].strip():
                raise DataFileError(f"{where}: column {c!r} is empty or not text")
        schema = task.schema_of(row)  # e.g. the tools a tool_select row lists
        thought = row[thought_column]
        if not isinstance(thought, str) or not thought.strip():
            raise DataFileError(f"{where}: {thought_column!r} is empty")
        label = label_of(row[label_column], schema, where, label_column)
        extra = {k: row[k] for k in schema.extra_keys if k in row}  # e.g. a tool call's parameters
        out.append({"prompt": task.prompt(row),
                    "completion": task.answer(thought, label, schema=schema, **extra) + eos_token})
    if not out:
        raise DataFileError(f"{path}: no rows")
    return out


def _prompt(task: TaskSpec, row: dict, where: str) -> str:
    try:
        prompt = task.prompt(row)
    except KeyError as err:  # a field the template needs is missing
        raise DataFileError(f"{where}: {err.args[0]}; found {sorted(row)}") from None
    # a free-text task's prompt is its fields (an instruction, a response): an empty one teaches nothing
    empty = [f for f in task.fields if not isinstance(row[f], str) or not row[f].strip()]
    if empty:
        raise DataFileError(f"{where}: {empty[0]!r} is empty or not text")
    return prompt


def _target(task: TaskSpec, row: dict, where: str) -> str:
    try:
        text = task.target(row)
    except KeyError as err:
        raise DataFileError(f"{where}: missing column {err.args[0]!r}; found {sorted(row)}") from None
    if not isinstance(text, str) or not text.strip():
        raise DataFileError(f"{where}: the training target is empty")
    return text


@dataclass
class LengthReport:
    path: str
    rows: int
    max_length: int
    over: list[int]  # indices of rows longer than max_length
    lengths: list[int]

    def summary(self) -> dict:
        ls = sorted(self.lengths)
        return {"rows": self.rows, "max_length": self.max_length, "over_max_length": len(self.over),
                "tokens_min": ls[0], "tokens_median": statistics.median(ls),
                "tokens_p95": ls[min(len(ls) - 1, int(0.95 * len(ls)))], "tokens_max": ls[-1]}


def check_lengths(rows: list[dict], tokenizer, max_length: int, path: str) -> LengthReport:
    """Token count of prompt + completion as TRL will tokenize it (BOS from the tokenizer, EOS in the text)."""
    lengths = [len(ids) for ids in tokenizer([r["prompt"] + r["completion"] for r in rows]).input_ids]
    return LengthReport(str(path), len(rows), max_length, [i for i, n in enumerate(lengths) if n > max_length],
                        lengths)


def apply_length_policy(rows: list[dict], report: LengthReport, policy: str) -> list[dict]:
    if not report.over:
        return rows
    if policy == "fail":
        raise DataFileError(
            f"{report.path}: {len(report.over)} of {report.rows} rows exceed data.max_length={report.max_length} "
            f"tokens (longest {max(report.lengths)}); raise data.max_length or set data.overlong=drop")
    if len(report.over) == report.rows:  # dropping them all would leave TRL an empty data set to fail on
        raise DataFileError(
            f"{report.path}: every row ({report.rows}) exceeds data.max_length={report.max_length} tokens (shortest "
            f"{min(report.lengths)}); raise data.max_length")
    drop = set(report.over)
    return [r for i, r in enumerate(rows) if i not in drop]
