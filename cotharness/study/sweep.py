"""The training runs of a study: one per ablation and sweep combination, each with its overrides.

A run's name is its ablation, then each swept key's last part and value (``reflected-learning_rate-0.0001``),
so the folder ``studies/<name>/runs/<run>/`` says what it holds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from cotharness.study.config import StudyConfig, StudyError
from harness_tasks.yaml_files import merge

# the study decides these for every run: its own data and output folder
OWNED = ("output_dir", "data.train_file", "data.eval_file", "data.task")


@dataclass(frozen=True)
class TrainRun:
    name: str
    ablation: str
    swept: dict
    """dotted key -> value of this combination ({} without a sweep)"""
    overrides: dict
    """nested overrides over the base config: set, then per_ablation, then the swept values"""


def nested(dotted: dict, where: str) -> dict:
    """``{"training.learning_rate": 1e-4}`` -> ``{"training": {"learning_rate": 1e-4}}``."""
    out: dict = {}
    for key, value in dotted.items():
        if key in OWNED:
            raise StudyError(f"{where}.{key}: the study sets it (runs under studies/<name>/, data from its ablation)")
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StudyError(f"{where}.{key}: {part} is set both as a value and as a section")
        node[leaf] = value
    return out


def _value(value) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "none"


def run_name(ablation: str, swept: dict) -> str:
    return "-".join([ablation, *(f"{key.split('.')[-1]}-{_value(value)}" for key, value in swept.items())])


def runs(study: StudyConfig) -> list[TrainRun]:
    t = study.training
    keys = list(t.sweep)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(t.sweep[k] for k in keys))]
    common = nested(t.set, "training.set")
    out = []
    for ablation in study.ablations:
        own = nested(t.per_ablation.get(ablation, {}), f"training.per_ablation.{ablation}")
        for swept in combos:
            overrides = merge(merge(common, own), nested(swept, "training.sweep"))
            out.append(TrainRun(run_name(ablation, swept), ablation, swept, overrides))
    names = [r.name for r in out]
    again = sorted({n for n in names if names.count(n) > 1})
    if again:
        raise StudyError(f"training.sweep: two runs would be named {again[0]!r}; use values that differ as text")
    return out
