"""Append-only JSONL output keyed by row id: what makes a generation run resumable.

Each finished row is appended as one line and flushed at once, so a killed run loses at most the
rows in flight. A kill in the middle of a write leaves a torn last line: it is cut off (with a
warning) the next time the file is opened. Later lines for an id supersede earlier ones (a retried
failure, a redone row); :meth:`compact` rewrites the file with one line per id, atomically. A lock
file stops two runs from writing the same output.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from harness_tasks.data_files import DataFileError, read_rows
from harness_tasks.manifest import write_atomic


class OutputLockedError(Exception):
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
        self.torn = 0  # bytes of a torn last line cut off when opening
        self._lock = self._file = None

    def open(self) -> JsonlStore:
        """Lock the output, repair a torn tail, load every row; then rows can be appended."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire(self.path.with_name(self.path.name + ".lock"))
        if self.path.exists():
            self._repair_tail()
            self.rows = self.read(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self

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

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            self.torn = len(data) - cut
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    @staticmethod
    def read(path: str | Path) -> dict[str, dict]:
        """id -> the latest row for it."""
        rows = {}
        for lineno, row in read_rows(path):
            if "id" not in row:
                raise DataFileError(f"{path}:{lineno}: a row without an 'id'; was the file written by another tool?")
            rows[row_key(row)] = row
        return rows

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self.rows[row_key(row)] = row

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
