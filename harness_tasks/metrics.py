"""Per-document scores and corpus aggregations for classification tasks with a CoT answer.

A parse failure (prediction None) is a wrong answer everywhere: it lowers accuracy, counts as a
missed positive for recall and as a miss for its gold class in macro-F1.

Each aggregation is written once, over weighted documents. ``agg(items)`` is what lm-eval calls (the
task YAMLs' ``aggregation: !function harness_tasks.metrics.<name>``): every document counted once.
``agg(items, weights)``, with ``weights`` a (B, n) matrix of document counts (one bootstrap resample
per row), returns the B values at once; ``cotharness compare`` draws its confidence intervals that
way, so a report and lm-eval can never disagree on what a metric means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable

import numpy as np

from harness_tasks.schema import AnswerSchema


def class_metric(schema: AnswerSchema, label) -> str:
    return "acc_" + re.sub(r"\W+", "_", schema.labels[label].lower()).strip("_")


def score(gold, pred, schema: AnswerSchema) -> dict:
    """lm-eval ``process_results`` payload for one document.

    Unlabelled documents only report the parse-failure rate: the other metrics need a gold label.
    """
    out = {"parse_fail": int(pred is None)}
    if gold is None:
        return out
    correct = int(pred == gold)
    out.update(acc=correct, f1_macro=(gold, pred))
    # Every labelled document reports every class metric (None when it is not of that class), so
    # lm-eval sees the same document count for all metrics.
    out.update({class_metric(schema, c): correct if c == gold else None for c in schema.labels})
    if schema.positive is not None:
        pair = (pred == schema.positive, gold == schema.positive)
        out.update(precision=pair, recall=pair, f1=pair)
    return out


def metric_names(schema: AnswerSchema) -> list[str]:
    names = ["acc", "f1_macro"]
    if schema.positive is not None:
        names += ["precision", "recall", "f1"]
    return names + [class_metric(schema, lb) for lb in schema.labels] + ["parse_fail"]


# --- aggregations (lm-eval calls them with the list of per-document items) ---------------------
# Counts are sums of whole documents, exact in float64, so the order lm-eval collects items in
# (ranks, batches) never changes a value.

def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must be (resamples, {n} documents), got shape {w.shape}")
    return w


def _ratio(num: np.ndarray, den: np.ndarray, empty: float, weights):
    """num / den per resample, ``empty`` where den is 0; a float when ``weights`` is None."""
    out = np.divide(num, den, out=np.full(np.shape(num), empty, dtype=float), where=den > 0)
    return float(out[0]) if weights is None else out


def mean(items: list, weights=None):
    """lm-eval's built-in ``mean`` (sum / count), weighted: what ``aggregation: mean`` computes."""
    w = _weights(weights, len(items))
    return _ratio(w @ np.asarray(items, dtype=float).reshape(-1), w.sum(axis=1), float("nan"), weights)


def mean_defined(items: list, weights=None):
    """Mean over the documents the metric applies to (items not None): per-class accuracy."""
    w = _weights(weights, len(items))
    defined = np.array([v is not None for v in items], dtype=float)
    values = np.array([0.0 if v is None else float(v) for v in items])
    return _ratio(w @ values, w @ defined, float("nan"), weights)


def _flags(items: list[tuple[bool, bool]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray(items, dtype=bool).reshape(-1, 2)
    return pairs[:, 0].astype(float), pairs[:, 1].astype(float)  # predicted positive, gold positive


def precision(items: list[tuple[bool, bool]], weights=None):
    w, (p, g) = _weights(weights, len(items)), _flags(items)
    return _ratio(w @ (p * g), w @ p, 0.0, weights)


def recall(items: list[tuple[bool, bool]], weights=None):
    w, (p, g) = _weights(weights, len(items)), _flags(items)
    return _ratio(w @ (p * g), w @ g, 0.0, weights)


def f1(items: list[tuple[bool, bool]], weights=None):
    w, (p, g) = _weights(weights, len(items)), _flags(items)
    return _ratio(2 * (w @ (p * g)), w @ p + w @ g, 0.0, weights)


def f1_macro(items: list[tuple[Hashable, Hashable | None]], weights=None):
    """Mean per-class F1 over the classes seen in gold or (parsed) predictions.

    In a resample, "seen" means in that resample's documents: a class it happens to miss is not a
    class the model got wrong (F1 0), it is absent, as it would be in a run on those documents."""
    w = _weights(weights, len(items))
    gold, pred = [g for g, _ in items], [p for _, p in items]
    classes = sorted({*gold, *(p for p in pred if p is not None)}, key=repr)  # a fixed summation order
    g = np.array([[x == c for c in classes] for x in gold], dtype=float).reshape(len(items), len(classes))
    p = np.array([[x == c for c in classes] for x in pred], dtype=float).reshape(len(items), len(classes))
    seen = w @ g + w @ p  # (B, classes): gold + predicted documents of each class
    per_class = np.divide(2 * (w @ (g * p)), seen, out=np.zeros_like(seen), where=seen > 0)
    return _ratio(per_class.sum(axis=1), (seen > 0).sum(axis=1).astype(float), 0.0, weights)


AGGREGATIONS: dict[str, Callable] = {f.__name__: f for f in (mean, mean_defined, precision, recall, f1, f1_macro)}
"""Every aggregation the tasks declare, by the name lm-eval records (see ``aggregation_name``)."""


def aggregation_name(declared: str) -> str:
    """An aggregation's name from a results file's ``configs``: lm-eval writes a registered one as its
    name (``mean``) and a ``!function`` as its source text (``def f1_macro(items, ...``)."""
    found = re.match(r"\s*def\s+(\w+)\s*\(", declared)
    return found.group(1) if found else declared.strip()


def proportion(name: str, items: list) -> tuple[int, int] | None:
    """(documents counted, out of how many) when aggregation ``name`` on ``items`` is a share of
    documents (accuracy, a rate, precision, recall), for an interval on a binomial count; else None
    (F1 and macro-F1 are not a count over documents)."""
    if name in ("mean", "mean_defined"):
        values = [v for v in items if v is not None]
        if all(v in (0, 1) for v in values):
            return int(sum(values)), len(values)
    if name in ("precision", "recall"):
        p, g = _flags(items)
        return int((p * g).sum()), int((p if name == "precision" else g).sum())
    return None
