"""Per-class precision, recall and F1, and the confusion matrix, of one task's predictions.

Works for any label set (NLI classes, puzzle verdicts, tool names), so a task with a new class needs
no new metric declared anywhere. A parse failure predicts no class: it lowers its gold class's recall
and is counted in the confusion matrix's "unparsed" column, never taken as a guess.
"""

from __future__ import annotations

from collections import Counter

from rich.table import Table

UNPARSED = "unparsed"


def report(gold: list, pred: list, order: list | None = None) -> dict:
    """``gold``/``pred`` are display names (``pred`` None where unparsed); ``order``: the schema's class
    order, so tables read the same in every run (classes outside it follow, sorted)."""
    pred = [UNPARSED if p is None else p for p in pred]
    seen = set(gold) | {p for p in pred if p != UNPARSED}
    classes = [c for c in (order or []) if c in seen] + sorted(seen - set(order or []), key=str)
    pairs = Counter(zip(gold, pred, strict=True))
    per_class = {}
    for c in classes:
        tp = pairs[(c, c)]
        predicted, support = sum(n for (_, p), n in pairs.items() if p == c), gold.count(c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (predicted + support) if predicted + support else 0.0
        per_class[str(c)] = {"precision": precision, "recall": recall, "f1": f1, "support": support,
                             "predicted": predicted}
    columns = classes + ([UNPARSED] if UNPARSED in pred else [])
    gold_rows = [c for c in classes if c in set(gold)]
    return {"documents": len(gold), "classes": [str(c) for c in classes], "per_class": per_class,
            "confusion": {"gold": [str(c) for c in gold_rows], "predicted": [str(c) for c in columns],
                          "matrix": [[pairs[(g, p)] for p in columns] for g in gold_rows]}}


def tables(task: str, rep: dict) -> list[Table]:
    scores = Table(title=f"{task}: per class ({rep['documents']} labelled documents)")
    for col in ("class", "precision", "recall", "F1", "support", "predicted"):
        scores.add_column(col, justify="left" if col == "class" else "right")
    for c, s in rep["per_class"].items():
        scores.add_row(c, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]),
                       str(s["predicted"]))
    conf = rep["confusion"]
    matrix = Table(title=f"{task}: confusion (rows gold, columns predicted)")
    matrix.add_column("gold \\ predicted")
    for p in conf["predicted"]:
        matrix.add_column(p, justify="right")
    for g, row in zip(conf["gold"], conf["matrix"], strict=True):
        matrix.add_row(g, *map(str, row))
    return [scores, matrix]
