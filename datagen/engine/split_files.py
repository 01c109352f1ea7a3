"""A folder of split files (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``) and the ``manifest.json``
that names them: how ``datagen synthetic`` and ``datagen puzzles`` write, as ``datagen tools`` does.

A folder, because a training config reads ``<dir>/train.jsonl`` and ``<dir>/dev.jsonl`` and the splits
of one run are made to fit together (people's names never cross splits). An earlier run's files are
refused unless ``force``; with it, a split this run does not write is removed, so that no file sits
beside a manifest that does not name it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from datagen.engine.cli_checks import UsageError, existing
from harness_tasks.manifest import git_commit, package_versions, sha256_file, write_atomic

SPLITS = ("train", "dev", "test")


def write_splits(out: Path, sizes: dict[str, int], generate: Callable[[str, int], list[dict]], *, command: str,
                 options: dict, force: bool, report: Callable[[list[dict]], dict] | None = None) -> dict[str, Path]:
    """Write ``generate(split, n)`` for each split with ``n > 0``; returns split -> path."""
    if not any(sizes.values()):
        raise UsageError(f"{', '.join(f'--{s} 0' for s in sizes)}: nothing to write; give a split some rows")
    found = existing(out, [*(f"{s}.jsonl" for s in SPLITS), "manifest.json"], force)
    rows = {split: generate(split, n) for split, n in sizes.items() if n > 0}  # all made before any write
    written = {split: write_atomic(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                   for r in split_rows))
               for split, split_rows in rows.items()}
    for path in found:
        if path.name != "manifest.json" and path.stem not in written:
            path.unlink()  # an earlier run's split this run has no rows for
    manifest = {"command": command, "options": options,
                "outputs": {f"{split}.jsonl": {"rows": len(rows[split]), "sha256": sha256_file(path),
                                               **(report(rows[split]) if report else {})}
                            for split, path in written.items()},
                "versions": package_versions(), "git": git_commit()}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return written
