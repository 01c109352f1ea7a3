"""``cotharness study report CONFIG``: ``studies/<name>/report.md`` (and its PNGs under ``report/``) from
what the study's stages recorded, without running anything.

Every number is read from a stage's own output: the ablation table and the per-class results from the
comparison (``compare/summary.json`` and ``compare/manifest.json``), what each ablation's data kept from
prepare's ``sft/stats.json`` (or the given SFT files), the loss curves from each run's trainer state and
``run.json``, API dollars from the datagen manifests, compute time from ``run.json`` and ``state.json``,
provenance from ``state.json`` and the outputs' manifests. Only the paired test against the primary row is
computed here, by the comparison's own functions on the same logged samples. A stage that has not run
is said to be not run; the same recorded outputs give the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness_tasks.manifest import write_atomic

REPORT_FILE = "report.md"
PLOTS = "report"
NOT_RUN = "not run yet"
KEY_VERSIONS = ("cotharness", "transformers", "trl", "peft", "lm_eval", "torch")


def _read(path: Path | str) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(x, pct: bool = True) -> str:
    from cotharness.compare_stats import fmt

    return fmt(x, pct)


def _hours(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.4f} h ({seconds:.0f} s)"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


class _Study:
    """The study's stages, plan verdicts and recorded state, read once."""

    def __init__(self, config: Path, root: Path, overrides: dict | None = None):
        from cotharness.study import identity
        from cotharness.study.config import load_study
        from cotharness.study.graph import build

        self.config, self.root = config, root
        self.study = load_study(config, overrides)
        self.home = root / self.study.name
        self.stages = build(self.study, root, config)
        self.verdicts = {v.stage.id: v for v in identity.plan(self.stages, self.home)}
        self.state = identity.read_state(self.home)["stages"]

    def of(self, kind: str):
        return [s for s in self.stages if s.kind == kind]

    def recorded(self, stage) -> dict | None:
        """What state.json holds for a finished stage whose outputs exist, else None (not run)."""
        rec = self.state.get(stage.id)
        return rec if rec is not None and all(Path(p).exists() for p in stage.outputs) else None

    def caveat(self, stage) -> list[str]:
        """A line when the recorded results are not current (the config or an upstream changed since)."""
        v = self.verdicts[stage.id]
        if v.status == "current" or self.recorded(stage) is None:
            return []
        return [f"> {stage.id} is {v.status} ({'; '.join(v.reasons)}): these results are from its last run, "
                "before that change; `cotharness study run` brings them up to date.", ""]


# --- 1-2: the comparison --------------------------------------------------------------------------------

def _paired_vs_primary(config: dict, primary: str, tasks: dict) -> tuple[dict, list[str]]:
    """(task -> row -> McNemar p on accuracy against ``primary``), notes: compare's own loading, pairing
    and test on the logged samples. Tasks scored per document get no test here (a note says so)."""
    import numpy as np

    from cotharness import compare_scores
    from cotharness.compare import labels_of, load_runs
    from cotharness.compare_runs import pair_documents
    from cotharness.compare_stats import items_of, mcnemar
    from harness_tasks.errors import UserError

    try:
        runs = load_runs([Path(p) for p in config["runs"]], list(config["names"]), config["teacher_task"])
    except (UserError, OSError, KeyError) as err:
        return {}, [f"no paired test against {primary}: the compared runs could not be read again ({err})"]
    by_name = {r.name: r for r in runs}
    if primary not in by_name:
        return {}, []
    out, notes = {}, []
    for task in tasks:
        if "per_doc_score" in tasks[task] or compare_scores.spec_of(runs, task) is not None:
            notes.append(f"{task}: Δ vs {primary} is the difference of the point estimates (no paired test here)")
            continue
        try:
            shared, _ = pair_documents(runs, task, config.get("intersect", False))
        except UserError as err:
            notes.append(f"{task}: no paired test against {primary} ({err})")
            continue
        docs = {r.name: [r.samples[task][d] for d in shared] for r in runs}
        labelled = items_of(docs[runs[0].name], "f1_macro")[1]
        correct = {}
        for r in runs:
            pairs = [labels_of(docs[r.name][j]) for j in labelled]
            correct[r.name] = np.array([p is not None and str(g) == str(p) for g, p in pairs], dtype=bool)
        out[task] = {name: (None if name == primary else mcnemar(correct[primary], c)) for name, c in correct.items()}
    return out, notes


def _comparison(s: _Study) -> tuple[list[str], list[str]]:
    """(ablation table lines, per-class lines)."""
    from cotharness.compare_stats import WILSON_NOTE, ci_cell

    stage = s.of("compare")[0]
    title = ["## Ablation table", ""]
    per_class = ["## Per-class results", ""]
    rec = s.recorded(stage)
    rows = _read(Path(stage.config["out"]) / "summary.json") if rec else None
    if rows is None:
        line = f"The comparison is {NOT_RUN} (it needs every evaluation); `cotharness study run` runs it."
        return [*title, line, ""], [*per_class, line, ""]
    meta = _read(Path(stage.config["out"]) / "manifest.json") or {}
    tasks = meta.get("tasks") or {}
    base, primary = s.study.comparison.base, s.study.comparison.primary
    paired, notes = _paired_vs_primary(stage.config, primary, tasks) if primary else ({}, [])
    lines = [*title, *s.caveat(stage),
             f"From the comparison (`compare/summary.json`): each row's metrics in %, 95% CI in brackets; Δ in "
             f"points of the key metric (accuracy where the task has it) against the base row `{base}`"
             + (f" and the primary row `{primary}`" if primary else "")
             + "; McNemar p on paired per-document correctness (against the base: the comparison's; against "
             "the primary: the same test on the same logged samples).", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in task_rows))
        models = list(dict.fromkeys(r["model"] for r in task_rows))
        key = "acc" if "acc" in metrics else metrics[0]
        pct = task_rows[0].get("unit") != "score"
        keyed = {r["model"]: r for r in task_rows if r["metric"] == key}
        head = ["row", *metrics, f"Δ{key} vs {base}", "McNemar p vs base"]
        if primary:
            head += [f"Δ{key} vs {primary}", f"McNemar p vs {primary}"]
        table = []
        for m in models:
            by = {r["metric"]: r for r in task_rows if r["model"] == m}
            row = [m, *(ci_cell(by[k], pct) if k in by else "-" for k in metrics),
                   _fmt(by.get(key, {}).get("delta_vs_base"), pct), _fmt(by.get(key, {}).get("mcnemar_p"), False)]
            if primary:
                mine, theirs = keyed.get(m, {}).get("value"), keyed.get(primary, {}).get("value")
                delta = None if m == primary or mine is None or theirs is None else mine - theirs
                row += [_fmt(delta, pct), _fmt((paired.get(task) or {}).get(m), False)]
            table.append(row)
        documents = (tasks.get(task) or {}).get("documents")
        lines += [f"### {task}" + (f" ({documents} documents)" if documents else ""), "", *_table(head, table)]
        if any(r.get("ci_method") == "wilson" for r in task_rows):
            lines += [WILSON_NOTE, ""]
        if (Path(stage.config["out"]) / f"bars_{task}.png").is_file():
            lines += [f"![{task}](compare/bars_{task}.png)", ""]
    if primary and primary not in {r["model"] for r in rows}:
        notes.append(f"the primary row {primary} is not in the comparison")
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    per_class += s.caveat(stage)
    found = False
    for task, detail in tasks.items():
        models = {m: d.get("per_class") for m, d in (detail.get("models") or {}).items() if d.get("per_class")}
        if not models:
            continue
        found = True
        classes = list(dict.fromkeys(c for pc in models.values() for c in pc))
        body = []
        for c in classes:
            cells = [models[m].get(c) for m in models]
            support = next((x["support"] for x in cells if x), "-")
            body.append([c, *(f"{_fmt(x['precision'])} / {_fmt(x['recall'])} / {_fmt(x['f1'])}" if x else "-"
                              for x in cells), support])
        per_class += [f"### {task}", "", "Precision / recall / F1 in % per gold class (support: gold documents), "
                      "from `compare/manifest.json`.", "", *_table(["class", *models, "support"], body)]
        if (Path(stage.config["out"]) / f"confusion_{task}.png").is_file():
            per_class += [f"![confusion {task}](compare/confusion_{task}.png)", ""]
    if not found:
        per_class += ["The comparison recorded no per-class results (no task answered with a label).", ""]
    return lines, per_class


# --- 3: the data --------------------------------------------------------------------------------------

def _count_lines(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def _data(s: _Study) -> list[str]:
    lines = ["## What each ablation's data kept", ""]
    prepare, synthetic = s.of("prepare"), s.of("synthetic")
    if s.of("curate"):
        return [*lines, *_backtranslated(s)]
    if synthetic:
        files = synthetic[0].outputs
        counts = [_count_lines(f) if s.recorded(synthetic[0]) else None for f in files[:3]]
        return [*lines, "The study made its own data (the `synthetic` stage, datagen/synthetic/nli.py: the reasoning "
                "is written by rule, no teacher); rows counted in `data/`.", "",
                *_table(["ablation", "train rows", "dev rows", "test rows"],
                        [["synthetic", *(c if c is not None else NOT_RUN for c in counts)]])]
    if not prepare:
        body = [[a, _count_lines(f.train), _count_lines(f.dev)] for a, f in (s.study.data.sft or {}).items()
                if a in s.study.ablations]
        return [*lines, "The study was given its SFT files (no teacher, no prepare): rows counted in the files; "
                "no teacher accuracy or reflections to report.", "",
                *_table(["ablation", "train rows", "dev rows"], [[c if c is not None else "-" for c in r]
                                                                 for r in body])]
    stage = prepare[0]
    stats = _read(Path(stage.config["out"]) / "stats.json") if s.recorded(stage) else None
    if stats is None:
        return [*lines, f"prepare is {NOT_RUN}.", ""]
    teacher = stats.get("teacher") or {}
    rows, reflections = stats.get("rows") or {}, stats.get("reflections") or {}
    lines += s.caveat(stage)
    lines += [f"From prepare's `sft/stats.json`: the teacher answered {rows.get('answered_unique', '-')} unique "
              f"input pairs ({rows.get('input', '-')} input rows, {rows.get('failed', '-')} failed, "
              f"{rows.get('duplicates', '-')} duplicates, {rows.get('conflicts', '-')} conflicts); its accuracy "
              f"against gold on them: {_fmt(teacher.get('accuracy'))}% of {teacher.get('rows', '-')} labelled rows; "
              f"reflected rows: {reflections.get('rows', '-')}"
              + (f" (from {reflections['from']})" if reflections.get("from") else "") + ".", ""]
    body = []
    for name, a in (stats.get("ablations") or {}).items():
        sources = ", ".join(f"{k} {v}" for k, v in (a.get("sources") or {}).items()) or "-"
        left = a.get("left_out")
        left = ", ".join(f"{k} {v}" for k, v in left.items()) if isinstance(left, dict) else (left or "-")
        body.append([name, a.get("rows", "-"), a.get("train", "-"), a.get("dev", "-"), sources, left or "-"])
    return [*lines, *_table(["ablation", "rows", "train", "dev", "sources", "left out"], body)]


def _backtranslated(s: _Study) -> list[str]:
    """A backtranslation study's data: no teacher accuracy or prepare; what inverse, augment and curate kept."""
    inverse, augment, curate = s.of("inverse")[0], s.of("augment")[0], s.of("curate")[0]
    lines = ["The study made its data by instruction backtranslation (no teacher, no prepare): the seed pairs "
             "trained the backward model, which wrote an instruction per unlabelled response; a judge rated "
             "each pair 1-5.", ""]
    inv = _read(inverse.outputs[2]) if s.recorded(inverse) else None
    if inv:
        out = inv.get("output") or {}
        lines += [f"inverse: {inv.get('input', {}).get('rows', '-')} seed rows read, "
                  f"{len(inv.get('duplicates_left_out') or [])} repeats left out; backward train "
                  f"{(out.get('train') or {}).get('rows', '-')}, dev {(out.get('dev') or {}).get('rows', '-')}.", ""]
    else:
        lines += [f"inverse is {NOT_RUN}.", ""]
    cur = _read(curate.outputs[3]) if s.recorded(curate) else None
    if cur is None:
        return [*lines, f"curate is {NOT_RUN}.", ""]
    pairs = cur.get("pairs") or {}
    dist = ", ".join(f"{k}: {v}" for k, v in (cur.get("distribution") or {}).items())
    lines += [*s.caveat(curate), f"curate (`{Path(curate.outputs[3]).name}`): {pairs.get('input', '-')} augmented "
              f"pairs, {pairs.get('not_judged_augment_failed', '-')} without an instruction (augment failed); "
              f"scores {dist}.", ""]
    rows = {"curated": [pairs.get("kept", "-"), f"score >= {cur.get('threshold', '-')}"],
            "augmented": [_count_lines(augment.outputs[2]) if s.recorded(augment) else NOT_RUN,
                          "every pair with an instruction, not judged"]}
    body = [[a, *rows[a]] for a in s.study.ablations if a in rows]
    return [*lines, *_table(["ablation", "train rows", "kept"], body)]


# --- 4: training --------------------------------------------------------------------------------------

def _history(run_dir: Path, record: dict) -> list[dict]:
    """The Trainer's log history (the latest checkpoint's, which holds every earlier step), plus the final
    evaluation run.json recorded after the last checkpoint."""
    from trainer.train import latest_checkpoint

    state = _read(run_dir / "trainer_state.json")
    if state is None:
        checkpoint = latest_checkpoint(run_dir)
        state = _read(checkpoint / "trainer_state.json") if checkpoint else None
    history = list((state or {}).get("log_history") or [])
    final = (record.get("eval_metrics") or {}).get("eval_loss")
    step = record.get("global_step")
    if final is not None and step is not None and not any(h.get("step") == step and "eval_loss" in h for h in history):
        history.append({"step": step, "eval_loss": final})
    return history


def _loss_plot(curves: dict[str, list[dict]], path: Path) -> Path | None:
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, history) in enumerate(curves.items()):
        color = f"C{i % 10}"
        train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, label=f"{name} train")
        if evals:
            ax.plot(*zip(*evals, strict=True), color=color, linestyle="--", marker="o", label=f"{name} eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss per run (solid: train, dashed: eval)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path


def _training(s: _Study) -> list[str]:
    lines = ["## Training", ""]
    body, curves = [], {}
    for stage in s.of("train"):
        run_dir = Path(stage.config["output_dir"])
        record = _read(run_dir / "run.json")
        name = stage.id.removeprefix("train/")
        if record is None:
            body.append([name, NOT_RUN, "-", "-", "-", "-"])
            continue
        status = record.get("status", "-")
        if s.verdicts[stage.id].status != "current":
            status += f" ({s.verdicts[stage.id].status})"
        segments = record.get("segments") or []
        seg = " + ".join(f"{x.get('seconds', 0):.0f} s" for x in segments) if segments else "-"
        final = (record.get("eval_metrics") or {}).get("eval_loss")
        body.append([name, status, f"{record.get('global_step', '-')} / {record.get('max_steps', '-')}",
                     _fmt(final, False), _hours(record.get("train_seconds")), f"{len(segments)}: {seg}"])
        curves[name] = _history(run_dir, record)
    if not body:
        return [*lines, "The study has no training run.", ""]
    lines += _table(["run", "status", "steps", "final eval loss", "training time", "segments"], body)
    plot = _loss_plot(curves, s.home / PLOTS / "loss.png")
    if plot:
        lines += [f"![loss curves]({PLOTS}/loss.png)", "",
                  "Train and eval loss per step from each run's trainer state (the latest checkpoint's log "
                  "history; the final evaluation from `run.json`).", ""]
    else:
        lines += [f"Loss curves: {NOT_RUN} (no run has logged a step).", ""]
    return lines


# --- 5: costs -------------------------------------------------------------------------------------------

def _eval_seconds(s: _Study, row: str) -> float | None:
    stage = s.of("compare")[0]
    meta = (_read(Path(stage.config["out"]) / "manifest.json") or {}) if s.recorded(stage) else {}
    found = [(d.get("models") or {}).get(row, {}).get("wall_seconds") for d in (meta.get("tasks") or {}).values()]
    return next((x for x in found if x is not None), None)


def _costs(s: _Study) -> list[str]:
    lines = ["## Costs", ""]
    api, total_cost = [], 0.0
    for stage in s.stages:
        if stage.kind not in ("thoughts", "score", "reflect", "teacher_test", "augment", "curate"):
            continue
        manifest = _read(stage.outputs[1])
        if manifest is None:
            api.append([stage.id, stage.config["model"], NOT_RUN, "-", "-", "-"])
            continue
        runs = manifest.get("runs") or []
        cost = sum(r.get("cost") or 0.0 for r in runs)
        total_cost += cost
        api.append([stage.id, manifest.get("model", "-"), f"${cost:.4f}" + ("" if manifest.get("price") else
                                                                           " (no price: local or unknown)"),
                    sum(r.get("tokens_in") or 0 for r in runs), sum(r.get("tokens_out") or 0 for r in runs),
                    f"{sum(r.get('wall_seconds') or 0 for r in runs):.0f} s over {len(runs)} invocation(s)"])
    if api:
        lines += ["API spend per datagen stage, summed over its invocations (the stage's `.manifest.json`):", "",
                  *_table(["stage", "model", "dollars", "tokens in", "tokens out", "wall"], api),
                  f"API total: ${total_cost:.4f} (stages not run count nothing).", ""]
    else:
        lines += ["No teacher stage: no API spend.", ""]
    compute, total = [], 0.0
    for stage in s.stages:
        local = stage.kind in ("augment", "curate") and stage.config["backend"] == "hf"
        if stage.kind not in ("tiny_base", "synthetic", "train", "eval", "prepare", "compare", "inverse") and not local:
            continue
        rec = s.state.get(stage.id) or {}
        seconds, source = rec.get("seconds"), "state.json (the stage's wall time)"
        if stage.kind == "train":
            record = _read(Path(stage.config["output_dir"]) / "run.json") or {}
            if record.get("train_seconds") is not None:
                seconds, source = record["train_seconds"], "run.json train_seconds (every segment)"
        if seconds is None and stage.kind == "eval":  # lm-eval's own evaluation time, as compare read it
            seconds = _eval_seconds(s, stage.config["name"])
            source = "lm-eval's total_evaluation_time_seconds (compare/manifest.json)"
        if seconds is None:
            compute.append([stage.id, NOT_RUN if stage.id not in s.state else "-", "-",
                            "-" if stage.id not in s.state else "not recorded"])
            continue
        total += seconds
        device = {"eval": stage.config.get("device") or "auto", "train": "as trained"}.get(stage.kind, "CPU")
        compute.append([stage.id, _hours(seconds), device, source])
    lines += ["Compute time per training, evaluation and local stage (hours of the device it ran on):", "",
              *_table(["stage", "time", "device", "from"], compute), f"Compute total: {_hours(total)}.", ""]
    return lines


# --- 6: provenance --------------------------------------------------------------------------------------

def _versions(s: _Study) -> list[list]:
    """One row per recorded output that names its package versions and commit."""
    sources: list[tuple[str, dict | None]] = []
    for stage in s.stages:
        if stage.kind in ("thoughts", "score", "reflect", "teacher_test", "augment", "curate"):
            sources.append((stage.id, _read(stage.outputs[1])))
        elif stage.kind == "inverse":
            sources.append((stage.id, _read(stage.outputs[2])))
        elif stage.kind == "prepare":
            sources.append((stage.id, _read(Path(stage.config["out"]) / "manifest.json")))
        elif stage.kind == "train":
            sources.append((stage.id, _read(Path(stage.config["output_dir"]) / "run.json")))
        elif stage.kind == "compare":
            sources.append((stage.id, _read(Path(stage.config["out"]) / "manifest.json")))
    rows = []
    for sid, data in sources:
        if not data or "versions" not in data:
            continue
        versions, git = data.get("versions") or {}, data.get("git") or {}
        commit = (git.get("commit") or "-")[:12] + (" (dirty)" if git.get("dirty") else "")
        rows.append([sid, *(versions.get(k) or "-" for k in KEY_VERSIONS), commit])
    return rows


def _provenance(s: _Study) -> list[str]:
    body = []
    for stage in s.stages:
        v, rec = s.verdicts[stage.id], s.state.get(stage.id)
        body.append([stage.id, v.status, f"`{rec['identity']}`" if rec else NOT_RUN,
                     rec.get("finished", "-") if rec else "-", rec.get("version", "-") if rec else "-"])
    lines = ["## Provenance", "",
             "Each stage's identity as `state.json` recorded it when the stage finished (sha256 over its resolved "
             "config, inputs, prompt templates and the package version), and its status now:", "",
             *_table(["stage", "status", "identity", "finished", "cotharness"], body)]
    versions = _versions(s)
    if versions:
        lines += ["Package versions and git commit as each output recorded them:", "",
                  *_table(["output of", *KEY_VERSIONS, "commit"], versions)]
    return lines


# --- the report ---------------------------------------------------------------------------------------

def render(config: Path | str, root: Path | str = Path("studies"), overrides: dict | None = None) -> tuple[str, Path]:
    """(report.md's text, the study's folder); writes the PNGs under ``<home>/report/``."""
    s = _Study(Path(config), Path(root), overrides)
    counts = {st: sum(v.status == st for v in s.verdicts.values()) for st in ("current", "new", "changed", "stale")}
    table, per_class = _comparison(s)
    lines = [f"# Study {s.study.name}", "",
             f"Task `{s.study.task}`, ablations {', '.join(s.study.ablations)}; {len(s.stages)} stages: "
             + ", ".join(f"{n} {st}" for st, n in counts.items() if n)
             + ". Regenerate with `cotharness study report CONFIG` (reads recorded outputs, runs nothing).", "",
             *table, *per_class, *_data(s), *_training(s), *_costs(s), *_provenance(s)]
    return "\n".join(lines).rstrip() + "\n", s.home


def report(config: Path | str, root: Path | str = Path("studies"), overrides: dict | None = None) -> Path:
    """Write ``<root>/<name>/report.md`` (and ``report/*.png``) from what the study recorded (``overrides``
    merged over the config as ``study run`` had them); returns its path."""
    text, home = render(config, root, overrides)
    return write_atomic(home / REPORT_FILE, text)
