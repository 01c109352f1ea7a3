"""What every artefact records about how it was made: versions, commit, hashes. Never secrets."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "lm_eval",
            "tokenizers", "cotharness")


def package_versions(*extra: str) -> dict[str, str | None]:
    """Python's and the pinned packages' versions (and those of ``extra`` distributions); None where absent."""
    out = {"python": platform.python_version()}
    for name in (*PACKAGES, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: Path | None = None) -> dict[str, str | bool | None]:
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty if commit else None}


def write_atomic(path: str | Path, text: str) -> Path:
    """Write-then-rename: a killed process never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_csv_atomic(path: str | Path, rows: list[dict], fieldnames: list[str]) -> Path:
    """``rows`` as CSV with a header, written atomically (see ``write_atomic``)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, text.getvalue())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
