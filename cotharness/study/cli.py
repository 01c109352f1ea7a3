"""``cotharness study plan|run|status|report CONFIG``: what a study would run, running it, what it has run, its report.

``run`` acts on ``plan``'s verdicts (``cotharness.study.run``): the stages not current, in dependency order.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="A whole study from one YAML (configs/study/*.yaml): plan it, run it, see its status, report it.")

Config = Annotated[Path, typer.Argument(metavar="CONFIG", help="A study config, e.g. configs/study/nli_ablations.yaml.")]
Root = Annotated[Path, typer.Option(help="Where studies live: outputs go under ROOT/<name>/.")]
STYLE = {"current": "green", "new": "cyan", "changed": "yellow", "stale": "magenta"}


def _verdicts(config: Path, root: Path):
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    study = load_study(config)
    stages = build(study, root, config)
    return study, plan(stages, root / study.name)


def _status(verdict) -> str:
    return f"[{STYLE[verdict.status]}]{verdict.status}[/]"


def _summary(console: Console, study, verdicts, root: Path) -> None:
    counts = {s: sum(v.status == s for v in verdicts) for s in STYLE}
    todo = sum(v.status != "current" for v in verdicts)
    console.print(f"study {study.name}: {len(verdicts)} stages, {', '.join(f'{n} {s}' for s, n in counts.items() if n)}"
                  f"; {todo} to run (state: {root / study.name / 'state.json'})")


@app.command("plan")
def plan_(config: Config, root: Root = Path("studies")):
    """Each stage as current / new / changed (and what changed) / stale, with the API cost and GPU-time
    estimates and where each comes from. Changes nothing."""
    from cotharness.study.estimates import api_cost, gpu_time

    study, verdicts = _verdicts(config, root)
    table = Table(title=f"study {study.name}: plan", show_lines=True)
    for column in ("stage", "status", "why", "needs", "estimate"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        estimate = api_cost(v.stage) if v.stage.kind in ("thoughts", "score", "reflect", "teacher_test") \
            else gpu_time(v.stage)
        if v.status == "current":
            estimate = "nothing (current)" if estimate else ""
        table.add_row(v.stage.id, _status(v), "\n".join(v.reasons), ", ".join(v.stage.dependencies), estimate)
    console = Console()
    console.print(table)
    _summary(console, study, verdicts, root)


class ExecutorName(str, Enum):
    auto = "auto"
    inline = "inline"
    local = "local"
    slurm = "slurm"


Executor = Annotated[ExecutorName, typer.Option(
    help="inline: one stage at a time in this process; local: stages side by side as jobs (API stages "
         "together, one training or evaluation per GPU); slurm: trainings and evaluations submitted to SLURM "
         "(execution.slurm); auto: local when two GPUs or two API stages could run side by side, else inline.")]
Gpus = Annotated[str | None, typer.Option(help="GPUs the local executor hands out, e.g. 0,1 (default: "
                                                "execution.gpus, else every visible GPU).")]


@app.command("run")
def run_(config: Config, root: Root = Path("studies"), executor: Executor = ExecutorName.auto, gpus: Gpus = None):
    """Run the stages that are not current, in dependency order (see `study plan`): teacher stages resume
    their rows, a cut training resumes its checkpoint, evaluations and the comparison rerun whole. Ctrl-C
    stops after saving what it can; the same command continues."""
    from cotharness.study.config import StudyError
    from cotharness.study.run import run

    ids = None
    if gpus is not None:
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise StudyError(f"--gpus {gpus!r}: GPU indices separated by commas, e.g. 0,1") from None
    console = Console()
    run(config, root, say=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False),
        executor=executor.value, gpus=ids)


@app.command()
def status(config: Config, root: Root = Path("studies")):
    """The plan's table with what state.json recorded: when each stage finished, which outputs exist."""
    study, verdicts = _verdicts(config, root)
    table = Table(title=f"study {study.name}: status", show_lines=True)
    for column in ("stage", "status", "finished", "outputs", "why"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        finished = (v.recorded or {}).get("finished", "never")
        present = len(v.outputs_present)
        outputs = f"{present} of {len(v.stage.outputs)} present"
        table.add_row(v.stage.id, _status(v), finished, outputs, "\n".join(v.reasons))
    console = Console()
    console.print(table)
    _summary(console, study, verdicts, root)


@app.command()
def report(config: Config, root: Root = Path("studies")):
    """Write ROOT/<name>/report.md (and report/*.png) from the stages' recorded outputs, running nothing:
    the ablation table with CIs, deltas and McNemar, per-class results, what each ablation's data kept,
    loss curves, costs and provenance. A stage not run yet is said to be so. `study run` writes it too."""
    from cotharness.study.report import report as write_report

    Console().print(f"report: {write_report(config, root)}", highlight=False, soft_wrap=True)
