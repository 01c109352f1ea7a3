"""Puzzle rows from a local CSV/JSONL file or a ``datasets`` dataset (hub id or local directory).

Every source becomes rows ``{id, premise, hypothesis, family, label}``: ``label`` is the task's
label id (None where the source has no gold label), ``family`` the puzzle family where the source
names it (None otherwise). Column names of the original puzzte release and of tasksource's NLI
format are read as ours (``COLUMNS``). Labels may be ids or names (any spelling the task's schema
accepts: "contradiction" and "ambiguity" are "not entailment" for the 2-way task); a ``ClassLabel``
column is read through its ``names``. Anything else is an error naming the source, the row and the
value; so are empty labels in a labelled source, unless ``empty_labels="skip"`` (``data_files``).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable
from pathlib import Path

import datasets

from harness_tasks.data_files import (
    DataFileError,
    Table,
    check_header,
    is_empty,
    label_of,
    labelled_rows,
    read_table,
    row_id,
)
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


def _checked(label_column: str) -> tuple:
    """The column groups whose near misses are errors (``data_files.check_header``): the texts, the
    label and the id; not ``family``, which only labels a breakdown."""
    return (*(COLUMNS[ours] for ours in TEXT), (label_column, *COLUMNS["label"]), ("id", "idx"))


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
    return label_of(value, schema, where, column)


def _unlabelled(names: list[str] | None):
    """Whether a label cell is empty; -1 is "no label" in a ClassLabel column."""
    return lambda value: is_empty(value) or (names is not None and value == -1)


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


def from_file(path: str | Path, schema: AnswerSchema, label_column: str = "label",
              empty_labels: str = "error") -> list[dict]:
    """Rows of a data file (``data_files``' rules: exact headers, empty labels); errors name the file and line."""
    path = Path(path)
    table = read_table(path)
    if not table.rows:
        raise DataFileError(f"{path}: no rows")
    check_header(table, _checked(label_column))
    label = _column(table.columns, "label", label_column)
    rows = labelled_rows(table.rows, label, str(path), empty_labels) if label else table.rows
    position = {lineno: i for i, (lineno, _) in enumerate(table.rows)}
    out = []
    for lineno, raw in rows:
        where = f"{path}:{lineno}"
        out.append(_row(raw, _columns(list(raw), label_column, where), schema, where, position[lineno]))
    return out


def from_dataset(name: str, split: str, schema: AnswerSchema, label_column: str = "label",
                 empty_labels: str = "error") -> list[dict]:
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
    check_header(Table(Path(name), ds.column_names, []), _checked(label_column), where)
    columns = _columns(ds.column_names, label_column, where)
    names, families = (_class_names(ds, columns[c]) for c in ("label", "family"))
    rows = list(enumerate(ds, 1))  # rows are numbered from 1, like the lines of a file
    if columns["label"] and all(_unlabelled(names)(raw[columns["label"]]) for _, raw in rows):
        # a hidden test split (every label -1, datasets' "no label"): its column cannot be removed
        print(f"{where}: no gold labels in {columns['label']!r}: predictions only", file=sys.stderr)
        columns["label"] = None
    if columns["label"]:
        rows = labelled_rows(rows, columns["label"], where, empty_labels, _unlabelled(names), unit="row")
    return [_row(raw, columns, schema, f"{where} row {i}", i - 1, names, families) for i, raw in rows]


def _class_names(ds: datasets.Dataset, column: str | None) -> list[str] | None:
    feature = ds.features.get(column) if column else None
    return feature.names if isinstance(feature, datasets.ClassLabel) else None
