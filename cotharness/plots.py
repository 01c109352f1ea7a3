"""PNG plots for ``cotharness compare``: confusion matrices and grouped bars with 95% CIs (for tasks
scored per document: the mean score, the pass rate and the unscored share)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrices(tasks: dict, out: Path) -> list[Path]:
    paths = []
    for task, detail in tasks.items():
        models = list(detail["models"])
        fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 0.6, 3.8), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            conf = detail["models"][model]["confusion"]
            matrix = np.array(conf["matrix"])
            ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.max()))
            # slanted: label names ("no entailment", "unparsed") overlap when set side by side
            ax.set_xticks(range(len(conf["labels"])), conf["labels"], rotation=30, ha="right")
            ax.set_yticks(range(len(conf["gold_labels"])), conf["gold_labels"])
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(model, fontsize=10)
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if v > matrix.max() / 2 else "black")
        fig.suptitle(f"{task}: confusion matrices ({detail['documents']} documents)")
        paths.append(_save(fig, out / f"confusion_{task}.png"))
    return paths


def grouped_bars(rows: list[dict], out: Path) -> list[Path]:
    """Per task: accuracy, macro-F1 and per-class accuracy for each model, with 95% CI whiskers."""
    paths = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = [m for m in dict.fromkeys(r["metric"] for r in task_rows) if m != "parse_fail"]
        models = list(dict.fromkeys(r["model"] for r in task_rows))
        fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.8))
        for model, (x, width) in zip(models, _bar_slots(len(metrics), len(models)), strict=True):
            by = {r["metric"]: r for r in task_rows if r["model"] == model}
            values, low, high = _bar([by[m] for m in metrics], 100)
            ax.bar(x, values, width, yerr=[low, high], capsize=3, label=model)
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(f"{task} (95% bootstrap CI)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
        paths.append(_save(fig, out / f"bars_{task}.png"))
    return paths


def score_bars(rows: list[dict], tasks: dict, out: Path) -> list[Path]:
    """Per task scored per document: the mean score (on the task's scale) and the pass rate and
    unscored share (%), each model side by side with 95% CI whiskers."""
    paths = []
    for task in dict.fromkeys(r["task"] for r in rows):
        spec, task_rows = tasks[task]["per_doc_score"], [r for r in rows if r["task"] == task]
        models = list(dict.fromkeys(r["model"] for r in task_rows))
        by = {(r["model"], r["metric"]): r for r in task_rows}
        fig, (left, right) = plt.subplots(1, 2, figsize=(3.2 + 0.6 * len(models) + 4, 3.8),
                                          gridspec_kw={"width_ratios": [1, 2]})
        for ax, metrics, scale in ((left, [spec["metric"]], 1),
                                   (right, [spec["pass_metric"], spec["unscored_metric"]], 100)):
            for model, (x, width) in zip(models, _bar_slots(len(metrics), len(models)), strict=True):
                values, low, high = _bar([by[(model, m)] for m in metrics], scale)
                ax.bar(x, values, width, yerr=[low, high], capsize=3, label=model)
            ax.set_xticks(range(len(metrics)), metrics)
        left.set_ylim(0, spec["max"] + 0.25)
        left.set_ylabel(f"mean score ({spec['min']}-{spec['max']})")
        right.set_ylim(0, 105)
        right.set_ylabel("%")
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
        fig.suptitle(f"{task} ({tasks[task]['documents']} documents, 95% bootstrap CI)")
        paths.append(_save(fig, out / f"bars_{task}.png"))
    return paths


def family_bars(table: dict, path: Path, chance: float) -> Path:
    """Accuracy per task family for each model (``{model: {family: {"acc", "n"}}}``), chance marked."""
    models = list(table)
    families = list(table[models[0]])
    fig, ax = plt.subplots(figsize=(1.4 * len(families) + 2.4, 3.6))
    for model, (x, width) in zip(models, _bar_slots(len(families), len(models)), strict=True):
        bars = ax.bar(x, [100 * table[model][f]["acc"] for f in families], width, label=model)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(families)), [f"{f}\n(n={table[models[0]][f]['n']})" for f in families])
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy by task family")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def _bar(rows: list[dict], scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar heights and whisker lengths of summary rows; a metric without a value (no gold document of
    a class, no scored answer) or without an interval draws nothing rather than failing."""
    def column(key):
        return np.array([np.nan if r[key] is None else scale * r[key] for r in rows], dtype=float)

    values = column("value")
    # a percentile interval need not contain the value (macro-F1 over the classes a resample has): no negative whisker
    low, high = np.nan_to_num(values - column("ci_low")).clip(0), np.nan_to_num(column("ci_high") - values).clip(0)
    return np.nan_to_num(values), low, high


def _bar_slots(groups: int, models: int) -> list[tuple[np.ndarray, float]]:
    """(x positions, width) of each model's bars, side by side within each group around its tick."""
    width = 0.8 / models
    return [(np.arange(groups) + (k - (models - 1) / 2) * width, width) for k in range(models)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
