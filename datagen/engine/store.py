"""Append-only JSONL output keyed by row id: what makes a generation run resumable.

Each finished row is appended as one line and flushed at once, so a killed run loses at most the
rows in flight. A kill in the middle of a write leaves a torn last line: it is cut off (with a
warning) the next time the file is opened. A last line that is a whole JSON object and lacks only its
newline (a file edited by hand, another tool's writer) is a row, not a torn one: it is kept and the
newline added. Later lines for an id supersede earlier ones (a retried failure, a redone row);
:meth:`compact` rewrites the file with one line per id, atomically. A lock file stops two runs from
writing the same output.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from harness_tasks.data_files import DataFileError
from harness_tasks.errors import UserError
from harness_tasks.manifest import write_atomic
from harness_tasks.tables import json_object


class OutputLockedError(UserError):
    pass


def row_key(row: dict) -> str:
    return str(row["id"])


def sidecar(out: str | Path, kind: str) -> Path:
    """A file that goes with an output: ``t.jsonl`` -> ``t.manifest.json``, ``t.batch.json``."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.{kind}.json")


class JsonlStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self.torn = 0  # bytes of a torn last line, cut off when opening
        self._lock = self._file = None

    def open(self) -> JsonlStore:
        """Lock the output, repair a torn tail, load every row; then rows can be appended."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire(self.path.with_name(self.path.name + ".lock"))
        try:
            if self.path.exists():
                self._repair(self._load())
        except BaseException:
            self.close()  # a file that is not ours (or not JSONL) leaves no lock behind
            raise
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self

    @classmethod
    def peek(cls, path: str | Path) -> JsonlStore:
        """The rows and torn tail that :meth:`open` would find in ``path``, read without locking or
        changing it (a dry run must see what a real run would)."""
        store = cls(path)
        if store.path.exists():
            store._load()
        return store

    def _load(self) -> bool:
        """Read the rows, leaving out a torn tail (measured in ``torn``); True if the last row lacks
        only its newline."""
        data = self.path.read_bytes()
        end, whole_but_newline = _intact(data)
        self.torn, self.rows = len(data) - end, _parse(data[:end], self.path)
        return whole_but_newline

    def _repair(self, whole_but_newline: bool) -> None:
        """Called after the rows were read, so that a file which is not an output stays as it was."""
        if whole_but_newline:
            with open(self.path, "ab") as f:
                f.write(b"\n")
        elif self.torn:
            os.truncate(self.path, self.path.stat().st_size - self.torn)

    def _acquire(self, lock_path: Path):
        """An exclusive lock on ``lock_path``, which the holder removes when it closes."""
        while True:
            lock = open(lock_path, "w")  # noqa: SIM115 - held until close()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise OutputLockedError(f"{self.path}: another run is writing this file; wait for it or stop "
                                        "it") from None
            try:
                if os.fstat(lock.fileno()).st_ino == os.stat(lock_path).st_ino:
                    return lock
            except FileNotFoundError:
                pass
            lock.close()  # we locked a file its holder had just removed: lock the current one

    @staticmethod
    def read(path: str | Path) -> dict[str, dict]:
        """id -> the latest row for it (a torn tail left out, as a run would leave it out)."""
        return JsonlStore.peek(path).rows

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.rows[row_key(row)] = row

    def discard(self, keys: list[str]) -> None:
        """Forget these rows; they leave the file at the next :meth:`compact`."""
        for key in keys:
            self.rows.pop(key, None)

    def compact(self, order: list[str]) -> None:
        """One line per id: ids in ``order`` first (the input's order), then any others."""
        self._file.flush()
        listed = set(order)
        keys = [k for k in order if k in self.rows] + [k for k in self.rows if k not in listed]
        write_atomic(self.path, "".join(json.dumps(self.rows[k], ensure_ascii=False) + "\n" for k in keys))
        self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - the renamed file is a new inode

    def close(self) -> None:
        if self._file:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if self._lock:
            Path(self._lock.name).unlink(missing_ok=True)  # removed while held: see _acquire
            self._lock.close()
        self._file = self._lock = None

    def __enter__(self) -> JsonlStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def _intact(data: bytes) -> tuple[int, bool]:
    """(bytes of ``data`` that hold whole rows, whether the last of them lacks only its newline).

    The text after the last newline is a torn write, unless it is a whole JSON object (kept) or blank.
    """
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    if not tail.strip():
        return len(data), False
    try:
        whole = isinstance(json.loads(tail), dict)
    except ValueError:  # JSONDecodeError, or a multi-byte character cut in two
        whole = False
    return (len(data), True) if whole else (cut, False)


def _parse(data: bytes, path: Path) -> dict[str, dict]:
    """id -> the latest row, from JSONL bytes; a line that is not a row with an id is named."""
    rows = {}
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        row = json_object(line, f"{path}:{lineno}")
        if "id" not in row:
            raise DataFileError(f"{path}:{lineno}: a row without an 'id'; was the file written by another tool?")
        rows[row_key(row)] = row
    return rows
