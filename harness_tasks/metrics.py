"""Per-document scores and corpus aggregations for classification tasks with a CoT answer.

A parse failure (prediction None) is a wrong answer everywhere: it lowers accuracy, counts as a
missed positive for recall and as a miss for its gold class in macro-F1.
"""

from __future__ import annotations

import re
from collections.abc import Hashable

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

def mean_defined(items: list) -> float:
    """Mean over the documents the metric applies to (per-class accuracy)."""
    values = [v for v in items if v is not None]
    return sum(values) / len(values) if values else float("nan")


def precision(items: list[tuple[bool, bool]]) -> float:
    predicted = sum(p for p, _ in items)
    return sum(p and g for p, g in items) / predicted if predicted else 0.0


def recall(items: list[tuple[bool, bool]]) -> float:
    actual = sum(g for _, g in items)
    return sum(p and g for p, g in items) / actual if actual else 0.0


def f1(items: list[tuple[bool, bool]]) -> float:
    denom = sum(p for p, _ in items) + sum(g for _, g in items)
    return 2 * sum(p and g for p, g in items) / denom if denom else 0.0


def f1_macro(items: list[tuple[Hashable, Hashable | None]]) -> float:
    """Mean per-class F1 over the classes seen in gold or (parsed) predictions."""
    classes = {g for g, _ in items} | {p for _, p in items if p is not None}
    if not classes:
        return 0.0
    scores = []
    for c in classes:
        tp = sum(g == c and p == c for g, p in items)
        denom = sum(p == c for _, p in items) + sum(g == c for g, _ in items)
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / len(scores)
