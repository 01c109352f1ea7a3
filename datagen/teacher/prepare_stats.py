"""Statistics of ``datagen prepare``: teacher quality, label balance, what each ablation keeps, token lengths.

Lengths are counted as the trainer will see each row (trainer/data.py): the task prompt, the JSON
answer and the EOS token, tokenized by the training tokenizer (which adds BOS itself). A row over
the trainer's ``data.max_length`` is dropped at training time, so the count over it is reported
here, before any GPU time is spent.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness_tasks import metrics
from harness_tasks.data_files import DataFileError
from harness_tasks.manifest import write_atomic
from harness_tasks.tasks import TaskSpec
from harness_tasks.yaml_files import YamlFileError, read_yaml

# the trainer's defaults (trainer/config.py) for a config that does not set them
TRAINER_BASE_MODEL, TRAINER_MAX_LENGTH = "mistralai/Mistral-7B-v0.3", 1024


def _counts(labels, task: TaskSpec) -> dict[str, int]:
    found = Counter(labels)
    return {str(label): found[label] for label in task.schema.labels}


def teacher(task: TaskSpec, items) -> dict:
    """Gold label balance and the teacher's accuracy / precision / recall / F1 against gold."""
    pairs = [(item.gold, item.predicted) for item in items if item.gold is not None]
    out = {"gold_labels": _counts([g for g, _ in pairs], task)}
    confusion = {str(g): _counts([p for gg, p in pairs if gg == g], task) for g in task.schema.labels}
    result = {"rows": len(pairs), "accuracy": sum(g == p for g, p in pairs) / len(pairs) if pairs else None,
              "confusion": confusion}
    positive = task.schema.positive
    if positive is not None:
        flags = [(p == positive, g == positive) for g, p in pairs]
        result.update(positive=positive, precision=metrics.precision(flags), recall=metrics.recall(flags),
                      f1=metrics.f1(flags), tp=sum(p and g for p, g in flags),
                      fp=sum(p and not g for p, g in flags), fn=sum(g and not p for p, g in flags),
                      tn=sum(not p and not g for p, g in flags))
    return {**out, "teacher": result}


def ablations(task: TaskSpec, built: dict, written: list[str], dirs: dict[str, str]) -> dict:
    out = {}
    for name, result in built.items():
        splits = result["splits"]
        rows = splits["train"] + splits["dev"]
        out[name] = {"dir": dirs[name], "written": name in written, "rows": len(rows),
                     **{split: len(split_rows) for split, split_rows in splits.items()},
                     "sources": dict(sorted(Counter(r["source"] for r in rows).items())),
                     "left_out": result["left_out"],
                     "labels": {split: _counts([r["label"] for r in split_rows], task)
                                for split, split_rows in splits.items()}}
    return out


# --- token lengths -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LengthSettings:
    tokenizer: str | None  # None: no tokenizer named anywhere (``why`` says so)
    max_length: int
    config: Path | None  # the training config these came from, if one was read
    why: str | None = None

    @classmethod
    def resolve(cls, tokenizer: str | None, max_length: int | None, train_config: Path | None) -> LengthSettings:
        """The options, else what the training config names (a broken config is an error, a missing one not:
        the default path only exists inside the repository)."""
        config, used = {}, None
        if (tokenizer is None or max_length is None) and train_config is not None and Path(train_config).is_file():
            try:
                config, used = read_yaml(train_config), Path(train_config)
            except YamlFileError as err:
                raise DataFileError(str(err)) from None
        model, data = config.get("model") or {}, config.get("data") or {}
        if tokenizer is None and config:
            tokenizer = model.get("base_model", TRAINER_BASE_MODEL)
        where = "no --train-config" if train_config is None else f"no training config at {train_config}"
        return cls(tokenizer, max_length or data.get("max_length", TRAINER_MAX_LENGTH), used,
                   None if tokenizer else f"no --tokenizer, and {where}")


def warn(message: str) -> None:
    Console(stderr=True).print(f"[yellow]{message}", highlight=False, soft_wrap=True)


def load_tokenizer(name: str):
    """(tokenizer, None) or (None, why not): offline, gated, not a tokenizer... all mean 'no lengths'."""
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the reason is reported in one line below, not as a log dump
        return AutoTokenizer.from_pretrained(name), None
    except Exception as err:  # noqa: BLE001 (any failure to load is reported the same way)
        text = str(err).strip().splitlines()
        return None, f"cannot load tokenizer {name!r}: {type(err).__name__}: {text[0][:160] if text else ''}"


def summary(lengths: list[int], max_length: int) -> dict:
    """The trainer's LengthReport.summary figures (trainer/data.py)."""
    ls = sorted(lengths)
    if not ls:
        return {"rows": 0, "over_max_length": 0, "tokens_min": None, "tokens_median": None,
                "tokens_p95": None, "tokens_max": None}
    return {"rows": len(ls), "over_max_length": sum(n > max_length for n in ls), "tokens_min": ls[0],
            "tokens_median": statistics.median(ls), "tokens_p95": ls[min(len(ls) - 1, int(0.95 * len(ls)))],
            "tokens_max": ls[-1]}


def lengths(examples: dict[str, list[tuple[str, str]]], settings: LengthSettings) -> tuple[dict, dict]:
    """({"lengths": ...} or {"lengths": None, "lengths_skipped": why}, raw lengths per ablation).

    ``examples``: per ablation, (prompt, answer) of each row, EOS not yet appended.
    """
    tok, why = load_tokenizer(settings.tokenizer) if settings.tokenizer else (None, settings.why)
    if tok is None:
        warn(f"token lengths skipped: {why}; pass --tokenizer DIR (a local copy of the training tokenizer) "
             "to count them")
        return {"lengths": None, "lengths_skipped": why}, {}
    eos = tok.eos_token or ""
    texts = sorted({p + a + eos for rows in examples.values() for p, a in rows})  # each text once
    count = dict(zip(texts, (len(ids) for ids in tok(texts).input_ids), strict=True)) if texts else {}
    raw = {abl: [count[p + a + eos] for p, a in rows] for abl, rows in examples.items()}
    return {"lengths": {"tokenizer": settings.tokenizer, "max_length": settings.max_length, "eos_token": tok.eos_token,
                        "ablations": {a: summary(ls, settings.max_length) for a, ls in raw.items()}}}, raw


def report(stats: dict, task: TaskSpec, settings: LengthSettings, examples: dict, out: Path) -> list[Path]:
    """Add the token lengths to ``stats``, write stats.json (and lengths.png), print the tables."""
    found, raw = lengths(examples, settings)
    stats.update(found)
    written = [write_atomic(out / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")]
    if raw:
        written.append(plot_lengths(raw, settings.max_length, out / "lengths.png"))
    print_tables(stats, task)
    return written


def plot_lengths(raw: dict[str, list[int]], max_length: int, path: Path) -> Path:
    """Histogram of token lengths per ablation, the trainer's max_length marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    shown = {name: ls for name, ls in raw.items() if ls}
    every = [n for ls in shown.values() for n in ls] + [max_length]
    bins = np.linspace(min(every), max(every) + 1, 31)  # the same bins everywhere: panels compare
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(3.8 * max(1, len(shown)), 3.4), sharex=True,
                             squeeze=False)
    for ax, (name, ls) in zip(axes[0], shown.items(), strict=False):
        ax.hist(ls, bins=bins, color="tab:blue")
        ax.axvline(max_length, color="tab:red", linestyle="--", linewidth=1, label=f"max_length {max_length}")
        ax.set_title(f"{name} ({len(ls)} rows, {sum(n > max_length for n in ls)} over)", fontsize=10)
        ax.set_xlabel("tokens (prompt + answer + EOS)")
        ax.set_ylabel("rows")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- printing ------------------------------------------------------------------------------------

def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _labels(counts: dict[str, int]) -> str:
    return " ".join(f"{label}:{n}" for label, n in counts.items())


def print_tables(stats: dict, task: TaskSpec) -> None:
    console = Console()
    rows, refl = stats["rows"], stats["reflections"]
    t = Table(title="datagen prepare: input", show_header=False)
    for name, value in [("rows read", rows["input"]), ("failed (no valid answer)", rows["failed"]),
                        ("duplicates dropped", rows["duplicates"]),
                        ("conflicting gold (all copies dropped)", rows["conflicts"]),
                        ("answered, unique", rows["answered_unique"]), ("without gold (all/ only)", rows["without_gold"]),
                        ("gold labels", _labels(stats["gold_labels"])),
                        ("reflections", f"{refl['rows'] if refl['rows'] is not None else '-'} read from "
                                        f"{Path(refl['from']).name if refl['from'] else '-'}, "
                                        f"{stats['ablations']['reflected']['sources'].get('reflected', 0)} used"),
                        ("split", f"{stats['split']['dev_pairs']} of {stats['split']['pairs']} pairs in dev "
                                  f"(seed {stats['split']['seed']})")]:
        t.add_row(name, str(value))
    console.print(t)

    tr = stats["teacher"]
    t = Table(title=f"teacher vs gold (positive: {task.schema.name(tr.get('positive'))})")
    keys = ["rows", "accuracy", "precision", "recall", "f1", "tp", "fp", "fn", "tn"]
    for key in keys:
        t.add_column(key, justify="right")
    t.add_row(*(_fmt(tr.get(k)) for k in keys))
    console.print(t)

    # one column per ablation, so the table stays narrow
    abl = stats["ablations"]
    names = ", ".join(f"{label} {name}" for label, name in task.schema.labels.items())
    t = Table(title="ablations", caption=f"labels: {names}")
    t.add_column("")
    for name, a in abl.items():
        t.add_column(f"{name}\n{a['dir']}/" + ("" if a["written"] else "\n(not written)"), justify="right")
    t.add_row("train rows", *(str(a["train"]) for a in abl.values()))
    t.add_row("dev rows", *(str(a["dev"]) for a in abl.values()))
    t.add_row("train labels", *(_labels(a["labels"]["train"]) for a in abl.values()))
    t.add_row("dev labels", *(_labels(a["labels"]["dev"]) for a in abl.values()))
    for source in sorted({k for a in abl.values() for k in a["sources"]}, reverse=True):
        t.add_row(f"source {source}", *(str(a["sources"].get(source, 0)) for a in abl.values()))
    for reason in sorted({k for a in abl.values() for k in a["left_out"]}):
        t.add_row(f"left out: {reason}", *(str(a["left_out"].get(reason, "-")) for a in abl.values()))
    console.print(t)

    if stats.get("lengths"):
        ln = stats["lengths"]
        t = Table(title=f"token lengths ({ln['tokenizer']}, max_length {ln['max_length']})")
        cols = ["rows", "tokens_min", "tokens_median", "tokens_p95", "tokens_max", "over_max_length"]
        t.add_column("ablation")
        for col in cols:
            t.add_column(col.removeprefix("tokens_"), justify="right")
        for name, s in ln["ablations"].items():
            t.add_row(name, *("-" if s[c] is None else f"{s[c]:g}" for c in cols))
        console.print(t)
