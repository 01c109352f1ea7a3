"""Puzzle rows from a local CSV/JSONL file or a ``datasets`` dataset (hub id or local directory).

Every source becomes rows ``{id, premise, hypothesis, family, label}``: ``label`` is the task's
label id (None where the source has no gold label), ``family`` the puzzle family where the source
names it (None otherwise). Column names of the original puzzte release and of tasksource's NLI
format are read as ours (``COLUMNS``). Labels may be ids or names (any spelling the task's schema
accepts: "contradiction" and "ambiguity" are "not entailment" for the 2-way task); a ``ClassLabel``
column is read through its ``names``. Anything else is an error naming the source, the row and the
value.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path

import datasets

from harness_tasks.data_files import DataFileError, read_rows, row_id
from harness_tasks.schema import AnswerSchema

# our column -> the names it goes by, first match wins: ours, then puzzte's own release
# (puzzle_text, question, answer), tasksource's NLI format (sentence1/2, labels), other common ones
COLUMNS = {
    "premise": ("premise", "puzzle_text", "sentence1", "context"),
    "hypothesis": ("hypothesis", "question", "sentence2", "statement"),
    "label": ("label", "answer", "labels"),
    "family": ("family", "puzzle_type", "type", "category", "domain"),
}
TEXT = ("premise", "hypothesis")


def _column(found: Iterable[str], ours: str, label_column: str) -> str | None:
    names = (label_column, *COLUMNS["label"]) if ours == "label" else COLUMNS[ours]
    return next((c for c in names if c in found), None)


def _columns(found: list[str], label_column: str, where: str) -> dict[str, str | None]:
    columns = {ours: _column(found, ours, label_column) for ours in COLUMNS}
    missing = [f"{ours!r} (or {', '.join(COLUMNS[ours][1:])})" for ours in TEXT if columns[ours] is None]
    if missing:
        raise DataFileError(f"{where}: missing column(s) {' and '.join(missing)}; found {sorted(found)}")
    return columns


def _label(value, schema: AnswerSchema, where: str, column: str, names: list[str] | None = None) -> Hashable | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if names is not None:  # a ClassLabel id: its name is what means something to our schema
        if value == -1:  # datasets' "no label"
            return None
        if not isinstance(value, int) or not 0 <= value < len(names):
            raise DataFileError(f"{where}: {column}={value!r} is not an id of its ClassLabel names {names}")
        value = names[value]
    label = schema.to_label(value)
    if label is None:
        spellings = [f"{i} ({n})" for i, n in schema.labels.items()]
        raise DataFileError(f"{where}: {column}={value!r} is not a label of this task; use one of "
                            f"{', '.join(spellings)}")
    return label


def _row(raw: dict, columns: dict, schema: AnswerSchema, where: str, index: int, names=None,
         families=None) -> dict:
    for ours in TEXT:
        value = raw[columns[ours]]
        if not isinstance(value, str) or not value.strip():
            raise DataFileError(f"{where}: column {columns[ours]!r} is empty or not text")
    family = raw.get(columns["family"]) if columns["family"] else None
    if families is not None and isinstance(family, int) and 0 <= family < len(families):
        family = families[family]  # a ClassLabel family column
    rid = raw.get("id", raw.get("idx"))
    return {"id": row_id(rid, index),
            "premise": raw[columns["premise"]], "hypothesis": raw[columns["hypothesis"]],
            "family": str(family) if family not in (None, "") else None,
            "label": _label(raw.get(columns["label"]), schema, where, columns["label"], names)
            if columns["label"] else None}


def from_file(path: str | Path, schema: AnswerSchema, label_column: str = "label") -> list[dict]:
    """Rows of a ``.csv`` / ``.jsonl`` file; errors name the file and line."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    out = []
    for lineno, raw in rows:
        where = f"{path}:{lineno}"
        out.append(_row(raw, _columns(list(raw), label_column, where), schema, where, len(out)))
    return out


def from_dataset(name: str, split: str, schema: AnswerSchema, label_column: str = "label") -> list[dict]:
    """Rows of ``datasets.load_dataset(name, split=split)``: a hub id (e.g. tasksource/puzzte) or a
    local directory of data files; a directory written by ``save_to_disk`` is read with ``load_from_disk``."""
    where = f"dataset {name!r} (split {split!r})"
    try:
        saved = Path(name) / "state.json", Path(name) / "dataset_dict.json"  # save_to_disk: a Dataset, a DatasetDict
        if any(p.is_file() for p in saved):
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline hub, unknown split, unreadable files: one clear line
        cause = err.__cause__  # datasets wraps a bad file's own error in DatasetGenerationError
        why = f"{type(err).__name__}: {err}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        raise DataFileError(f"{where}: cannot be loaded: {why}") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataFileError(f"{where}: no such split; it has {sorted(ds)}")
        ds = ds[split]
    if len(ds) == 0:
        raise DataFileError(f"{where}: no rows")
    columns = _columns(ds.column_names, label_column, where)
    names, families = (_class_names(ds, columns[c]) for c in ("label", "family"))
    # rows are numbered from 1, like the lines of a file
    return [_row(raw, columns, schema, f"{where} row {i + 1}", i, names, families) for i, raw in enumerate(ds)]


def _class_names(ds: datasets.Dataset, column: str | None) -> list[str] | None:
    feature = ds.features.get(column) if column else None
    return feature.names if isinstance(feature, datasets.ClassLabel) else None
