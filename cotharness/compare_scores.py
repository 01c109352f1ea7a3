"""``cotharness compare`` for tasks scored by a number per document rather than a label.

A task declares it in its YAML (``metadata.per_doc_score``, e.g. ``instruct_judged``: a judge's 1-5
per answer, logged per sample as ``judge_score``; None = unscored)::

    per_doc_score: {metric: judge_score, pass_metric: judge_pass, pass_at: 4, unscored_metric: unscored,
                    min: 1, max: 5, same: [instruction, judge_model, judge_url]}

Per model: the mean score over the scored documents, the pass rate (score >= ``pass_at``; unscored
documents do not pass) and the unscored share, each with a 95% bootstrap CI over documents, and the
delta against the first model. Paired by document against the first model: a Wilcoxon signed-rank
test on the scores (documents scored in both runs; equal scores are dropped, as in Wilcoxon's
original test), McNemar on passing, and how many documents scored better, the same or worse.
``same`` names the document fields that must agree for two runs to be comparable (the input, the
judge); other document fields (the judge's cache path, its concurrency) may differ. The values and
their intervals are the task's own metrics, as for every task (``cotharness.compare_stats``): the
mean score is ``judge_score``'s ``mean_defined``, so a run with no scored document has no mean
(null), not NaN.
"""

from __future__ import annotations

import numpy as np

from cotharness.compare_runs import CompareError, Run, mean_tokens
from cotharness.compare_stats import WILSON_NOTE, Metric, ci_cell, estimates, fmt, mcnemar

KEYS = ("metric", "pass_metric", "pass_at", "unscored_metric", "min", "max")


def spec_of(runs: list[Run], task: str) -> dict | None:
    """The task's ``per_doc_score`` declaration, from the runs' lm-eval configs (they must agree)."""
    specs = [((r.results.get("configs") or {}).get(task) or {}).get("metadata", {}).get("per_doc_score")
             for r in runs if r.teacher is None]
    if not any(specs):
        return None
    if any(s != specs[0] for s in specs):
        raise CompareError(f"{task}: the runs score documents differently ({specs[0]} vs "
                         f"{next(s for s in specs if s != specs[0])}); rerun them with one version of the task")
    missing = [k for k in KEYS if k not in specs[0]]
    if missing:
        raise CompareError(f"{task}: metadata.per_doc_score lacks {missing}")
    return specs[0]


def wilcoxon_p(base: np.ndarray, other: np.ndarray) -> tuple[float | None, int]:
    """Two-sided Wilcoxon signed-rank p on the documents scored in both (NaN = unscored), and how many
    pairs differ. scipy decides exact / permutation / normal approximation from the ties and n."""
    from scipy.stats import wilcoxon

    both = ~np.isnan(base) & ~np.isnan(other)
    d = other[both] - base[both]
    differing = int((d != 0).sum())
    if not both.any():
        return None, 0
    if differing == 0:
        return 1.0, 0  # the same score on every document: no evidence of a difference
    return float(wilcoxon(d, zero_method="wilcox").pvalue), differing


def _score_of(sample: dict, metric: str) -> float:
    value = sample.get(metric)
    return np.nan if value is None else float(value)


def task_report(runs: list[Run], task: str, spec: dict, shared: list[int], task_metrics: list[Metric], seed: int,
                count_tokens, counted_by):
    """(rows, detail) for one score task on the documents ``shared`` (paired by compare_runs). The
    values and CIs are the task's own metrics (``task_metrics``: mean score over the scored documents,
    pass rate, unscored share); the paired tests and the distribution read the per-document scores."""
    stats = estimates({r.name: [r.samples[task][d] for d in shared] for r in runs}, task_metrics, seed)
    rows, detail = [], {"documents": len(shared), "per_doc_score": spec, "models": {}}
    base = base_values = None
    for r in runs:
        scores = np.array([_score_of(r.samples[task][d], spec["metric"]) for d in shared])
        passed = ~np.isnan(scores) & (np.nan_to_num(scores) >= spec["pass_at"])
        vs_base, wil = None, None
        if base is not None:
            wil, differing = wilcoxon_p(base, scores)
            both = ~np.isnan(base) & ~np.isnan(scores)
            vs_base = {"scored_in_both": int(both.sum()), "better": int((scores[both] > base[both]).sum()),
                       "same": int((scores[both] == base[both]).sum()), "worse": int((scores[both] < base[both]).sum()),
                       "wilcoxon_p": wil, "mcnemar_p_pass": mcnemar(base >= spec["pass_at"], passed)}
        values = {}
        for m in task_metrics:
            est = stats[r.name, m.name]
            values[m.name] = est["value"]
            base_value = None if base_values is None else base_values.get(m.name)
            rows.append({"model": r.name, "task": task, "metric": m.name, "value": est["value"],
                         "ci_low": est["ci_low"], "ci_high": est["ci_high"],
                         "delta_vs_base": None if base_value is None or est["value"] is None else est["value"] - base_value,
                         "mcnemar_p": vs_base["mcnemar_p_pass"] if vs_base and m.name == spec["pass_metric"] else None,
                         "wilcoxon_p": wil if m.name == spec["metric"] else None, "n": est["n"],
                         "unit": "score" if m.name == spec["metric"] else "share", "ci_method": est["ci_method"]})
        if base is None:
            base, base_values = scores, values
        mean_generated, tokens_by = mean_tokens([r.samples[task][d] for d in shared], count_tokens, counted_by)
        levels = range(int(spec["min"]), int(spec["max"]) + 1)
        detail["models"][r.name] = {
            "distribution": {**{str(s): int((scores == s).sum()) for s in levels},
                             "unscored": int(np.isnan(scores).sum())},
            "vs_base": vs_base, "mean_generated_tokens": mean_generated, "generated_tokens_counted_by": tokens_by,
            "wall_seconds": float(r.results.get("total_evaluation_time_seconds") or 0) or None}
    return rows, detail


def markdown(task: str, detail: dict, rows: list[dict]) -> list[str]:
    spec, models = detail["per_doc_score"], list(detail["models"])
    score, passing, unscored = spec["metric"], spec["pass_metric"], spec["unscored_metric"]
    lo, hi = spec["min"], spec["max"]
    lines = [f"## {task} ({detail['documents']} documents, scored {lo}-{hi} per document)", "",
             f"{score}: mean ({lo}-{hi}) over the scored documents; {passing}: % scored >= {spec['pass_at']} "
             f"(unscored does not pass); {unscored}: % without a score. 95% CI in brackets (bootstrap); Δ vs the "
             "first model. Paired by document with the first model: Wilcoxon signed-rank p on the scores "
             "(documents scored in both), McNemar p on passing, and documents scored better / the same / worse.",
             "",
             f"| model | {score} | {passing} | {unscored} | Δ{score} | Δ{passing} | Wilcoxon p | McNemar p | "
             "better / same / worse | gen. tokens | wall s |", "|---" * 11 + "|"]
    for m in models:
        by = {r["metric"]: r for r in rows if r["model"] == m}
        d = detail["models"][m]

        def cell(metric, pct=True, by=by):
            return ci_cell(by[metric], pct)

        vs = d["vs_base"]
        lines.append(f"| {m} | {cell(score, False)} | {cell(passing)} | {cell(unscored)} | "
                     f"{fmt(by[score]['delta_vs_base'], False)} | {fmt(by[passing]['delta_vs_base'])} | "
                     f"{fmt(by[score]['wilcoxon_p'], False)} | {fmt(by[passing]['mcnemar_p'], False)} | "
                     + (f"{vs['better']} / {vs['same']} / {vs['worse']}" if vs else "-")
                     + f" | {fmt(d['mean_generated_tokens'], False)} | {fmt(d['wall_seconds'], False)} |")
    levels = list(detail["models"][models[0]]["distribution"])
    if any(r.get("ci_method") == "wilson" for r in rows):
        lines += ["", WILSON_NOTE]
    lines += ["", "Score distribution (documents):", "", "| model | " + " | ".join(levels) + " |",
              "|---" * (len(levels) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(str(detail["models"][m]["distribution"][k]) for k in levels) + " |"
              for m in models]
    return lines + ["", f"![{task}](bars_{task}.png)", ""]
