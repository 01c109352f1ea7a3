"""Task rows from data files, by one set of rules for eval, datagen and the trainer.

- Files are read by :mod:`harness_tasks.tables` (CSV, TSV, JSONL, Parquet; UTF-8, BOM dropped).
- Headers are matched exactly. A column the reader looks for that the file only has in another case
  or spacing (``Label``, ``label ``) is an error that says so, never a missing column: a labelled
  file must not be evaluated as an unlabelled one.
- Labels are read by the task's ``AnswerSchema.to_label`` (ids, names, synonyms, any case).
- A label column with empty cells is an error (how many, the first line) unless the caller asks
  to skip those rows (``empty_labels="skip"``); the rows skipped are then counted aloud. A file
  with no label column at all is unlabelled: its rows get predictions only.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Hashable, Iterable
from pathlib import Path

import datasets

from harness_tasks.schema import AnswerSchema
from harness_tasks.tables import DataFileError, Table, read_table

__all__ = ["DataFileError", "Table", "read_table", "read_rows", "check_header", "require_columns",
           "labelled_rows", "label_of", "load_task_rows", "row_id", "claim_id", "text_cell", "to_dataset"]

EMPTY_LABELS = ("error", "skip")
"""what to do with empty cells in a label column: refuse the file, or leave those rows out (counted)"""


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` pairs of a data file (see :func:`read_table`)."""
    return read_table(path).rows


# --- headers: exact, with a did-you-mean for near misses ---------------------------------------------

def _spelling(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def _variant(name: str, columns: Iterable[str]) -> str | None:
    """A column that is ``name`` but for case, spaces, ``_`` or ``-``."""
    return next((c for c in columns if c != name and _spelling(c) == _spelling(name)), None)


def check_header(table: Table, wanted: Iterable[str | tuple[str, ...]], where: str | None = None) -> None:
    """Each column the reader looks for (required or optional; a tuple: any one of these names) is in
    the file as spelled, or in no spelling at all. A near miss is an error: read as missing, an
    optional ``label`` would quietly turn a labelled file into predictions only. ``where``: the
    source for messages (default: the file and the line the column is on)."""
    for names in wanted:
        names = (names,) if isinstance(names, str) else names
        if any(n in table.columns for n in names):
            continue
        for name in names:
            found = _variant(name, table.columns)
            if found is not None:
                at = where or f"{table.path}:{table.first_line.get(found, 1)}"
                raise DataFileError(f"{at}: column {found!r}: did you mean {name!r}? Headers are matched exactly "
                                    "(case and spaces count); rename the column")


def require_columns(row: dict, needed: Iterable[str], where: str, hint: str = "") -> None:
    """Every ``needed`` key is in ``row``; else one error naming the missing ones and a likely typo."""
    missing = [c for c in needed if c not in row]
    if not missing:
        return
    found = sorted(row)
    close = {m: difflib.get_close_matches(m, found, n=1, cutoff=0.8) for m in missing}
    guess = "; ".join(f"{c[0]!r} looks like {m!r}: headers are matched exactly" for m, c in close.items() if c)
    raise DataFileError(f"{where}: missing column(s) {missing}; found {found}" + (f" ({guess})" if guess else "")
                        + (f"; {hint}" if hint else ""))


# --- labels: one rule, and no row dropped unseen -----------------------------------------------------

def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, float) and math.isnan(value))


_said: set[str] = set()


def _say(message: str) -> None:
    if message not in _said:  # cotharness eval reads a file once to check it, then lm-eval reads it
        _said.add(message)
        print(message, file=sys.stderr)


def labelled_rows(rows: list[tuple[int, dict]], column: str, where: str, empty_labels: str = "error",
                  is_unlabelled=is_empty, unit: str = "line") -> list[tuple[int, dict]]:
    """The rows of a labelled source whose ``column`` is filled. Empty cells are an error with the count
    and the first line (a metric over fewer rows than the file has would be silently wrong), unless
    ``empty_labels="skip"``: then those rows are left out and the count is printed. ``where``: the
    source, for messages; ``unit``: what its rows' numbers are (a dataset has rows, not lines)."""
    if empty_labels not in EMPTY_LABELS:
        raise DataFileError(f"empty_labels={empty_labels!r}: use 'error' (the default) or 'skip'")
    empty = [lineno for lineno, row in rows if is_unlabelled(row.get(column))]
    if not empty:
        return rows
    if len(empty) == len(rows):
        raise DataFileError(f"{where}: every {column!r} cell is empty ({len(rows)} rows); fill them in, or remove "
                            "the column to read the file as unlabelled (predictions only)")
    if empty_labels == "error":
        raise DataFileError(f"{where}: {len(empty)} of {len(rows)} rows have an empty {column!r} (first on {unit} "
                            f"{empty[0]}); fill them in, or set empty_labels to skip to leave those rows out")
    _say(f"{where}: skipped {len(empty)} of {len(rows)} rows with an empty {column!r} (empty_labels=skip; "
         f"first on {unit} {empty[0]})")
    skipped = set(empty)
    return [(lineno, row) for lineno, row in rows if lineno not in skipped]


def label_of(value, schema: AnswerSchema, where: str, column: str = "label") -> Hashable:
    """``value`` as a label of ``schema`` (its one rule: ids, names, synonyms, any case and spacing)."""
    label = schema.to_label(value)
    if label is None:
        raise DataFileError(f"{where}: {column}={value!r} is not one of {list(schema.labels)} "
                            f"({schema.spellings()}; ids or names, any case)")
    return label


def _as_schema(labels) -> AnswerSchema:
    # older callers pass a task's label ids rather than its schema
    return labels if isinstance(labels, AnswerSchema) else AnswerSchema({lb: str(lb) for lb in labels})


def load_task_rows(path: str | Path, fields: Iterable[str], schema: AnswerSchema | Iterable[Hashable],
                   label_column: str = "label", keep_columns: bool = False,
                   empty_labels: str = "error") -> list[dict]:
    """Validated rows ``{id, <fields>, label}``; ``label`` is None where the file has no label column.

    Files without a label column (hidden test sets) are fine: those rows get predictions only.
    ``keep_columns`` keeps the file's other columns too (after the fields, before ``label``).
    """
    path, fields, schema = Path(path), tuple(fields), _as_schema(schema)
    table = read_table(path)
    if not table.rows:
        raise DataFileError(f"{path}: no rows")
    check_header(table, (*fields, "id", label_column))
    labelled = label_column in table.columns
    rows = labelled_rows(table.rows, label_column, str(path), empty_labels) if labelled else table.rows
    position = {lineno: i for i, (lineno, _) in enumerate(table.rows)}  # ids stay those of the file's rows
    out = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        require_columns(row, fields, where)
        for c in fields:
            if not isinstance(row[c], str) or not row[c].strip():
                raise DataFileError(f"{where}: column {c!r} is empty or not text")
        label = label_of(row[label_column], schema, where, label_column) if labelled else None
        extra = {c: v for c, v in row.items() if c not in (*fields, "id", label_column)} if keep_columns else {}
        out.append({"id": row_id(row.get("id"), position[lineno]),
                    **{c: row[c] for c in fields}, **extra, "label": label})
    return out


# --- ids and text cells ------------------------------------------------------------------------------

def row_id(value, position: int) -> str:
    """A row's id: its file's ``id`` cell, else its position (0-based), as every output keys its rows."""
    return str(value) if value not in (None, "") else str(position)


def claim_id(ids: dict[str, int], rid: str, where: str, lineno: int) -> None:
    """Record ``rid`` as read on ``lineno``; a second row with it is an error (outputs are keyed by id)."""
    if rid in ids:
        raise DataFileError(f"{where}: id {rid!r} again (first on line {ids[rid]}); ids must be unique: "
                            "the output is keyed by them")
    ids[rid] = lineno


def text_cell(row: dict, column: str, where: str, hint: str) -> str:
    """``row[column]``, which must be non-empty text; ``hint`` follows a missing column's error."""
    if column not in row:
        found = _variant(column, row)
        if found is not None:
            raise DataFileError(f"{where}: column {found!r}: did you mean {column!r}? Headers are matched exactly "
                                "(case and spaces count); rename the column")
        raise DataFileError(f"{where}: no column {column!r} (found {sorted(row)}); {hint}")
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(f"{where}: {column!r} is empty or not text")
    return value


def to_dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)
