"""``cotharness compare``: several lm-eval runs on the same documents, side by side, with statistics.

Reads each run's ``results_*.json`` and ``samples_<task>_*.jsonl`` (``--log_samples``), pairs the
models on their documents (``cotharness.compare_runs``: it refuses runs on different documents unless
asked to compare on the shared ones) and reports per task every metric the task reports, computed by
the task's own aggregation (``cotharness.compare_stats``: a value here equals the results file's),
with a 95% CI, the delta against the first model (the base), a paired McNemar test on per-document
correctness, mean generated tokens and wall time, per-class precision/recall/F1 and confusion
matrices. Tasks scored by a number per document (a judge's 1-5, declared in the task YAML's
``metadata.per_doc_score``) get a Wilcoxon signed-rank test on the scores and McNemar on passing
instead (``cotharness.compare_scores``). A datagen thoughts ``.jsonl`` may stand in for a run: the
teacher model's answers on the same documents (``cotharness.teacher_run``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cotharness import per_class
from cotharness.compare_runs import (
    SERVER_COUNTS,
    CompareError,
    Run,
    check_names,
    load_run,
    mean_tokens,
    pair_documents,
    tokens,
)
from cotharness.compare_stats import (
    BOOTSTRAP,
    INTERVALS,
    WILSON_MARK,
    WILSON_NOTE,
    ci_cell,
    dumps,
    estimates,
    fmt,
    items_of,
    json_safe,
    logged_value,
    mcnemar,
    point_value,
    task_metrics,
)
from cotharness.per_class import UNPARSED
from harness_tasks import manifest
from harness_tasks.tasks import schema_for

__all__ = ["SERVER_COUNTS", "CompareResult", "CompareRun", "Run", "compare", "labels_of", "markdown", "print_table",
           "run"]
CSV_FIELDS = ("model", "task", "metric", "value", "ci_low", "ci_high", "delta_vs_base", "mcnemar_p", "wilcoxon_p",
              "n", "unit", "ci_method")


def labels_of(sample: dict) -> tuple:
    """(gold, pred) as the task's process_results scored them (logged by lm-eval as f1_macro)."""
    gold, pred = sample["f1_macro"]
    return gold, pred


def load_runs(run_dirs: list[Path], names: list[str] | None, teacher_task: str) -> list[Run]:
    """lm-eval runs (folders or results files) and teacher thoughts files, named, in the order given."""
    from cotharness.teacher_run import load_teacher

    if len(run_dirs) < 1:
        raise CompareError("give at least one lm-eval output directory")
    if names and len(names) != len(run_dirs):
        raise CompareError(f"--names gives {len(names)} name(s) for {len(run_dirs)} runs: give one per run, "
                           "comma-separated, in the order of the runs")
    paths = [Path(d) for d in run_dirs]
    is_teacher = [p.suffix == ".jsonl" for p in paths]
    if all(is_teacher):
        raise CompareError("a teacher thoughts file is compared on the documents of an lm-eval run: "
                         "give at least one lm-eval output directory")
    runs: list[Run | None] = [None if t else load_run(p, names[i] if names else None)
                              for i, (p, t) in enumerate(zip(paths, is_teacher, strict=True))]
    reference = next(r for r in runs if r is not None)
    runs = [r or load_teacher(p, reference, names[i] if names else None, teacher_task)
            for i, (r, p) in enumerate(zip(runs, paths, strict=True))]
    check_names(runs, names_given=bool(names))
    return runs


def shared_tasks(runs: list[Run], notes: list[str]) -> list[str]:
    """The tasks every run has; a note for each task some run lacks."""
    every = list(dict.fromkeys(t for r in runs for t in r.samples))
    tasks = [t for t in every if all(t in r.samples for r in runs)]
    for t in every:
        if t not in tasks:
            notes.append(f"{t}: left out, not in {', '.join(r.name for r in runs if t not in r.samples)} "
                         f"(only in {', '.join(r.name for r in runs if t in r.samples)})")
    if not tasks:
        raise CompareError("the runs share no task")
    return tasks


def metrics_of(runs: list[Run], task: str, notes: list[str]):
    """The task's metrics as every run reports them, each with the one aggregation all runs declared."""
    lm_runs = [r for r in runs if r.teacher is None]
    per_run = [{m.name: m for m in task_metrics(r.results, task)} for r in lm_runs]
    chosen = []
    for name, metric in per_run[0].items():
        lacking = [r.name for r, ms in zip(lm_runs, per_run, strict=True) if name not in ms]
        lacking += [r.name for r in runs if r.teacher and not any(name in s for s in r.samples[task].values())]
        if lacking:
            notes.append(f"{task}: {name} left out, not reported by {', '.join(lacking)}")
            continue
        other = next((r for r, ms in zip(lm_runs, per_run, strict=True) if ms[name].aggregation != metric.aggregation),
                     None)
        if other:
            raise CompareError(f"{task}: {lm_runs[0].name} aggregates {name} by {metric.aggregation}, {other.name} by "
                             f"another function; rerun them with one version of the task")
        chosen.append(metric)
    for r in lm_runs:  # the report must say what lm-eval said: recompute each run's own value on its documents
        samples = [r.samples[task][d] for d in sorted(r.samples[task])]
        for m in chosen:
            value, logged = point_value(m, items_of(samples, m.name)[0]), logged_value(r.results, task, m.name)
            if not _same(value, logged):
                notes.append(f"{r.name}: {task} {m.name} is {value} from its samples by harness_tasks.metrics."
                             f"{m.aggregation} but {logged} in its results file (another version of the metric?); "
                             "the report shows the recomputed value")
    return chosen


def _same(value: float | None, logged) -> bool:
    if value is None or logged is None or (isinstance(logged, float) and math.isnan(logged)):
        return value is None and (logged is None or math.isnan(logged))
    return isinstance(logged, int | float) and math.isclose(value, logged, rel_tol=1e-12, abs_tol=0.0)


def compare(run_dirs: list[Path], out: Path, names: list[str] | None = None, seed: int = 0,
            teacher_task: str = "nli_cot", intersect: bool = False) -> dict:
    """Write the report to ``out``; returns its ``rows``, per-task ``tasks`` detail, the loaded ``runs``
    and ``notes`` (one line each: tasks left out, documents lost with ``intersect``, ...).

    A run is an lm-eval output folder with one results file, or a ``results_*.json`` itself; a
    ``.jsonl`` is a teacher thoughts file, matched to the first lm-eval run's documents (its task: its
    manifest's, else ``teacher_task``). Runs on different documents are refused unless ``intersect``.
    """
    from cotharness import compare_scores, plots

    runs = load_runs(run_dirs, names, teacher_task)
    notes: list[str] = []
    tasks = shared_tasks(runs, notes)
    count_tokens, counted_by = tokens(runs)
    rows, details = [], {}
    for task in tasks:
        spec = compare_scores.spec_of(runs, task)
        shared, lost = pair_documents(runs, task, intersect, spec.get("same") if spec else None)
        if lost:
            notes.append(f"{task}: compared on the {len(shared)} documents all runs share; "
                         + ", ".join(f"{n} lost {x['lost']} of its {x['documents']}" for n, x in lost.items()))
        chosen = metrics_of(runs, task, notes)
        if spec is not None:  # scored by a number per document, not a label: its own paired tests
            report = compare_scores.task_report(runs, task, spec, shared, chosen, seed, count_tokens, counted_by)
        else:
            report = label_report(runs, task, shared, chosen, seed, count_tokens, counted_by)
        if report is None:
            notes.append(f"{task}: left out, no labelled document to compare on")
            continue
        rows += report[0]
        details[task] = report[1] | ({"documents_lost": lost} if lost else {})
    out.mkdir(parents=True, exist_ok=True)
    _write(out, rows, details, runs, notes, seed)
    score_tasks = {t for t, d in details.items() if "per_doc_score" in d}
    plots.confusion_matrices({t: d for t, d in details.items() if t not in score_tasks}, out)
    plots.grouped_bars([r for r in rows if r["task"] not in score_tasks], out)
    plots.score_bars([r for r in rows if r["task"] in score_tasks], details, out)
    return {"rows": rows, "tasks": details, "runs": runs, "notes": notes}


@dataclass
class CompareRun:
    """The settings of one ``cotharness compare``: the runs (the first is the base) and where the report goes."""

    runs: list[Path]
    out: Path
    names: list[str] | None = None
    seed: int = 0
    teacher_task: str = "nli_cot"
    intersect: bool = False


@dataclass(frozen=True)
class CompareResult:
    """The report's files (PNGs beside them in ``out``) and ``compare``'s returned report."""

    out: Path
    summary_md: Path
    summary_json: Path
    summary_csv: Path
    manifest: Path
    report: dict = field(repr=False)


def run(cfg: CompareRun) -> CompareResult:
    """The step function of ``cotharness compare``; a user's mistake raises CompareError (a UserError)."""
    out = Path(cfg.out)
    report = compare(cfg.runs, out, names=cfg.names, seed=cfg.seed, teacher_task=cfg.teacher_task,
                     intersect=cfg.intersect)
    return CompareResult(out, out / "summary.md", out / "summary.json", out / "summary.csv", out / "manifest.json",
                         report)


def label_report(runs: list[Run], task: str, shared: list[int], chosen: list, seed: int, count_tokens, counted_by):
    """(rows, detail) of a task answered with a label, or None when no shared document has a gold label."""
    docs = {r.name: [r.samples[task][d] for d in shared] for r in runs}
    labelled = items_of(docs[runs[0].name], "f1_macro")[1]
    if not labelled:
        return None
    stats = estimates(docs, chosen, seed)
    schema = schema_for(task)  # label names for display: "entailment" rather than "1"
    display = {str(k): v for k, v in schema.labels.items()} if schema else {}
    rows, detail, base_correct, base_pred = [], {"documents": len(shared), "models": {}}, None, None
    base_values = {m.name: stats[runs[0].name, m.name]["value"] for m in chosen}
    for r in runs:
        pairs = [labels_of(docs[r.name][j]) for j in labelled]
        gold = np.array([display.get(str(g), str(g)) for g, _ in pairs], dtype=object)
        pred = np.array([UNPARSED if p is None else display.get(str(p), str(p)) for _, p in pairs], dtype=object)
        correct = gold == pred
        p_value = None if base_correct is None else mcnemar(base_correct, correct)
        base_correct = correct if base_correct is None else base_correct
        # the same model in another format (a GGUF beside its HF run) should give the same answers,
        # right or wrong: accuracy alone can hide answers that changed both ways
        base_pred = pred if base_pred is None else base_pred
        for m in chosen:
            est = stats[r.name, m.name]
            base_value = None if r is runs[0] else base_values[m.name]
            rows.append({"model": r.name, "task": task, "metric": m.name, "value": est["value"],
                         "ci_low": est["ci_low"], "ci_high": est["ci_high"],
                         "delta_vs_base": None if base_value is None or est["value"] is None else est["value"] - base_value,
                         "mcnemar_p": p_value if m.name == "acc" else None, "wilcoxon_p": None, "n": est["n"],
                         "unit": "share", "ci_method": est["ci_method"]})
        # a class predicted but never gold is a column too: its documents are errors to be seen
        rep = per_class.report(list(gold), [None if p == UNPARSED else p for p in pred], order=list(display.values()))
        mean_generated, tokens_by = mean_tokens(docs[r.name], count_tokens, counted_by)
        detail["models"][r.name] = {
            "per_class": rep["per_class"],
            "confusion": {"labels": rep["confusion"]["predicted"], "matrix": rep["confusion"]["matrix"],
                          "gold_labels": rep["confusion"]["gold"]},
            "same_answer_as_base": float(np.mean(pred == base_pred)),
            "mean_generated_tokens": mean_generated,
            "generated_tokens_counted_by": tokens_by,
            "wall_seconds": float(r.results.get("total_evaluation_time_seconds") or 0) or None,
        }
    return rows, detail


def _write(out: Path, rows: list[dict], tasks: dict, runs: list[Run], notes: list[str], seed: int) -> None:
    rows = json_safe(rows)
    manifest.write_atomic(out / "summary.json", dumps(rows))
    manifest.write_csv_atomic(out / "summary.csv", [{k: r.get(k) for k in CSV_FIELDS} for r in rows], list(CSV_FIELDS))
    meta = {"runs": [{"name": r.name, "path": str(r.path), "files": r.files, "teacher": r.teacher} if r.teacher else
                     {"name": r.name, "path": str(r.path), "files": r.files,
                      "model_args": r.results.get("config", {}).get("model_args"),
                      "lm_eval_version": r.results.get("lm_eval_version"), "date": r.results.get("date")}
                     for r in runs],
            "tasks": tasks, "notes": notes, "versions": manifest.package_versions(), "git": manifest.git_commit(),
            "intervals": INTERVALS, "bootstrap_resamples": BOOTSTRAP, "seed": seed}
    manifest.write_atomic(out / "manifest.json", dumps(meta))
    manifest.write_atomic(out / "summary.md", markdown(rows, json_safe(tasks), json_safe(meta)))


def markdown(rows: list[dict], tasks: dict, meta: dict) -> str:
    from cotharness import compare_scores

    lines = ["# Comparison", ""]
    if meta.get("notes"):
        lines += ["Notes:", "", *(f"- {n}" for n in meta["notes"]), ""]
    for task, detail in tasks.items():
        task_rows = [r for r in rows if r["task"] == task]
        if "per_doc_score" in detail:
            lines += compare_scores.markdown(task, detail, task_rows)
            continue
        lines += _label_markdown(task, detail, task_rows)
    git = meta["git"]
    lines += ["---", f"cotharness {meta['versions'].get('cotharness')}, lm-eval {meta['versions'].get('lm_eval')}, "
              f"transformers {meta['versions'].get('transformers')}, commit {git.get('commit')}"
              f"{' (dirty)' if git.get('dirty') else ''}", ""]
    return "\n".join(lines)


def _label_markdown(task: str, detail: dict, rows: list[dict]) -> list[str]:
    models = list(detail["models"])
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    lines = [f"## {task} ({detail['documents']} documents)", "",
             "Values in %, each the task's own metric (as in the results files); 95% CI in brackets (bootstrap over "
             "documents); delta vs the first model; McNemar p on accuracy; same answer: the share of documents "
             "whose predicted label is the first model's.", "",
             "| model | " + " | ".join(metrics) + " | Δacc | McNemar p | same answer | gen. tokens | wall s |",
             "|---" * (len(metrics) + 6) + "|"]
    for m in models:
        by = {r["metric"]: r for r in rows if r["model"] == m}
        d, acc = detail["models"][m], by.get("acc", {})
        lines.append(f"| {m} | " + " | ".join(ci_cell(by[k]) for k in metrics)
                     + f" | {fmt(acc.get('delta_vs_base'))} | {fmt(acc.get('mcnemar_p'), pct=False)} | "
                     f"{fmt(d.get('same_answer_as_base'))} | {fmt(d['mean_generated_tokens'], False)} | {fmt(d['wall_seconds'], False)} |")
    if any(r.get("ci_method") == "wilson" for r in rows):
        lines += ["", WILSON_NOTE]
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
            f"{fmt(x['precision'])} / {fmt(x['recall'])} / {fmt(x['f1'])}" if x else "-" for x in cells)
            + f" | {support} |")
    return lines + ["", f"![{task}](bars_{task}.png)", ""]


def print_table(rows: list[dict]) -> None:
    """Every row on the console; piped or redirected, at full width (a narrow pipe must not cut columns)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=1_000, no_color=True)
    table = Table(title="cotharness compare")
    # tasks scored per document (judge_score is a mean 1-5, not a %) add the Wilcoxon test's column
    score_tasks = {r["task"] for r in rows if r.get("unit") == "score"}
    for col in ("task", "model", "metric", "value % (score: mean)" if score_tasks else "value %", "95% CI",
                "Δ vs base", "McNemar p") + (("Wilcoxon p",) if score_tasks else ()):
        table.add_column(col, overflow="fold")
    for r in rows:
        pct = r.get("unit") != "score"
        table.add_row(r["task"], r["model"], r["metric"], fmt(r["value"], pct),
                      f"[{fmt(r['ci_low'], pct)}, {fmt(r['ci_high'], pct)}]" + (WILSON_MARK if r.get("ci_method") == "wilson" else ""),
                      fmt(r["delta_vs_base"], pct), fmt(r["mcnemar_p"], pct=False),
                      *((fmt(r.get("wilcoxon_p"), pct=False),) if score_tasks else ()))
    console.print(table)
    if any(r.get("ci_method") == "wilson" for r in rows):
        console.print(WILSON_NOTE)
