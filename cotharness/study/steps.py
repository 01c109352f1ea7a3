"""Each stage kind's step: its resolved config (``graph``) -> its step function's typed config -> the step.

``before`` runs in the ``study run`` process whatever the executor (a training's run folder, an
evaluation's emptied folder); ``step`` runs there (inline) or in a job's process (``dispatch``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from cotharness.study import identity
from cotharness.study.graph import Stage
from harness_tasks.errors import WorkFailed

DATAGEN = ("thoughts", "score", "reflect", "teacher_test")


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


def _train_folder(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None], home: Path) -> bool:
    """Before a training starts (in this process, whichever executor runs it): whether it resumes the run
    folder's checkpoint; a folder left by another identity is moved aside. Records the identity started."""
    from trainer.train import ADAPTER_FILES, latest_checkpoint

    run_dir = Path(stage.config["output_dir"])
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
    return resume


def _train(stage: Stage, resume: bool, command: str) -> None:
    from trainer.config import TrainConfig
    from trainer.train import train

    train(TrainConfig.model_validate(stage.config), resume=resume, resume_command=command)


def _free(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _eval(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from cotharness.run_eval import EvalRun, evaluate

    c = stage.config
    model_args = {"pretrained": c["pretrained"], **({"peft": c["peft"]} if c["peft"] else {}), **c["model_args"]}
    evaluate(EvalRun(model=c["model"], model_args=model_args, tasks=list(c["tasks"]), output_path=Path(c["output_path"]),
                     limit=c["limit"], batch_size=c["batch_size"], device=c["device"], gen_kwargs=dict(c["gen_kwargs"]),
                     metadata={"test_file": c["test_file"], **c.get("metadata", {})}))


def _compare(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None]) -> None:
    from cotharness.compare import CompareRun, run

    c = stage.config
    run(CompareRun(runs=[Path(p) for p in c["runs"]], out=Path(c["out"]), names=list(c["names"]), seed=c["seed"],
                   teacher_task=c["teacher_task"], intersect=c["intersect"]))


def starting_line(verdict: identity.Verdict) -> str:
    """The line a stage starts with, whichever executor runs it: its status and why."""
    why = f": {'; '.join(verdict.reasons)}" if verdict.reasons else ""
    return f"{verdict.stage.id}: running ({verdict.status}{why})"


def before(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None], home: Path) -> bool:
    """What this process does before a stage's step runs, wherever the step runs: a training's run folder
    (returns whether it resumes), an evaluation's folder emptied (the comparison reads the one results
    file left in it)."""
    if stage.kind == "train":
        return _train_folder(stage, verdict, say, home)
    if stage.kind == "eval" and Path(stage.config["output_path"]).exists():
        shutil.rmtree(stage.config["output_path"])
    return False


def step(stage: Stage, verdict: identity.Verdict, say: Callable[[str], None], command: str, resume: bool) -> None:
    """The stage's step function with its typed config (in this process or in a job's)."""
    if stage.kind == "tiny_base":
        _tiny_base(stage, verdict, say)
    elif stage.kind == "synthetic":
        _synthetic(stage, verdict, say)
    elif stage.kind in DATAGEN:
        _datagen(stage, verdict, say)
    elif stage.kind == "prepare":
        _prepare(stage, verdict, say)
    elif stage.kind == "train":
        _train(stage, resume, command)
    elif stage.kind == "eval":
        _eval(stage, verdict, say)
    elif stage.kind == "compare":
        _compare(stage, verdict, say)
    elif stage.kind == "inverse":
        from cotharness.study.backtranslation import inverse
        inverse(stage, say)
    elif stage.kind == "augment":
        from cotharness.study.backtranslation import augment
        augment(stage, say)
    elif stage.kind == "curate":
        from cotharness.study.backtranslation import curate
        curate(stage, say)
    else:  # graph.KINDS and this list agree; a new kind needs its builder here
        raise AssertionError(f"no builder for stage kind {stage.kind!r}")
