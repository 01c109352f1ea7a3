"""The first step of instruction backtranslation (Humpback): seed (instruction, response) pairs as
training data for the backward model, which learns to write the instruction for a response.

Rows are ``{id, instruction, response}``: ``cotharness train`` with ``data.task: backward``
(``configs/train/backward.yaml``) renders the response into the ``backward`` prompt and trains on the
instruction (+ EOS), the same prompt ``datagen backtranslate augment`` sends the trained model. The
file is checked first (missing columns, empty cells, repeated ids: errors naming file:line), repeated
pairs are left out and reported, and the dev split is drawn over distinct responses, so a response
with two instructions never has one in each split.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import prompts
from harness_tasks import manifest
from harness_tasks.data_files import DataFileError, claim_id, read_rows, row_id, text_cell
from harness_tasks.tasks import get_task

TASK = "backward"


@dataclass
class Inverted:
    train: list[dict]
    dev: list[dict]
    duplicates: list[tuple[int, int]]
    """(line, line of the first occurrence) of each repeated pair, left out"""
    read: int


def read_pairs(path: Path, instruction_column: str, response_column: str) -> tuple[list[dict], list, int]:
    """``{id, instruction, response}`` rows, the left-out repeats, and the number of rows read."""
    pairs, ids, seen, duplicates = [], {}, {}, []
    rows = read_rows(path)
    for index, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        instruction = text_cell(row, instruction_column, where, "name it with --instruction-column").strip()
        response = text_cell(row, response_column, where, "name it with --response-column").strip()
        rid = row_id(row.get("id"), index)
        claim_id(ids, rid, where, lineno)
        key = (" ".join(instruction.split()), " ".join(response.split()))
        if key in seen:
            duplicates.append((lineno, seen[key]))
            continue
        seen[key] = lineno
        pairs.append({"id": rid, "instruction": instruction, "response": response})
    if not pairs:
        raise DataFileError(f"{path}: no rows")
    return pairs, duplicates, len(rows)


def split(pairs: list[dict], dev_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, dev) in input order; dev holds ``dev_fraction`` of the distinct responses (at least one
    when there are two or more), drawn with ``seed``."""
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(" ".join(pair["response"].split()), []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_dev = min(len(keys) - 1, max(1, round(dev_fraction * len(keys)))) if dev_fraction > 0 else 0
    dev = {i for key in keys[:n_dev] for i in groups[key]}
    return [p for i, p in enumerate(pairs) if i not in dev], [p for i, p in enumerate(pairs) if i in dev]


def invert(input: Path, out: Path, instruction_column: str = "instruction", response_column: str = "response",
           dev_fraction: float = 0.05, seed: int = 0, force: bool = False) -> Inverted:
    """Write ``out/train.jsonl``, ``out/dev.jsonl`` and ``out/manifest.json``; each file is written whole
    (write, then rename), so a killed run leaves the previous version or the new one."""
    if not 0 <= dev_fraction < 1:
        raise DataFileError(f"--dev-fraction {dev_fraction}: must be at least 0 and below 1")
    from datagen.engine.cli_checks import existing

    existing(out, ("train.jsonl", "dev.jsonl", "manifest.json"), force)
    pairs, duplicates, n_read = read_pairs(input, instruction_column, response_column)
    train, dev = split(pairs, dev_fraction, seed)
    files = {"train": train, "dev": dev} if dev else {"train": train}
    for name, rows in files.items():
        manifest.write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if not dev:
        (out / "dev.jsonl").unlink(missing_ok=True)  # an earlier run's dev split is not this one's
    task = get_task(TASK)
    data = {
        "step": "backtranslate inverse", "task": TASK,
        "prompt_template": {"name": task.template, "sha256": prompts.template_hash(task.template)},
        "input": {"path": str(input), "sha256": manifest.sha256_file(input), "rows": n_read,
                  "columns": {"instruction": instruction_column, "response": response_column}},
        "duplicates_left_out": [{"line": line, "first_on_line": first} for line, first in duplicates],
        "split": {"dev_fraction": dev_fraction, "seed": seed, "by": "distinct response"},
        "output": {name: {"path": str(out / f"{name}.jsonl"), "rows": len(rows)} for name, rows in files.items()},
        "versions": manifest.package_versions(), "git": manifest.git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest.write_atomic(out / "manifest.json", json.dumps(data, indent=2))
    return Inverted(train, dev, duplicates, n_read)
