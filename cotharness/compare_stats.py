"""The statistics of ``cotharness compare``: each metric by the task's own aggregation, with a CI.

A metric's value is computed by the very function lm-eval aggregated it with (read from the run's
results file: ``configs.<task>.metric_list``), on the per-document items lm-eval logged in the
samples, so a report's value equals the results file's. Its 95% interval comes from the same
function's batched form (``harness_tasks.metrics``) over ``BOOTSTRAP`` resamples of the documents,
the same resamples for every model and metric of a task (paired). A share of documents that is
exactly 0% or 100% gets a Wilson score interval instead: every resample then gives the same share,
and a zero-width percentile interval would claim a certainty that 20 documents do not give.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cotharness.compare_runs import CompareError
from harness_tasks import metrics

BOOTSTRAP = 10_000
INTERVALS = {"bootstrap": f"95% percentile bootstrap over documents ({BOOTSTRAP:,} resamples, the same "
                          "resamples for every model of a task)",
             "wilson": "95% Wilson score interval (a share of documents at exactly 0% or 100%)"}


@dataclass(frozen=True)
class Metric:
    name: str
    aggregation: str  # its name in harness_tasks.metrics.AGGREGATIONS
    point: Callable  # the function lm-eval aggregated it with
    batched: Callable  # the same aggregation over (resamples, documents) weights


def task_metrics(results: dict, task: str) -> list[Metric]:
    """The metrics a run's results report for ``task``, in the task's ``metric_list`` order, each with
    the aggregation the task declared (lm-eval falls back to ``mean`` for an undeclared one)."""
    declared = {m["metric"]: m.get("aggregation", "mean")
                for m in ((results.get("configs") or {}).get(task) or {}).get("metric_list") or []}
    reported = [k.partition(",")[0] for k in results["results"][task] if "," in k]
    reported = [m for m in reported if not m.endswith("_stderr")]
    order = [m for m in declared if m in reported] + [m for m in reported if m not in declared]
    return [_metric(task, m, declared.get(m, "mean")) for m in order]


def _metric(task: str, name: str, declared) -> Metric:
    if not isinstance(declared, str):
        raise CompareError(f"{task}: metric {name}'s aggregation is recorded as {declared!r}, not a name or source")
    agg = metrics.aggregation_name(declared)
    if agg not in metrics.AGGREGATIONS:
        raise CompareError(f"{task}: metric {name} is aggregated by {agg!r}, which cotharness compare does not know "
                         f"(known: {', '.join(metrics.AGGREGATIONS)})")
    point = metrics.AGGREGATIONS[agg]
    if declared == agg:  # a name from lm-eval's registry ("mean"): lm-eval called its own function
        from lm_eval.api.registry import get_aggregation

        point = get_aggregation(agg)
    return Metric(name, agg, point, metrics.AGGREGATIONS[agg])


def logged_value(results: dict, task: str, metric: str):
    """The value the results file reports for ``metric`` of ``task`` (key ``metric,filter``)."""
    return next((v for k, v in results["results"][task].items() if k.partition(",")[0] == metric), None)


def items_of(samples: list[dict], metric: str) -> tuple[list, list[int]]:
    """The metric's per-document items, as lm-eval collected them, and the positions of their documents
    (documents without the metric, e.g. unlabelled ones for accuracy, are not counted)."""
    cols = [j for j, s in enumerate(samples) if metric in (s.get("metrics") or s)]
    return [samples[j][metric] for j in cols], cols


def point_value(metric: Metric, items: list) -> float | None:
    """The metric over ``items`` as lm-eval computed it; None where it has no value (NaN)."""
    if not items:
        return None
    value = float(metric.point(items))
    return None if math.isnan(value) else value


def resamples(n: int, seed: int):
    """``BOOTSTRAP`` resamples of ``n`` documents as (chunk, n) document-count matrices (bounded memory)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(BOOTSTRAP, 2_000_000 // max(n, 1)))
    for start in range(0, BOOTSTRAP, chunk):
        rows = min(chunk, BOOTSTRAP - start)
        picks = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(picks.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def estimates(samples: dict[str, list[dict]], task_metrics: list[Metric], seed: int) -> dict[tuple[str, str], dict]:
    """(model, metric) -> {value, ci_low, ci_high, ci_method, n} for one task; ``samples``: each model's
    samples of the same documents, in the same order."""
    n = len(next(iter(samples.values())))
    work = {(model, m.name): (m, *items_of(docs, m.name)) for model, docs in samples.items() for m in task_metrics}
    draws = {key: [] for key, (_, items, _) in work.items() if items}
    for w in resamples(n, seed):
        for key in draws:
            m, items, cols = work[key]
            draws[key].append(m.batched(items, w if len(cols) == n else w[:, cols]))  # no copy where every doc counts
    out = {}
    for key, (m, items, _) in work.items():
        value = point_value(m, items)
        lo, hi, method = interval(np.concatenate(draws[key]) if key in draws else np.array([]), value,
                                  metrics.proportion(m.aggregation, items))
        out[key] = {"value": value, "ci_low": lo, "ci_high": hi, "ci_method": method, "n": len(items)}
    return out


def interval(values: np.ndarray, value: float | None, counts: tuple[int, int] | None):
    """(low, high, method): Wilson for a share of documents at 0 or 1, else the percentile bootstrap
    over the resamples where the metric has a value (a class absent from a resample has no accuracy)."""
    if value is None:
        return None, None, None
    if counts and counts[1] and value in (0.0, 1.0):
        from statsmodels.stats.proportion import proportion_confint

        lo, hi = proportion_confint(*counts, alpha=0.05, method="wilson")
        # the bound at the observed share is exact (statsmodels' arithmetic leaves 0.9999999999999999)
        return (0.0, float(hi), "wilson") if value == 0.0 else (float(lo), 1.0, "wilson")
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None, None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)), "bootstrap"


def mcnemar(base_correct: np.ndarray, other_correct: np.ndarray) -> float:
    """Two-sided McNemar p on paired correctness (exact binomial below 25 discordant pairs)."""
    from statsmodels.stats.contingency_tables import mcnemar as test

    b = int((base_correct & ~other_correct).sum())
    c = int((~base_correct & other_correct).sum())
    if b + c == 0:
        return 1.0
    return float(test([[0, b], [c, 0]], exact=b + c < 25).pvalue)


def json_safe(obj):
    """``obj`` with NaN and infinities as None and numpy scalars as Python ones: valid JSON."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj) -> str:
    """Strict JSON: a NaN that slipped past ``json_safe`` is an error here, not an invalid file."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str) + "\n"


def fmt(x, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3g}"


WILSON_MARK = "†"
WILSON_NOTE = (f"{WILSON_MARK} Wilson score interval: the share is 0% or 100%, where every bootstrap resample "
               "gives the same share.")


def ci_cell(row: dict, pct: bool = True) -> str:
    """``value [low, high]`` of a summary row, marked where the interval is Wilson's."""
    mark = WILSON_MARK if row.get("ci_method") == "wilson" else ""
    return f"{fmt(row['value'], pct)} [{fmt(row['ci_low'], pct)}, {fmt(row['ci_high'], pct)}]{mark}"
