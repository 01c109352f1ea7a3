"""``cotharness compare``: several lm-eval runs on the same documents, side by side, with statistics.

Reads each run's ``results_*.json`` and ``samples_<task>_*.jsonl`` (``--log_samples``), joins the
models on the documents they share, and reports per task and metric: value with a 95% bootstrap CI,
the delta against the first model (the base), a paired McNemar test on per-document correctness,
parse-failure rate, mean generated tokens and wall time, per-class accuracy and confusion matrices.
Tasks scored by a number per document (a judge's 1-5, declared in the task YAML's
``metadata.per_doc_score``) get the mean score, the pass rate and the unscored share instead, paired
by document with a Wilcoxon signed-rank test on the scores and McNemar on passing
(``cotharness.compare_scores``). A datagen thoughts ``.jsonl`` may stand in for a run: the teacher
model's answers on the same documents (``cotharness.teacher_run``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cotharness import per_class
from cotharness.per_class import UNPARSED
from harness_tasks import manifest
from harness_tasks.tasks import schema_for

BOOTSTRAP = 10_000
SERVER_COUNTS = "the teacher's API server (meta.thoughts.tokens_out, all attempts of a row)"


@dataclass
class Run:
    name: str
    results: dict
    samples: dict[str, dict[int, dict]] = field(default_factory=dict)  # task -> doc_id -> sample
    teacher: dict | None = None  # a teacher thoughts file's provenance (see cotharness.teacher_run)


def load_run(path: Path, name: str | None = None) -> Run:
    """The newest lm-eval results file under ``path`` and the samples written with it."""
    found = sorted(path.rglob("results_*.json"), key=lambda p: p.name)
    if not found:
        raise FileNotFoundError(f"{path}: no lm-eval results_*.json (run lm_eval with --output_path {path})")
    results_file = found[-1]
    stamp = results_file.stem.removeprefix("results_")
    results = json.loads(results_file.read_text())
    run = Run(name or _model_name(results, path), results)
    for task in results["results"]:
        files = list(results_file.parent.glob(f"samples_{task}_{stamp}.jsonl"))
        if not files:
            raise FileNotFoundError(f"{results_file.parent}: no samples_{task}_{stamp}.jsonl; rerun with --log_samples")
        run.samples[task] = {s["doc_id"]: s for s in map(json.loads, files[0].read_text().splitlines())}
    return run


def _model_name(results: dict, path: Path) -> str:
    args = results.get("config", {}).get("model_args") or {}
    if isinstance(args, dict) and args.get("peft"):
        return Path(str(args["peft"])).name
    return path.name


def labels_of(sample: dict) -> tuple:
    """(gold, pred) as the task's process_results scored them (logged by lm-eval as f1_macro)."""
    gold, pred = sample["f1_macro"]
    return gold, pred


def _tokens(runs: list[Run]):
    """(count, name): a tokenizer for counting generated tokens, the first lm-eval run's model, if it
    can be loaded locally; (None, None) otherwise."""
    try:
        from transformers import AutoTokenizer

        pretrained = next(r for r in runs if r.teacher is None).results["config"]["model_args"]["pretrained"]
        tok = AutoTokenizer.from_pretrained(pretrained)
        return (lambda text: len(tok(text, add_special_tokens=False).input_ids)), f"tokenizer of {pretrained}"
    except Exception:  # no local tokenizer (hub id offline, custom model): no counts
        return None, None


def _mean_tokens(samples: list[dict], count_tokens, counted_by) -> tuple[float | None, str | None]:
    """Mean generated tokens and who counted them; a teacher's own server counts where it has them."""
    if all("teacher" in s for s in samples):  # answered rows only: a failed row generated no answer
        samples = [s for s in samples if s["teacher"]["answered"]]
        served = [s["teacher"]["tokens_out"] for s in samples if s["teacher"]["tokens_out"] is not None]
        if served:
            return float(np.mean(served)), SERVER_COUNTS
    resps = [s["resps"][0][0] for s in samples if isinstance(s["resps"][0][0], str)]
    if resps and count_tokens:
        return float(np.mean([count_tokens(t) for t in resps])), counted_by
    return None, None


def _bootstrap(stat, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of ``stat`` over resampled documents (in chunks: bounded memory)."""
    chunk = max(1, min(BOOTSTRAP, 2_000_000 // max(n, 1)))
    values = np.concatenate([stat(rng.integers(0, n, size=(min(chunk, BOOTSTRAP - start), n)))
                             for start in range(0, BOOTSTRAP, chunk)])
    values = values[~np.isnan(values)]
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if len(values) else (np.nan, np.nan)


def _metric_stats(gold: np.ndarray, pred: np.ndarray, classes: list, rng) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, ci_low, ci_high); ``pred`` holds UNPARSED for parse failures."""
    n = len(gold)
    correct = (gold == pred).astype(float)
    out = {"acc": (correct.mean(), *_bootstrap(lambda i: correct[i].mean(axis=1), n, rng))}

    tp = {c: ((gold == c) & (pred == c)).astype(float) for c in classes}
    pc = {c: (pred == c).astype(float) for c in classes}
    gc = {c: (gold == c).astype(float) for c in classes}

    def macro_f1(i):
        with np.errstate(invalid="ignore", divide="ignore"):
            f1s = [np.nan_to_num(2 * tp[c][i].sum(1) / (pc[c][i].sum(1) + gc[c][i].sum(1))) for c in classes]
        return np.mean(f1s, axis=0)

    all_idx = np.arange(n)[None, :]
    out["f1_macro"] = (float(macro_f1(all_idx)[0]), *_bootstrap(macro_f1, n, rng))
    for c in classes:
        def class_acc(i, c=c):
            with np.errstate(invalid="ignore", divide="ignore"):
                return tp[c][i].sum(1) / gc[c][i].sum(1)
        if gc[c].sum():
            out["acc_" + re.sub(r"\W+", "_", c.lower()).strip("_")] = (float(class_acc(all_idx)[0]), *_bootstrap(class_acc, n, rng))
    failed = (pred == UNPARSED).astype(float)
    out["parse_fail"] = (failed.mean(), *_bootstrap(lambda i: failed[i].mean(axis=1), n, rng))
    return {k: tuple(float(x) for x in v) for k, v in out.items()}


def _mcnemar(base_correct: np.ndarray, other_correct: np.ndarray) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    b = int((base_correct & ~other_correct).sum())
    c = int((~base_correct & other_correct).sum())
    if b + c == 0:
        return 1.0
    return float(mcnemar([[0, b], [c, 0]], exact=b + c < 25).pvalue)


def compare(run_dirs: list[Path], out: Path, names: list[str] | None = None, seed: int = 0,
            teacher_task: str = "nli_cot") -> dict:
    """Write the report to ``out``; returns its ``rows``, per-task ``tasks`` detail, the loaded ``runs``
    and ``notes`` (one line each, e.g. documents a teacher file lacks).

    A ``.jsonl`` in ``run_dirs`` is a teacher thoughts file, matched to the first lm-eval run's
    documents; its task is its manifest's, else ``teacher_task``.
    """
    from cotharness import compare_scores, plots
    from cotharness.teacher_run import load_teacher

    if len(run_dirs) < 1:
        raise ValueError("give at least one lm-eval output directory")
    if names and len(names) != len(run_dirs):
        raise ValueError(f"--names has {len(names)} names for {len(run_dirs)} runs")
    paths = [Path(d) for d in run_dirs]
    is_teacher = [p.suffix == ".jsonl" for p in paths]
    for p in paths:
        if p.is_file() and p.suffix != ".jsonl":
            raise ValueError(f"{p}: neither an lm-eval output directory nor a .jsonl thoughts file")
    if all(is_teacher):
        raise ValueError("a teacher thoughts file is compared on the documents of an lm-eval run: "
                         "give at least one lm-eval output directory")
    runs: list[Run | None] = [None if t else load_run(p, names[i] if names else None)
                              for i, (p, t) in enumerate(zip(paths, is_teacher, strict=True))]
    reference = next(r for r in runs if r is not None)
    runs = [r or load_teacher(p, reference, names[i] if names else None, teacher_task)
            for i, (r, p) in enumerate(zip(runs, paths, strict=True))]
    if len({r.name for r in runs}) < len(runs):  # same adapter name twice: fall back to directories
        for r, d in zip(runs, run_dirs, strict=True):
            r.name = Path(d).name
    notes = [f"{r.name}: {r.teacher['path']} lacks {n['missing']} of the {n['matched'] + n['missing']} "
             f"{task} documents of {r.teacher['reference_run']}; they are left out of the comparison"
             for r in runs if r.teacher for task, n in r.teacher["documents"].items() if n["missing"]]
    tasks = [t for t in runs[0].samples if all(t in r.samples for r in runs)]
    if not tasks:
        raise ValueError("the runs share no task")
    count_tokens, counted_by = _tokens(runs)
    rows, details, base_values = [], {}, {}
    for task in tasks:
        spec = compare_scores.spec_of(runs, task)
        if spec is not None:  # scored by a number per document, not a label: its own statistics
            scored = compare_scores.task_report(runs, task, spec, seed, count_tokens, counted_by)
            if scored:
                rows += scored[0]
                details[task] = scored[1]
            continue
        shared = sorted(set.intersection(*(set(r.samples[task]) for r in runs)))
        shared = [d for d in shared if runs[0].samples[task][d].get("f1_macro") is not None]
        hashes = {d: runs[0].samples[task][d].get("doc_hash") for d in shared}
        for r in runs[1:]:
            if any(r.samples[task][d].get("doc_hash") != hashes[d] for d in shared):
                raise ValueError(f"{task}: runs {runs[0].name} and {r.name} evaluated different documents")
        if not shared:
            continue  # unlabelled data: nothing to compare on
        task_detail = {"documents": len(shared), "models": {}}
        schema = schema_for(task)  # label names for display: "entailment" rather than "1"
        display = {str(k): v for k, v in schema.labels.items()} if schema else {}
        base_correct = None
        for r in runs:
            pairs = [labels_of(r.samples[task][d]) for d in shared]
            gold = np.array([display.get(str(g), str(g)) for g, _ in pairs], dtype=object)
            pred = np.array([UNPARSED if p is None else display.get(str(p), str(p)) for _, p in pairs], dtype=object)
            classes = sorted(set(gold))
            stats = _metric_stats(gold, pred, classes, np.random.default_rng(seed))
            correct = gold == pred
            p_value = None if base_correct is None else _mcnemar(base_correct, correct)
            base_correct = correct if base_correct is None else base_correct
            mean_tokens, tokens_by = _mean_tokens([r.samples[task][d] for d in shared], count_tokens, counted_by)
            for metric, (value, lo, hi) in stats.items():
                base_value = base_values.get((task, metric))
                rows.append({"model": r.name, "task": task, "metric": metric, "value": value, "ci_low": lo,
                             "ci_high": hi, "delta_vs_base": None if base_value is None else value - base_value,
                             "mcnemar_p": p_value if metric == "acc" else None, "wilcoxon_p": None,
                             "n": len(shared), "unit": "share"})
                base_values.setdefault((task, metric), value)
            labels = classes + ([UNPARSED] if (pred == UNPARSED).any() else [])
            task_detail["models"][r.name] = {
                "per_class": per_class.report(list(gold), [None if p == UNPARSED else p for p in pred],
                                              order=list(display.values()))["per_class"],
                "confusion": {"labels": labels,
                              "matrix": [[int(((gold == g) & (pred == p)).sum()) for p in labels] for g in classes],
                              "gold_labels": classes},
                "mean_generated_tokens": mean_tokens,
                "generated_tokens_counted_by": tokens_by,
                "wall_seconds": float(r.results.get("total_evaluation_time_seconds") or 0) or None,
            }
        details[task] = task_detail
    out.mkdir(parents=True, exist_ok=True)
    _write(out, rows, details, runs)
    score_tasks = {t for t, d in details.items() if "per_doc_score" in d}
    plots.confusion_matrices({t: d for t, d in details.items() if t not in score_tasks}, out)
    plots.grouped_bars([r for r in rows if r["task"] not in score_tasks], out)
    plots.score_bars([r for r in rows if r["task"] in score_tasks], details, out)
    return {"rows": rows, "tasks": details, "runs": runs, "notes": notes}


def _write(out: Path, rows: list[dict], tasks: dict, runs: list[Run]) -> None:
    keep = ("model", "task", "metric", "value", "ci_low", "ci_high")
    manifest.write_atomic(out / "summary.json", json.dumps([{k: r[k] for k in keep} | {
        "delta_vs_base": r["delta_vs_base"], "mcnemar_p": r["mcnemar_p"], "wilcoxon_p": r["wilcoxon_p"],
        "n": r["n"], "unit": r["unit"]} for r in rows], indent=2))
    manifest.write_csv_atomic(out / "summary.csv", rows, list(rows[0]) if rows else list(keep))
    meta = {"runs": [{"name": r.name, "teacher": r.teacher} if r.teacher else
                     {"name": r.name, "model_args": r.results.get("config", {}).get("model_args"),
                      "lm_eval_version": r.results.get("lm_eval_version"), "date": r.results.get("date")}
                     for r in runs],
            "tasks": tasks, "versions": manifest.package_versions(), "git": manifest.git_commit(),
            "bootstrap_resamples": BOOTSTRAP}
    manifest.write_atomic(out / "manifest.json", json.dumps(meta, indent=2, default=str))
    manifest.write_atomic(out / "summary.md", markdown(rows, tasks, meta))


def _fmt(x, pct=True) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3g}"


def markdown(rows: list[dict], tasks: dict, meta: dict) -> str:
    from cotharness import compare_scores

    lines = ["# Comparison", ""]
    for task, detail in tasks.items():
        if "per_doc_score" in detail:
            lines += compare_scores.markdown(task, detail, [r for r in rows if r["task"] == task])
            continue
        models = list(detail["models"])
        metrics = list(dict.fromkeys(r["metric"] for r in rows if r["task"] == task))
        lines += [f"## {task} ({detail['documents']} documents)", "",
                  "Values in %, 95% bootstrap CI in brackets; delta vs the first model; McNemar p on accuracy.", "",
                  "| model | " + " | ".join(metrics) + " | Δacc | McNemar p | gen. tokens | wall s |",
                  "|---" * (len(metrics) + 5) + "|"]
        for m in models:
            by = {r["metric"]: r for r in rows if r["task"] == task and r["model"] == m}
            cells = [f"{_fmt(by[k]['value'])} [{_fmt(by[k]['ci_low'])}, {_fmt(by[k]['ci_high'])}]" for k in metrics]
            d = detail["models"][m]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {_fmt(by['acc']['delta_vs_base'])} | "
                         f"{_fmt(by['acc']['mcnemar_p'], pct=False)} | {_fmt(d['mean_generated_tokens'], False)} | "
                         f"{_fmt(d['wall_seconds'], False)} |")
        counted_by = {m: detail["models"][m].get("generated_tokens_counted_by") for m in models}
        if SERVER_COUNTS in counted_by.values():  # not the tokenizer the other models were counted with
            lines += ["", "Generated tokens counted by: "
                      + "; ".join(f"{m}: {by}" for m, by in counted_by.items() if by) + "."]
        lines += ["", "Confusion matrices (rows: gold, columns: predicted):", ""]
        for m in models:
            conf = detail["models"][m]["confusion"]
            lines += [f"{m}:", "", "| gold \\ pred | " + " | ".join(conf["labels"]) + " |",
                      "|---" * (len(conf["labels"]) + 1) + "|"]
            lines += [f"| {g} | " + " | ".join(map(str, row)) + " |"
                      for g, row in zip(conf["gold_labels"], conf["matrix"], strict=True)]
            lines.append("")
        lines += ["Per class, in % (precision / recall / F1; support = gold documents):", "",
                  "| class | " + " | ".join(models) + " | support |", "|---" * (len(models) + 2) + "|"]
        classes = dict.fromkeys(c for m in models for c in detail["models"][m]["per_class"])
        for c in classes:
            cells = [detail["models"][m]["per_class"].get(c) for m in models]
            support = next(x["support"] for x in cells if x)
            lines.append(f"| {c} | " + " | ".join(
                f"{_fmt(x['precision'])} / {_fmt(x['recall'])} / {_fmt(x['f1'])}" if x else "-" for x in cells)
                + f" | {support} |")
        lines += ["", f"![{task}](bars_{task}.png)", ""]
    git = meta["git"]
    lines += ["---", f"cotharness {meta['versions'].get('cotharness')}, lm-eval {meta['versions'].get('lm_eval')}, "
              f"transformers {meta['versions'].get('transformers')}, commit {git.get('commit')}"
              f"{' (dirty)' if git.get('dirty') else ''}", ""]
    return "\n".join(lines)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cotharness compare", width=max(110, Console().width))
    # tasks scored per document (judge_score is a mean 1-5, not a %) add the Wilcoxon test's column
    score_tasks = {r["task"] for r in rows if r.get("unit") == "score"}
    for col in ("task", "model", "metric", "value % (score: mean)" if score_tasks else "value %", "95% CI",
                "Δ vs base", "McNemar p") + (("Wilcoxon p",) if score_tasks else ()):
        table.add_column(col)
    for r in rows:
        if r["metric"] in ("acc", "f1_macro", "parse_fail") or r["metric"].startswith("acc_") \
                or r["task"] in score_tasks:
            pct = r.get("unit") != "score"
            table.add_row(r["task"], r["model"], r["metric"], _fmt(r["value"], pct),
                          f"[{_fmt(r['ci_low'], pct)}, {_fmt(r['ci_high'], pct)}]", _fmt(r["delta_vs_base"], pct),
                          _fmt(r["mcnemar_p"], pct=False),
                          *((_fmt(r.get("wilcoxon_p"), pct=False),) if score_tasks else ()))
    Console().print(table)
