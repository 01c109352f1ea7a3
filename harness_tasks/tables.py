"""Read one tabular file (CSV, TSV, JSONL, Parquet) into numbered rows: the one reader of every input.

Eval's task loaders, datagen and the trainer all read through :func:`read_table`, so a file is read
the same way everywhere: UTF-8 only, a spreadsheet's byte-order mark dropped (else the first column
would be called ``\\ufeffid``), cells kept as written (headers and labels are checked by
``data_files``), and every failure one :class:`DataFileError` naming the file and the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness_tasks.errors import UserError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class DataFileError(UserError, ValueError):
    """A user's data file cannot be used: the message is one line that names the file (and line)."""


@dataclass
class Table:
    path: Path
    columns: list[str]
    """the header (CSV, TSV, Parquet) or every key in order of first appearance (JSONL)"""
    rows: list[tuple[int, dict]]
    """(line number, row); Parquet rows are numbered from 1"""
    first_line: dict[str, int] = field(default_factory=dict)
    """column -> the line it first appears on (1 for a header), for messages"""


def read_table(path: str | Path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _delimited(path, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".json"):
        return _jsonl(path)
    if suffix == ".parquet":
        return _parquet(path)
    raise DataFileError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .jsonl or .parquet; "
                        "from a spreadsheet, save as CSV UTF-8)")


def _text(path: Path) -> str:
    """The file as text: UTF-8, with or without a BOM. Anything else is refused, never guessed: a
    latin-1 file decoded as UTF-8 with replacements would change the text the model is shown."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 (byte {data[err.start]:#04x} in column {column}); save the "
                            "file as UTF-8 (in a spreadsheet: CSV UTF-8)") from None


def _delimited(path: Path, delimiter: str) -> Table:
    reader = csv.reader(io.StringIO(_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader, [])
        twice = next((c for i, c in enumerate(header) if c and c in header[:i]), None)
        if twice is not None:  # a dict keeps the last one: the other column would vanish unseen
            raise DataFileError(f"{path}:1: column {twice!r} appears twice in the header")
        rows = []
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) > len(header):
                raise DataFileError(f"{path}:{reader.line_num}: more cells than the header has columns")
            # a short row's missing cells are None, as csv.DictReader gives them: empty, never shifted
            rows.append((reader.line_num, dict(zip(header, cells + [None] * (len(header) - len(cells)), strict=True))))
    except csv.Error as err:
        raise DataFileError(f"{path}:{reader.line_num}: {err}") from None
    return Table(path, header, rows, {c: 1 for c in header})


def json_object(line: str | bytes, where: str, hint: str = "") -> dict:
    """One JSON Lines line as an object, or a DataFileError naming ``where`` (file:line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{where}: invalid JSON ({err.msg}, column {err.colno})") from None
    except UnicodeDecodeError:  # bytes that are not UTF-8
        raise DataFileError(f"{where}: not UTF-8 text") from None
    if not isinstance(row, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(row).__name__}{hint}")
    return row


def _jsonl(path: Path) -> Table:
    rows, first_line = [], {}
    # split on "\n" only: str.splitlines would also split at U+2028, which JSON strings may hold
    for lineno, line in enumerate(_text(path).split("\n"), 1):
        if not line.strip():
            continue
        row = json_object(line, f"{path}:{lineno}", " (one object per line: JSON Lines)")
        for key in row:
            first_line.setdefault(key, lineno)
        rows.append((lineno, row))
    return Table(path, list(first_line), rows, first_line)


def _parquet(path: Path) -> Table:
    import pyarrow.parquet as pq  # installed with datasets; only needed here

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - any reason a file is not Parquet is said in one line
        raise DataFileError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    columns = table.column_names
    return Table(path, columns, list(enumerate(table.to_pylist(), 1)), {c: 1 for c in columns})
