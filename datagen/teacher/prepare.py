"""``cotharness datagen prepare``: teacher thoughts (+ reflections) -> SFT files for the three ablations.

Reads the output of ``datagen thoughts`` (or the seed project's ``sample_thoughts.jsonl``) and the
reflections of ``datagen reflect`` (or the seed's ``sample_reflections.jsonl``), and writes
``out/<dir>/{train,dev}.jsonl`` with rows ``{id, <task fields>, thought_process, label, source}``,
which ``cotharness train`` reads as they are (``configs/train/abl_*.yaml``):

- ``correct_only``: the rows the teacher got right, with the gold label;
- ``correct_reflected``: those plus, for each wrong row, the reflected reasoning with the gold label;
- ``all``: every answered row as the teacher wrote it, its own label even when wrong (the seed's
  "unmodified" ablation).

Ablations are only comparable when scored on the same dev pairs, and a pair trained on must never
be scored: so rows are deduplicated on their task fields and the split is decided once, by a fixed
seed over the unique task-field tuples of all answered rows, before any ablation filters a row.
Statistics (``prepare_stats``) and a manifest of inputs and versions are written next to the data.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datagen.engine.cli_checks import existing, one_line, task_spec
from datagen.teacher import prepare_stats
from harness_tasks.data_files import DataFileError, read_rows, require_columns
from harness_tasks.errors import UserError
from harness_tasks.manifest import git_commit, package_versions, sha256_file, write_atomic
from harness_tasks.tasks import TaskSpec

# ablation -> folder; the folder names are what configs/train/abl_*.yaml read
ABLATIONS = {"correct": "correct_only", "reflected": "correct_reflected", "all": "all"}
# every file prepare writes: an earlier run's are refused without --force
OUTPUTS = ("manifest.json", "stats.json", "lengths.png",
           *(f"{folder}/{split}.jsonl" for folder in ABLATIONS.values() for split in ("train", "dev")))
# the trainer's default data.thought_column / data.label_column (trainer/config.py)
THOUGHT_COLUMN, LABEL_COLUMN = "thought_process", "label"


class PrepareError(UserError, ValueError):
    """A bad option or an inconsistent input: reported as one line."""


@dataclass
class Item:
    """One answered teacher row, as the ablations need it."""

    id: str
    fields: dict  # the task fields as written
    key: tuple[str, ...]  # the same, whitespace-normalised: the identity for dedup and the split
    thought: str
    predicted: Hashable
    gold: Hashable | None
    score: float | None  # judge_score of the score stage, if any
    reflection: str | None = None  # a usable reflected thought (reaches the gold label)
    no_reflection: str = "wrong_no_reflection"  # why there is none, as counted in the statistics


def _key(row: dict, fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(" ".join(row[f].split()) for f in fields)


def _meta(row: dict, stage: str) -> dict:
    meta = row.get("meta")
    out = meta.get(stage) if isinstance(meta, dict) else None
    return out if isinstance(out, dict) else {}


def _check_columns(row: dict, needed: tuple[str, ...], task: TaskSpec, where: str, hint: str) -> None:
    require_columns(row, needed, where, hint)  # the shared rule: names a likely typo
    for f in task.fields:
        if not isinstance(row[f], str) or not row[f].strip():
            raise DataFileError(f"{where}: column {f!r} is empty or not text")


def _gold(row: dict, task: TaskSpec, where: str) -> Hashable | None:
    for column in ("true_label", "label"):
        if row.get(column) not in (None, ""):
            gold = task.schema.to_label(row[column])
            if gold is None:
                raise DataFileError(f"{where}: {column}={row[column]!r} is not one of {list(task.schema.labels)}")
            return gold
    return None


@dataclass
class Thoughts:
    items: list[Item]  # the answered rows
    failed: int
    index: dict[str, tuple[str, tuple]]  # id -> (file:line, key) of every row, failed ones too
    inline_reflections: bool  # the rows carry the reflect stage's fields themselves


def read_thoughts(path: Path, task: TaskSpec) -> Thoughts:
    """The rows of a thoughts file (this project's or the seed's format); failed answers only counted."""
    s = task.schema
    rows = read_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    out = Thoughts([], 0, {}, any(_improved(task) in row for _, row in rows))
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        _check_columns(row, ("id", *task.fields, s.thought_key, s.label_key), task, where,
                       "prepare reads the output of `cotharness datagen thoughts`")
        rid = str(row["id"])
        if rid in out.index:
            raise DataFileError(f"{where}: id {row['id']!r} again (first at {out.index[rid][0]})")
        out.index[rid] = (where, _key(row, task.fields))
        thought, predicted = row[s.thought_key], s.to_label(row[s.label_key])
        if _meta(row, "thoughts").get("status") == "failed" or not isinstance(thought, str) \
                or not thought.strip() or predicted is None:
            out.failed += 1  # the teacher gave no valid answer: nothing to train on
            continue
        score = row.get("judge_score")
        item = Item(rid, {f: row[f] for f in task.fields}, out.index[rid][1], thought, predicted,
                    _gold(row, task, where), score if isinstance(score, int | float) and not isinstance(score, bool) else None)
        if _improved(task) in row:
            _set_reflection(item, row, task, label_is_reflections=False)
        out.items.append(item)
    return out


def _improved(task: TaskSpec) -> str:
    return f"improved_{task.schema.thought_key}"  # the reflect stage's field (datagen/teacher/stages.py)


def _set_reflection(item: Item, row: dict, task: TaskSpec, label_is_reflections: bool) -> None:
    text = row.get(_improved(task))
    if _meta(row, "reflect").get("status") == "failed" or not isinstance(text, str) or not text.strip():
        item.reflection, item.no_reflection = None, "wrong_reflection_failed"
    # The seed's reflection rows carry the label the reflection reached as predicted_label; one that
    # still disagrees with gold argues for the wrong answer and would teach a contradiction.
    elif label_is_reflections and task.schema.to_label(row.get(task.schema.label_key)) not in (None, item.gold):
        item.reflection, item.no_reflection = None, "wrong_reflection_not_gold"
    else:
        item.reflection = text


def read_reflections(path: Path, thoughts_path: Path, thoughts: Thoughts, task: TaskSpec) -> int:
    """Attach the reflections of ``path`` to the wrong items (joined on str(id)); returns its row count."""
    rows = read_rows(path)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    by_id, seen = {item.id: item for item in thoughts.items}, {}
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        _check_columns(row, ("id", *task.fields, _improved(task)), task, where,
                       "--reflections reads the output of `cotharness datagen reflect`")
        rid = str(row["id"])
        if rid in seen:
            raise DataFileError(f"{where}: id {row['id']!r} again (first on line {seen[rid]})")
        seen[rid] = lineno
        if rid not in thoughts.index:
            raise DataFileError(f"{where}: id {row['id']!r} is not in {thoughts_path}")
        if _key(row, task.fields) != thoughts.index[rid][1]:
            raise DataFileError(f"{where}: {'/'.join(task.fields)} of id {row['id']!r} differ from those at "
                                f"{thoughts.index[rid][0]}")
        item = by_id.get(rid)
        if item is not None and item.gold is not None and item.predicted != item.gold:
            # this project's reflect rows keep the teacher's label (and have meta.reflect); the seed's
            # rows hold the label the reflection reached
            _set_reflection(item, row, task, label_is_reflections=not _meta(row, "reflect"))
    return len(rows)


def deduplicate(items: list[Item]) -> tuple[list[Item], int, int]:
    """(first copy of each task-field tuple, duplicates dropped, rows dropped as conflicting gold)."""
    groups: dict[tuple, list[Item]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    kept, duplicates, conflicts = [], 0, 0
    for copies in groups.values():
        if len({c.gold for c in copies if c.gold is not None}) > 1:
            conflicts += len(copies)  # no way to tell which gold is right: train on neither
            continue
        kept.append(copies[0])
        duplicates += len(copies) - 1
    return kept, duplicates, conflicts


def dev_keys(keys, dev_fraction: float, seed: int) -> set[tuple]:
    """The dev pairs: sorted, shuffled by ``seed``, the first round(dev_fraction * n); >= 1 train pair."""
    keys = sorted(set(keys))  # sorted first: the split must not depend on the row order
    random.Random(seed).shuffle(keys)
    n = round(dev_fraction * len(keys))
    if dev_fraction > 0 and len(keys) >= 2:
        n = max(n, 1)
    return set(keys[:min(n, max(len(keys) - 1, 0))])


def select(item: Item, ablation: str, min_score: int | None) -> tuple[dict | None, str | None]:
    """(SFT row, None) or (None, why ``ablation`` leaves the item out)."""
    def row(thought, label, source):
        return {"id": item.id, **item.fields, THOUGHT_COLUMN: thought, LABEL_COLUMN: label, "source": source}

    # a low judge score condemns the teacher's thought; a reflected thought was rewritten, so it stays
    low = min_score is not None and item.score is not None and item.score < min_score
    if ablation == "all":
        return (None, "below_min_score") if low else (row(item.thought, item.predicted, "teacher"), None)
    if item.gold is None:
        return None, "no_gold"
    if item.predicted == item.gold:
        return (None, "below_min_score") if low else (row(item.thought, item.gold, "teacher"), None)
    if ablation == "correct":
        return None, "wrong"
    if item.reflection is None:
        return None, item.no_reflection
    return row(item.reflection, item.gold, "reflected"), None


def build(items: list[Item], min_score: int | None, dev: set[tuple]) -> dict[str, dict]:
    """Per ablation (all three, always): ``splits`` {train, dev: [SFT row]}, ``left_out`` {reason: n}."""
    out = {}
    for ablation in ABLATIONS:
        splits, left_out = {"train": [], "dev": []}, Counter()
        for item in items:
            row, reason = select(item, ablation, min_score)
            if row is None:
                left_out[reason] += 1
            else:
                splits["dev" if item.key in dev else "train"].append(row)
        out[ablation] = {"splits": splits, "left_out": dict(sorted(left_out.items()))}
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    if not rows:  # written all the same, so no stale file of an earlier run is left in its place
        prepare_stats.warn(f"{path} is empty: `cotharness train` refuses it (more rows or another --dev-fraction)")
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _check_options(ablations: list[str], dev_fraction: float, min_score: int | None, max_length: int | None) -> None:
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown or not ablations:
        raise PrepareError(f"--ablation: {unknown or 'none given'}; choose from {', '.join(ABLATIONS)}")
    if not 0 <= dev_fraction < 1:
        raise PrepareError(f"--dev-fraction must be at least 0 and below 1, got {dev_fraction}")
    if min_score is not None and not 1 <= min_score <= 5:
        raise PrepareError(f"--min-score must be a judge score, 1 to 5, got {min_score}")
    if max_length is not None and max_length < 1:
        raise PrepareError(f"--max-length must be a positive number of tokens, got {max_length}")


def _check_inputs(thoughts_path: Path, thoughts: Thoughts, ablations: list[str], reflections: Path | None,
                  min_score: int | None) -> None:
    if "reflected" in ablations and reflections is None and not thoughts.inline_reflections:
        raise PrepareError(f"--ablation reflected needs --reflections FILE (the output of `cotharness datagen "
                           f"reflect`): the rows of {thoughts_path} carry no reflections")
    if min_score is not None and all(item.score is None for item in thoughts.items):
        raise PrepareError(f"--min-score: no row of {thoughts_path} has a judge_score; run `cotharness datagen "
                           "score` on it first")


@dataclass
class PrepareRun:
    """The settings of one ``cotharness datagen prepare`` (its options, by the same names)."""

    thoughts: Path
    out: Path = Path("data/sft")
    reflections: Path | None = None
    ablations: list[str] = field(default_factory=lambda: list(ABLATIONS))
    task: str = "nli_cot"
    dev_fraction: float = 0.1
    seed: int = 0
    min_score: int | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    train_config: Path | None = Path("configs/train/default.yaml")
    force: bool = False


@dataclass(frozen=True)
class PrepareResult:
    """What prepare wrote: ``files[ablation][split]`` (ablation as in ``PrepareRun.ablations``, split
    train/dev), ``stats.json``, ``lengths.png`` (None when there were no lengths to plot), the manifest."""

    out: Path
    files: dict[str, dict[str, Path]]
    stats_json: Path
    lengths_png: Path | None
    manifest: Path
    stats: dict


def prepare(thoughts: Path, out: Path, *, reflections: Path | None = None,
            ablations: list[str] = ["correct", "reflected", "all"],  # noqa: B006 (never mutated)
            task: str = "nli_cot", dev_fraction: float = 0.1, seed: int = 0, min_score: int | None = None,
            tokenizer: str | None = None, max_length: int | None = None,
            train_config: Path | None = Path("configs/train/default.yaml"), force: bool = False) -> dict:
    """``run(PrepareRun(...))`` by keywords; returns the statistics."""
    return run(PrepareRun(**locals())).stats


def run(cfg: PrepareRun) -> PrepareResult:
    """Write ``out/<dir>/{train,dev}.jsonl`` for ``ablations``, stats.json, lengths.png, manifest.json.

    An earlier run's files in ``out`` are refused unless ``force``; with it, the files of the ablations
    this run does not write are removed, so that no folder sits beside a manifest that does not name it.
    The statistics are also printed. Raises DataFileError / PrepareError on a user's mistake.
    """
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "force"}
    thoughts, out, reflections, ablations = Path(cfg.thoughts), Path(cfg.out), cfg.reflections, cfg.ablations
    task, dev_fraction, seed, min_score = cfg.task, cfg.dev_fraction, cfg.seed, cfg.min_score
    _check_options(ablations, dev_fraction, min_score, cfg.max_length)
    earlier = existing(out, OUTPUTS, cfg.force)
    spec = task_spec(task)
    lengths = prepare_stats.LengthSettings.resolve(cfg.tokenizer, cfg.max_length, cfg.train_config)  # before any write
    read = read_thoughts(thoughts, spec)
    _check_inputs(thoughts, read, ablations, reflections, min_score)
    reflection_rows = read_reflections(Path(reflections), thoughts, read, spec) if reflections else None
    unique, duplicates, conflicts = deduplicate(read.items)
    # decided once, over every answered pair, before any ablation filters: the same dev pairs everywhere
    pairs = {item.key for item in read.items}
    dev = dev_keys(pairs, dev_fraction, seed)
    built = build(unique, min_score, dev)
    _remove(out, earlier, ablations)
    files = {a: {split: _write_jsonl(out / ABLATIONS[a] / f"{split}.jsonl", rows)
                 for split, rows in built[a]["splits"].items()} for a in ablations}
    written = [p for by_split in files.values() for p in by_split.values()]
    stats = {"task": task,
             "rows": {"input": len(read.index), "failed": read.failed, "duplicates": duplicates,
                      "conflicts": conflicts, "answered_unique": len(unique),
                      "without_gold": sum(item.gold is None for item in unique)},
             "reflections": {"rows": reflection_rows, "from": str(reflections) if reflections else
                             "thought rows" if read.inline_reflections else None},
             "split": {"seed": seed, "dev_fraction": dev_fraction, "pairs": len(pairs), "dev_pairs": len(dev)},
             "min_score": min_score,
             **prepare_stats.teacher(spec, unique),
             "ablations": prepare_stats.ablations(spec, built, ablations, ABLATIONS)}
    examples = {a: [(spec.prompt(r), spec.answer(r[THOUGHT_COLUMN], r[LABEL_COLUMN]))
                    for rows in result["splits"].values() for r in rows] for a, result in built.items()}
    reported = prepare_stats.report(stats, spec, lengths, examples, out)
    written += reported
    _write_manifest(out, options, {"thoughts": thoughts, "reflections": reflections,
                                   "train_config": lengths.config}, written)
    return PrepareResult(out=out, files=files, stats_json=reported[0],
                         lengths_png=next((p for p in reported if p.suffix == ".png"), None),
                         manifest=out / "manifest.json", stats=stats)


def _remove(out: Path, earlier: list[Path], ablations: list[str]) -> None:
    """With ``force``: the earlier run's files of the ablations not written now (those written now are
    replaced file by file), and their folders once empty; only names prepare writes, never anything else."""
    keep = {ABLATIONS[a] for a in ablations}
    for path in earlier:
        if path.name == "lengths.png" or (path.parent != out and path.parent.name not in keep):
            path.unlink()  # lengths.png too: it is drawn again only when there are lengths to plot
            if path.parent != out and not any(path.parent.iterdir()):
                path.parent.rmdir()


def _write_manifest(out: Path, options: dict, inputs: dict[str, Path | None], written: list[Path]) -> None:
    """How the files were made: inputs with hashes, options, versions (never secrets)."""
    manifest = {
        "command": "cotharness datagen prepare",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in inputs.items()
                   if p is not None and Path(p).is_file()},
        "options": options,
        "outputs": {str(p.relative_to(out)): sha256_file(p) for p in written},
        "versions": package_versions(),
        "git": git_commit(),
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")


# --- the typer command (registered as `cotharness datagen prepare` in datagen/cli.py) --------------

class Ablation(str, Enum):
    correct = "correct"
    reflected = "reflected"
    all = "all"


def command(
    thoughts: Annotated[Path, typer.Option(help="Output of `cotharness datagen thoughts` (or the seed's "
                                                "sample_thoughts.jsonl).")],
    out: Annotated[Path, typer.Option(help="Directory for <ablation>/{train,dev}.jsonl, stats.json, "
                                           "lengths.png, manifest.json.")] = Path("data/sft"),
    reflections: Annotated[Path | None, typer.Option(help="Output of `cotharness datagen reflect` (or the "
                                                          "seed's sample_reflections.jsonl).")] = None,
    ablation: Annotated[list[Ablation] | None, typer.Option(
        help="Ablation to write (repeatable): correct -> correct_only/, reflected -> correct_reflected/, "
             "all -> all/. Default: all three.")] = None,
    task: Annotated[str, typer.Option(help="Task folder under harness_tasks/ (fields and answer schema).")]
    = "nli_cot",
    dev_fraction: Annotated[float, typer.Option(min=0, max=0.99, help="Share of premise/hypothesis pairs in "
                                                                      "dev.jsonl.")] = 0.1,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the train/dev split (same seed, same files).")] = 0,
    min_score: Annotated[int | None, typer.Option(min=1, max=5, help="Drop teacher rows with a judge_score below "
                                                                     "this (needs `datagen score` output).")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer for the length statistics (hub id or local "
                                                       "dir; default: the train config's base_model).")] = None,
    max_length: Annotated[int | None, typer.Option(min=1, help="Token limit of the trainer (default: the train "
                                                              "config's data.max_length).")] = None,
    train_config: Annotated[Path, typer.Option(help="Training config whose base_model and data.max_length "
                                                    "the length statistics use.")]
    = Path("configs/train/default.yaml"),
    force: Annotated[bool, typer.Option(help="Replace an earlier run's files in --out, and remove those of the "
                                             "ablations not written now (refused without it).")] = False,
):
    """Build the SFT files of the ablations (correct_only, correct_reflected, all) with a fixed-seed split."""
    with one_line("each file is either complete or untouched; rerun with --force"):
        run(PrepareRun(thoughts, out, reflections=reflections, ablations=[a.value for a in ablation or list(Ablation)],
                       task=task, dev_fraction=dev_fraction, seed=seed, min_score=min_score, tokenizer=tokenizer,
                       max_length=max_length, train_config=train_config, force=force))
