"""Per-class report arithmetic, checked against scikit-learn on the same predictions."""

import random

import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cotharness.per_class import UNPARSED, report


def test_known_counts():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "b", None, "b", "a", "a"]
    rep = report(gold, pred, order=["c", "b", "a"])
    assert rep["classes"] == ["c", "b", "a"]  # the schema's order, not the alphabet
    a = rep["per_class"]["a"]
    assert (a["precision"], a["recall"], a["support"], a["predicted"]) == (1 / 3, 1 / 3, 3, 3)
    assert a["f1"] == pytest.approx(1 / 3)
    assert rep["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert rep["confusion"]["predicted"] == ["c", "b", "a", UNPARSED]
    assert rep["confusion"]["matrix"] == [[0, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]]


def test_matches_sklearn_on_random_predictions():
    rng = random.Random(0)
    tools = ["rag_retrieval", "web_search", "code_execution", "direct_chat", "calendar"]
    gold = [rng.choice(tools[:4]) for _ in range(300)]
    pred = [rng.choice([*tools, None]) for _ in range(300)]  # a class no document has, and failures
    rep = report(gold, pred)
    classes = rep["classes"]
    assert "calendar" in classes and UNPARSED not in classes
    p, r, f, s = precision_recall_fscore_support(gold, [UNPARSED if x is None else x for x in pred],
                                                 labels=classes, zero_division=0)
    for i, c in enumerate(classes):
        got = rep["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    cols = rep["confusion"]["predicted"]
    full = confusion_matrix(gold, [UNPARSED if x is None else x for x in pred], labels=cols)
    assert rep["confusion"]["matrix"] == [full[cols.index(g)].tolist() for g in rep["confusion"]["gold"]]
