"""Read task data files (CSV or JSONL) with errors that name the file, line and column."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

import datasets


class DataFileError(ValueError):
    pass


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` pairs of a ``.csv`` or ``.jsonl`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = []
            for row in reader:
                if None in row:  # more cells than the header has columns
                    raise DataFileError(f"{path}:{reader.line_num}: more cells than the header has columns")
                rows.append((reader.line_num, row))
            return rows
    if suffix in {".jsonl", ".json"}:
        rows = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFileError(f"{path}:{lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
                if not isinstance(row, dict):
                    raise DataFileError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                rows.append((lineno, row))
        return rows
    raise DataFileError(f"{path}: unsupported file type {suffix!r} (use .csv or .jsonl)")


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
        raise DataFileError(f"{where}: no column {column!r} (found {sorted(row)}); {hint}")
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(f"{where}: {column!r} is empty or not text")
    return value


def load_task_rows(path: str | Path, fields: Iterable[str], labels: Iterable[Hashable],
                   label_column: str = "label", keep_columns: bool = False,
                   to_label: Callable[[object], Hashable | None] | None = None) -> list[dict]:
    """Validated rows ``{id, <fields>, label}``; ``label`` is None where the file has none.

    Files without a label column (hidden test sets) are fine: those rows get predictions only.
    ``keep_columns`` keeps the file's other columns too (after the fields, before ``label``).
    ``to_label`` (a schema's ``to_label``) also reads label names and synonyms, e.g. a puzzle file's
    "contradiction"; without it a label must be written as one of the ids in ``labels``.
    """
    path, fields, labels = Path(path), tuple(fields), list(labels)
    rows = read_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    out = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        missing = [c for c in fields if c not in row]
        if missing:
            raise DataFileError(f"{where}: missing column(s) {missing}; found {sorted(row)}")
        for c in fields:
            if not isinstance(row[c], str) or not row[c].strip():
                raise DataFileError(f"{where}: column {c!r} is empty or not text")
        label = None
        if row.get(label_column) not in (None, ""):
            label = to_label(row[label_column]) if to_label else \
                next((lb for lb in labels if str(row[label_column]).strip() == str(lb)), None)
            if label is None:
                raise DataFileError(f"{where}: {label_column}={row[label_column]!r} is not one of {labels}")
        extra = {c: v for c, v in row.items() if c not in (*fields, "id", label_column)} if keep_columns else {}
        out.append({"id": row_id(row.get("id"), len(out)),
                    **{c: row[c] for c in fields}, **extra, "label": label})
    return out


def to_dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)
