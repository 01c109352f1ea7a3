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
judge); other document fields (the judge's cache path, its concurrency) may differ.
"""

from __future__ import annotations

import warnings

import numpy as np

from cotharness.compare import Run, _bootstrap, _fmt, _mcnemar, _mean_tokens

KEYS = ("metric", "pass_metric", "pass_at", "unscored_metric", "min", "max")


def spec_of(runs: list[Run], task: str) -> dict | None:
    """The task's ``per_doc_score`` declaration, from the runs' lm-eval configs (they must agree)."""
    specs = [((r.results.get("configs") or {}).get(task) or {}).get("metadata", {}).get("per_doc_score")
             for r in runs]
    if not any(specs):
        return None
    if any(s != specs[0] for s in specs):
        raise ValueError(f"{task}: the runs score documents differently ({specs[0]} vs "
                         f"{next(s for s in specs if s != specs[0])}); rerun them with one version of the task")
    missing = [k for k in KEYS if k not in specs[0]]
    if missing:
        raise ValueError(f"{task}: metadata.per_doc_score lacks {missing}")
    return specs[0]


def _check_same(runs: list[Run], task: str, shared: list, spec: dict) -> None:
    first = runs[0].samples[task]
    for r in runs[1:]:
        for d in shared:
            a, b = first[d]["doc"], r.samples[task][d]["doc"]
            for f in spec.get("same") or []:
                if a.get(f) != b.get(f):
                    raise ValueError(f"{task}: runs {runs[0].name} and {r.name} differ on document {d} "
                                     f"(id {a.get('id')!r}) in {f}: {a.get(f)!r} vs {b.get(f)!r}; "
                                     "their scores are not comparable")


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


def _stats(scores: np.ndarray, spec: dict, rng) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, ci_low, ci_high)."""
    n, scored = len(scores), ~np.isnan(scores)
    filled = np.where(scored, scores, 0.0)
    passed = (scored & (filled >= spec["pass_at"])).astype(float)
    unscored = (~scored).astype(float)

    def mean_score(i):
        with np.errstate(invalid="ignore", divide="ignore"):
            return filled[i].sum(axis=1) / scored[i].sum(axis=1)

    everything = np.arange(n)[None, :]
    return {spec["metric"]: (float(mean_score(everything)[0]), *_bootstrap(mean_score, n, rng)),
            spec["pass_metric"]: (passed.mean(), *_bootstrap(lambda i: passed[i].mean(axis=1), n, rng)),
            spec["unscored_metric"]: (unscored.mean(), *_bootstrap(lambda i: unscored[i].mean(axis=1), n, rng))}


def _score_of(sample: dict, metric: str) -> float:
    value = sample.get(metric)
    return np.nan if value is None else float(value)


def task_report(runs: list[Run], task: str, spec: dict, seed: int, count_tokens, counted_by):
    """(rows, detail) for one score task, or None when the runs share no document of it."""
    shared = sorted(set.intersection(*(set(r.samples[task]) for r in runs)))
    if not shared:
        return None
    _check_same(runs, task, shared, spec)
    rows, detail = [], {"documents": len(shared), "per_doc_score": spec, "models": {}}
    base = base_values = None
    for r in runs:
        scores = np.array([_score_of(r.samples[task][d], spec["metric"]) for d in shared])
        with warnings.catch_warnings():  # a resample without a scored document has no mean: left out
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = _stats(scores, spec, np.random.default_rng(seed))
        passed = ~np.isnan(scores) & (np.nan_to_num(scores) >= spec["pass_at"])
        vs_base, wil = None, None
        if base is not None:
            wil, differing = wilcoxon_p(base, scores)
            both = ~np.isnan(base) & ~np.isnan(scores)
            vs_base = {"scored_in_both": int(both.sum()), "better": int((scores[both] > base[both]).sum()),
                       "same": int((scores[both] == base[both]).sum()), "worse": int((scores[both] < base[both]).sum()),
                       "wilcoxon_p": wil, "mcnemar_p_pass": _mcnemar(base >= spec["pass_at"], passed)}
        for metric, (value, lo, hi) in stats.items():
            rows.append({"model": r.name, "task": task, "metric": metric, "value": value, "ci_low": lo,
                         "ci_high": hi, "delta_vs_base": None if base_values is None else value - base_values[metric],
                         "mcnemar_p": vs_base["mcnemar_p_pass"] if vs_base and metric == spec["pass_metric"] else None,
                         "wilcoxon_p": wil if metric == spec["metric"] else None, "n": len(shared),
                         "unit": "score" if metric == spec["metric"] else "share"})
        if base is None:
            base, base_values = scores, {m: v[0] for m, v in stats.items()}
        mean_tokens, tokens_by = _mean_tokens([r.samples[task][d] for d in shared], count_tokens, counted_by)
        levels = range(int(spec["min"]), int(spec["max"]) + 1)
        detail["models"][r.name] = {
            "distribution": {**{str(s): int((scores == s).sum()) for s in levels},
                             "unscored": int(np.isnan(scores).sum())},
            "vs_base": vs_base, "mean_generated_tokens": mean_tokens, "generated_tokens_counted_by": tokens_by,
            "wall_seconds": float(r.results.get("total_evaluation_time_seconds") or 0) or None}
    return rows, detail


def markdown(task: str, detail: dict, rows: list[dict]) -> list[str]:
    spec, models = detail["per_doc_score"], list(detail["models"])
    score, passing, unscored = spec["metric"], spec["pass_metric"], spec["unscored_metric"]
    lo, hi = spec["min"], spec["max"]
    lines = [f"## {task} ({detail['documents']} documents, scored {lo}-{hi} per document)", "",
             f"{score}: mean ({lo}-{hi}) over the scored documents; {passing}: % scored >= {spec['pass_at']} "
             f"(unscored does not pass); {unscored}: % without a score. 95% bootstrap CI in brackets; Δ vs the "
             "first model. Paired by document with the first model: Wilcoxon signed-rank p on the scores "
             "(documents scored in both), McNemar p on passing, and documents scored better / the same / worse.",
             "",
             f"| model | {score} | {passing} | {unscored} | Δ{score} | Δ{passing} | Wilcoxon p | McNemar p | "
             "better / same / worse | gen. tokens | wall s |", "|---" * 11 + "|"]
    for m in models:
        by = {r["metric"]: r for r in rows if r["model"] == m}
        d = detail["models"][m]

        def cell(metric, pct=True, by=by):
            r = by[metric]
            return f"{_fmt(r['value'], pct)} [{_fmt(r['ci_low'], pct)}, {_fmt(r['ci_high'], pct)}]"

        vs = d["vs_base"]
        lines.append(f"| {m} | {cell(score, False)} | {cell(passing)} | {cell(unscored)} | "
                     f"{_fmt(by[score]['delta_vs_base'], False)} | {_fmt(by[passing]['delta_vs_base'])} | "
                     f"{_fmt(by[score]['wilcoxon_p'], False)} | {_fmt(by[passing]['mcnemar_p'], False)} | "
                     + (f"{vs['better']} / {vs['same']} / {vs['worse']}" if vs else "-")
                     + f" | {_fmt(d['mean_generated_tokens'], False)} | {_fmt(d['wall_seconds'], False)} |")
    levels = list(detail["models"][models[0]]["distribution"])
    lines += ["", "Score distribution (documents):", "", "| model | " + " | ".join(levels) + " |",
              "|---" * (len(levels) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(str(detail["models"][m]["distribution"][k]) for k in levels) + " |"
              for m in models]
    return lines + ["", f"![{task}](bars_{task}.png)", ""]
