"""``cotharness study run CONFIG``: the stages that are not current, in dependency order, in this process.

Each stage's resolved config (``graph``) becomes its step function's typed config (one builder per kind)
and the step runs; once it succeeds, ``identity.record`` marks it current. Nothing is paid twice and
nothing stale is reused:

- a teacher stage resumes its own rows (the JSONL store): rows asked with the same request are kept,
  rows whose request changed (a new template, model or setting) are asked again, failed rows retried;
- a training records the identity it started with; a cut run with the same identity resumes from its
  checkpoint, and a run dir left by another identity is moved aside to ``<run dir>.stale-<id>``;
- prepare, an evaluation and the comparison rerun whole (an evaluation into an emptied folder).

Ctrl-C stops the stage in progress (a training saves a checkpoint first) and says what finished.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cotharness.study import identity
from cotharness.study.graph import Stage
from cotharness.study.report import report
from harness_tasks.errors import WorkFailed

DATAGEN = ("thoughts", "score", "reflect", "teacher_test")


@dataclass
class RunResult:
    """What one ``study run`` did: stages skipped (current) and run, in order, with seconds per stage run."""

    home: Path
    skipped: list[str] = field(default_factory=list)
    ran: dict[str, float] = field(default_factory=dict)


# --- builders: a stage's resolved config -> its step's typed config, then the step -----------------------

def _tiny_base(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from cotharness.tiny_pretrain import build_base

    c = stage.config
    record = build_base(Path(c["out"]), dict(c["shape"]), c["steps"], c["seed"])
    say(f"{stage.id}: pre-trained {c['out']}: word-comparison accuracy {record['equality_accuracy']:.1%}")


def _synthetic(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from datagen.synthetic.nli import write_splits

    c = stage.config  # the study's own folder: its files are this stage's to replace
    write_splits(Path(c["out"]), dict(c["sizes"]), c["seed"], force=True)


def _datagen(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from datagen.engine.cli_checks import api_key_for
    from datagen.engine.pipeline import StageRun
    from datagen.engine.runner import Options
    from datagen.teacher.stages import run

    c = stage.config
    api_key_for(c["backend"], c["server_url"], False)
    # the study owns this file: a row asked with another request is stale (redo it), a failed one unpaid
    options = Options(concurrency=c["options"]["concurrency"], max_cost=c["options"]["max_cost"],
                      redo_changed=True, retry_failed=True)
    tally = run(StageRun(stage=c["stage"], input=Path(c["input"]), out=Path(c["out"]), model=c["model"],
                         backend=c["backend"], task=c["task"], server_url=c["server_url"], limit=c["limit"],
                         backend_args=dict(c["backend_args"]), options=options)).tally
    if tally.stopped:
        raise WorkFailed(f"{stage.id}: stopped early ({tally.stopped}); the rows done are kept: rerun to continue")
    if tally.failed_rows:
        raise WorkFailed(f"{stage.id}: {tally.failed_rows} row(s) failed (see {c['out']}); the rest are kept: "
                         "rerun to retry only those")


def _prepare(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from datagen.teacher.prepare import PrepareRun, run

    c = stage.config
    run(PrepareRun(thoughts=Path(c["thoughts"]), out=Path(c["out"]),
                   reflections=Path(c["reflections"]) if c["reflections"] else None, ablations=list(c["ablations"]),
                   task=c["task"], dev_fraction=c["dev_fraction"], seed=c["seed"], min_score=c["min_score"],
                   tokenizer=c["tokenizer"], max_length=c["max_length"],
                   train_config=Path(c["train_config"]) if c["train_config"] else None,
                   force=True))  # the study's own folder: its files are this stage's to replace


def _train(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None], home: Path, command: str) -> None:
    from trainer.config import TrainConfig
    from trainer.train import ADAPTER_FILES, latest_checkpoint, train

    cfg = TrainConfig.model_validate(stage.config)
    run_dir = Path(cfg.output_dir)
    started = identity.started(home, stage.id)
    kept = run_dir.is_dir() and (latest_checkpoint(run_dir) is not None
                                 or any((run_dir / n).is_file() for n in ADAPTER_FILES))
    # a run cut short with this very identity continues; anything else in the folder is another run's
    resume = kept and started == verdict.identity.digest and verdict.status != "stale"
    if kept and not resume:
        old = started or (verdict.recorded or {}).get("identity") or time.strftime("%Y%m%d%H%M%S")
        aside = _free(run_dir.with_name(f"{run_dir.name}.stale-{old[:8]}"))
        run_dir.rename(aside)
        say(f"{stage.id}: {run_dir} was trained with another config; moved aside to {aside} (not deleted)")
    identity.record_started(home, stage, verdict.identity)
    train(cfg, resume=resume, resume_command=command)


def _free(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _eval(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from cotharness.run_eval import EvalRun, evaluate

    c = stage.config
    out = Path(c["output_path"])
    if out.exists():  # the stage's own folder: the comparison reads the one results file left in it
        shutil.rmtree(out)
    model_args = {"pretrained": c["pretrained"], **({"peft": c["peft"]} if c["peft"] else {}), **c["model_args"]}
    evaluate(EvalRun(model=c["model"], model_args=model_args, tasks=list(c["tasks"]), output_path=out,
                     limit=c["limit"], batch_size=c["batch_size"], device=c["device"], gen_kwargs=dict(c["gen_kwargs"]),
                     metadata={"test_file": c["test_file"]}))


def _compare(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from cotharness.compare import CompareRun, run

    c = stage.config
    run(CompareRun(runs=[Path(p) for p in c["runs"]], out=Path(c["out"]), names=list(c["names"]), seed=c["seed"],
                   teacher_task=c["teacher_task"], intersect=c["intersect"]))


# --- the run ----------------------------------------------------------------------------------------------

def run(config: Path | str, root: Path | str = Path("studies"), say: Callable[[str], None] = print,
        overrides: dict | None = None, command: str | None = None) -> RunResult:
    """Run every stage of the study at ``config`` (``overrides`` merged over it) that is not current; returns
    what ran and what was skipped. A user's mistake in a stage raises its UserError (the stages before it
    stay recorded); Ctrl-C raises KeyboardInterrupt saying which stages finished and how to continue
    (``command``: the command that continues, default ``cotharness study run CONFIG``)."""
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
    say(f"study {study.name}: {len(verdicts) - len(todo)} current, {len(todo)} to run"
        + (f" ({detail})" if detail else ""))
    result = RunResult(home)
    current: str | None = None
    try:
        for v in verdicts:
            stage = v.stage
            if v.status == "current":
                result.skipped.append(stage.id)
                say(f"{stage.id}: skipped (current)")
                continue
            current = stage.id
            say(f"{stage.id}: running ({v.status}{': ' + '; '.join(v.reasons) if v.reasons else ''})")
            start = time.monotonic()
            _step(stage, v, say, home, command)
            result.ran[stage.id] = round(time.monotonic() - start, 1)
            identity.record(home, stage, v.identity, seconds=result.ran[stage.id])
            say(f"{stage.id}: ran in {result.ran[stage.id]:.0f} s")
            current = None
    except KeyboardInterrupt as err:
        said = f" ({err})" if str(err) else ""
        finished = ", ".join(result.ran) or "none"
        raise KeyboardInterrupt(f"study {study.name}: stopped in {current}{said}; finished this run: {finished}; "
                                f"`{command}` continues (finished stages are skipped)") from None
    say(f"study {study.name}: {len(result.ran)} ran, {len(result.skipped)} current (state: {identity.state_path(home)})")
    say(f"report: {report(config, root, overrides)}")
    return result


def _step(stage: Stage, verdict: identity.Verdict, say, home: Path, command: str) -> None:
    if stage.kind == "tiny_base":
        _tiny_base(stage, verdict, say)
    elif stage.kind == "synthetic":
        _synthetic(stage, verdict, say)
    elif stage.kind in DATAGEN:
        _datagen(stage, verdict, say)
    elif stage.kind == "prepare":
        _prepare(stage, verdict, say)
    elif stage.kind == "train":
        _train(stage, verdict, say, home, command)
    elif stage.kind == "eval":
        _eval(stage, verdict, say)
    elif stage.kind == "compare":
        _compare(stage, verdict, say)
    else:  # graph.KINDS and this list agree; a new kind needs its builder here
        raise AssertionError(f"no builder for stage kind {stage.kind!r}")
