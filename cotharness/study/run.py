"""``cotharness study run CONFIG``: the stages that are not current, in dependency order: one at a time in
this process (``inline``), or side by side as jobs (``cotharness.study.dispatch``: here or on SLURM).

Each stage's resolved config (``graph``) becomes its step function's typed config (one builder per kind)
and the step runs; once it succeeds, ``identity.record`` marks it current (in this process only). Nothing is paid twice and
nothing stale is reused:

- a teacher stage resumes its own rows (the JSONL store): rows asked with the same request are kept,
  rows whose request changed (a new template, model or setting) are asked again, failed rows retried;
- a training records the identity it started with; a cut run with the same identity resumes from its
  checkpoint, and a run dir left by another identity is moved aside to ``<run dir>.stale-<id>``;
- prepare, an evaluation and the comparison rerun whole (an evaluation into an emptied folder).

Ctrl-C stops the stage in progress (a training saves a checkpoint first) and says what finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cotharness.study import identity
from cotharness.study.config import StudyError
from cotharness.study.report import report
from cotharness.study.steps import before, starting_line, step


@dataclass
class RunResult:
    """What one ``study run`` did: stages skipped (current) and run, in order, with seconds per stage run."""

    home: Path
    skipped: list[str] = field(default_factory=list)
    ran: dict[str, float] = field(default_factory=dict)


# --- the run ----------------------------------------------------------------------------------------------

def run(config: Path | str, root: Path | str = Path("studies"), say: Callable[[str], None] = print,
        overrides: dict | None = None, command: str | None = None, executor: str = "auto",
        gpus: list[int] | None = None) -> RunResult:
    """Run every stage of the study at ``config`` (``overrides`` merged over it) that is not current; returns
    what ran and what was skipped. ``executor``: ``inline`` (one stage at a time in this process),
    ``local`` (stages side by side as jobs: cotharness.study.dispatch), ``slurm`` (device stages on SLURM),
    ``auto`` (local when two GPUs or two API stages could run side by side, else inline); ``gpus``
    overrides ``execution.gpus``. A user's mistake in a stage raises its UserError (the stages finished
    stay recorded); Ctrl-C raises KeyboardInterrupt saying which stages finished and how to continue
    (``command``: the command that continues, default ``cotharness study run CONFIG``)."""
    from cotharness.study import dispatch
    from cotharness.study.config import load_study
    from cotharness.study.graph import build

    config, root = Path(config), Path(root)
    study = load_study(config, overrides)
    home = root / study.name
    verdicts = identity.plan(build(study, root, config), home)
    command = command or f"cotharness study run {config}" + (f" --root {root}" if root != Path("studies") else "")
    todo = [v for v in verdicts if v.status != "current"]
    counts = {s: sum(v.status == s for v in todo) for s in identity.STATUSES if s != "current"}
    detail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if executor not in dispatch.EXECUTORS:
        raise StudyError(f"--executor {executor!r}: one of {', '.join(dispatch.EXECUTORS)}")
    visible = dispatch.visible_gpus(gpus if gpus is not None else study.execution.gpus) if todo else []
    chosen = dispatch.choose(executor, [v.stage for v in todo], visible)
    say(f"study {study.name}: {len(verdicts) - len(todo)} current, {len(todo)} to run"
        + (f" ({detail})" if detail else "")
        + (f"; executor {chosen}" + (f", GPUs {visible}" if chosen == "local" and visible else "") if todo else ""))
    result = RunResult(home)
    for v in verdicts:
        if v.status == "current":
            result.skipped.append(v.stage.id)
            say(f"{v.stage.id}: skipped (current)")
    current: str | None = None
    try:
        if chosen == "inline":
            for v in todo:
                current = v.stage.id
                say(starting_line(v))
                start = time.monotonic()
                resume = before(v.stage, v, say, home)
                step(v.stage, v, say, command, resume)
                result.ran[v.stage.id] = round(time.monotonic() - start, 1)
                identity.record(home, v.stage, v.identity, seconds=result.ran[v.stage.id])
                say(f"{v.stage.id}: ran in {result.ran[v.stage.id]:.0f} s")
                current = None
        else:
            result.ran = dispatch.dispatch(verdicts, home, study.execution, chosen, visible, command, say,
                                           lambda stage, v: before(stage, v, say, home), study.name)
    except dispatch.Interrupted as err:
        raise KeyboardInterrupt(f"study {study.name}: {err}; `{command}` continues (finished stages are skipped)") from None
    except KeyboardInterrupt as err:
        said = f" ({err})" if str(err) else ""
        finished = ", ".join(result.ran) or "none"
        raise KeyboardInterrupt(f"study {study.name}: stopped in {current}{said}; finished this run: {finished}; "
                                f"`{command}` continues (finished stages are skipped)") from None
    say(f"study {study.name}: {len(result.ran)} ran, {len(result.skipped)} current (state: {identity.state_path(home)})")
    say(f"report: {report(config, root, overrides)}")
    return result
