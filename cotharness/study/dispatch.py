"""Running a study's stages side by side, each as a submitit job, as far as resources allow.

- API stages (a teacher on the Mistral API or a server) run concurrently, up to ``execution.api_stages``;
- device stages (training, evaluation, a local teacher, the tiny base) run one per GPU, each job seeing only
  its own GPU (``CUDA_VISIBLE_DEVICES``); with no GPU, one at a time;
- light stages (the synthetic splits, prepare, the comparison) run as soon as their inputs are ready.

``--executor slurm`` sends the device stages to a SLURM cluster through submitit (partition, GPUs, time per
stage kind from the study's ``execution.slurm``) and runs the rest here. The parent alone writes
state.json and moves stale run folders aside; a job returns what it said and its error or interruption,
so a user's mistake in a job is still one ``error:`` line.

Ctrl-C at the terminal reaches every local job (one process group): each saves what it can (a teacher
stage lets its requests in flight finish, a training saves a checkpoint), the parent waits for them and
says what finished. The job controllers ignore it, so that they do not kill a job that is still saving.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cotharness.study import identity
from cotharness.study.config import ExecutionSection, SlurmStage, StudyError
from cotharness.study.graph import Stage
from cotharness.study.steps import DATAGEN, starting_line, step
from harness_tasks.errors import UserError, WorkFailed

EXECUTORS = ("auto", "inline", "local", "slurm")
API_BACKENDS = ("mistral", "mistral-batch")
DEVICE_KINDS = ("tiny_base", "train", "eval")
BACKTRANSLATE = ("augment", "curate")  # datagen stages of a backtranslation study: a server's, or a local model's
SLURM_CLUSTER = "slurm"  # submitit's cluster for --executor slurm (tests run the same path on "local")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would kill a training
POLL_S = 0.5


def resource(stage: Stage) -> str:
    """``api``, ``device`` or ``light``: what a stage waits for before it can start."""
    if stage.kind in DATAGEN + BACKTRANSLATE:
        return "api" if stage.config["backend"] in API_BACKENDS else "device"
    return "device" if stage.kind in DEVICE_KINDS else "light"


def visible_gpus(configured: list[int] | None) -> list[int]:
    """The GPUs the local executor hands out: ``execution.gpus``, else those CUDA_VISIBLE_DEVICES names,
    else every GPU torch sees."""
    if configured is not None:
        return list(configured)
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        if all(x.isdigit() for x in ids):
            return [int(x) for x in ids]
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def choose(executor: str, todo: list[Stage], gpus: list[int]) -> str:
    """``auto``: ``local`` when there is something to run side by side (two GPUs, or two API stages),
    else ``inline`` (one stage at a time in this process: no job start-up to pay)."""
    if executor != "auto":
        return executor
    api = sum(resource(s) == "api" for s in todo)
    return "local" if len(gpus) >= 2 or api >= 2 else "inline"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while jobs ran: which stages were cut and which finished."""

    def __init__(self, cut: list[str], finished: list[str]):
        super().__init__(f"stopped in {', '.join(cut) or 'none'}; finished this run: {', '.join(finished) or 'none'}")
        self.cut, self.finished = cut, finished


@dataclass
class Outcome:
    """What a job sends back: the lines its stage said, and its error (``usage`` / ``failed``) or its
    interruption, if any."""

    lines: list[str] = field(default_factory=list)
    error: str | None = None
    kind: str | None = None


def job(stage: Stage, verdict: identity.Verdict, command: str, resume: bool, distributed: bool) -> Outcome:
    """The body of one job (in its own process): the stage's step, its user errors and interruptions
    caught and returned."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # started with SIGINT ignored (see _submitting)
    # a cancel (SIGTERM from submitit or SLURM) is a Ctrl-C: teacher stages drain, a training checkpoints
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    if distributed:  # one task per GPU of a multi-GPU SLURM training: torch.distributed's env:// variables
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    out = Outcome()
    try:
        step(stage, verdict, out.lines.append, command, resume)
    except WorkFailed as err:
        out.error, out.kind = str(err), "failed"
    except UserError as err:
        out.error, out.kind = str(err), "usage"
    except KeyboardInterrupt as err:
        out.error, out.kind = str(err) or "interrupted", "interrupted"
    return out


@contextmanager
def _submitting():
    """SIGINT ignored while a job starts: its controller process inherits that, so a Ctrl-C at the terminal
    reaches the job itself (which restores the handler) and not the controller, which would kill the job
    one second later, before a training has saved its checkpoint."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Pool:
    """What can start now: GPUs (or one device slot without any), API stage slots, light stages freely."""

    def __init__(self, gpus: list[int], api_stages: int, slurm: bool):
        self.free_gpus = list(gpus)
        self.device_slot = not gpus
        self.api_left = api_stages
        self.slurm = slurm

    def take(self, kind: str):
        if kind == "light" or (kind == "device" and self.slurm):
            return ("free", None)
        if kind == "api":
            if self.api_left <= 0:
                return None
            self.api_left -= 1
            return ("api", None)
        if self.free_gpus:
            return ("gpu", self.free_gpus.pop(0))
        if self.device_slot:
            self.device_slot = False
            return ("cpu", None)
        return None

    def give(self, slot) -> None:
        kind, gpu = slot
        if kind == "api":
            self.api_left += 1
        elif kind == "gpu":
            self.free_gpus.append(gpu)
            self.free_gpus.sort()
        elif kind == "cpu":
            self.device_slot = True


def _executor(folder: Path, cluster: str):
    import submitit

    if cluster == "local":  # the local executor's own class: it takes the GPUs a job may see
        return submitit.LocalExecutor(folder=folder / "%j")
    return submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)


def _slurm_parameters(stage: Stage, settings: ExecutionSection, name: str) -> dict:
    if stage.kind in DATAGEN + BACKTRANSLATE:
        kind = "datagen"
    else:  # the tiny base trains, like a training
        kind = "eval" if stage.kind == "eval" else "train"
    s: SlurmStage = getattr(settings.slurm, kind)
    params = {"name": f"{name}:{stage.id}", "timeout_min": s.timeout_min, "gpus_per_node": s.gpus,
              "tasks_per_node": s.gpus if stage.kind == "train" else 1, "cpus_per_task": s.cpus, "nodes": 1,
              "slurm_additional_parameters": dict(s.additional), "slurm_setup": list(settings.slurm.setup)}
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    return params


@dataclass
class Running:
    verdict: identity.Verdict
    job: object
    slot: tuple
    started: float
    where: str


def dispatch(verdicts: list[identity.Verdict], home: Path, settings: ExecutionSection, executor: str,
             gpus: list[int], command: str, say: Callable[[str], None], before, name: str) -> dict[str, float]:
    """Run the verdicts not current as jobs, each once its dependencies are done and its resource is free;
    returns stage id -> seconds. ``before(stage, verdict) -> resume`` runs in this process first (a
    training's run folder, an evaluation's emptied folder). The first error stops new starts; the stages
    running finish, then it is raised (a user's mistake as such, a crash with the job's log)."""
    if executor == "slurm" and SLURM_CLUSTER == "slurm" and shutil.which("sbatch") is None:
        raise StudyError("--executor slurm: sbatch is not on PATH; run it from a SLURM login node "
                         "(or use --executor local on this machine)")
    jobs_dir = home / "jobs"
    local = _executor(jobs_dir, "local")
    slurm = _executor(jobs_dir, SLURM_CLUSTER) if executor == "slurm" else None
    pool = Pool(gpus, settings.api_stages, slurm is not None)
    done = {v.stage.id for v in verdicts if v.status == "current"}
    pending = [v for v in verdicts if v.status != "current"]
    running: dict[str, Running] = {}
    ran: dict[str, float] = {}
    failure: tuple[str, Outcome] | None = None
    interrupted = False
    cut: list[str] = []
    while pending or running:
        if failure is None and not interrupted:
            for v in list(pending):
                if not all(d in done for d in v.stage.dependencies):
                    continue
                slot = pool.take(resource(v.stage))
                if slot is None:
                    continue
                pending.remove(v)
                running[v.stage.id] = _start(v, slot, before, local, slurm, settings, command, name)
                r = running[v.stage.id]
                say(f"{starting_line(v)} {r.where}; log: {_log(r.job)}")
        if not running:
            break
        try:
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            if interrupted:  # the second Ctrl-C: stop waiting (the jobs got it too)
                raise Interrupted(sorted({*cut, *running}), list(ran)) from None
            interrupted = True
            say(f"stopping: waiting for {', '.join(running)} to save their work (Ctrl-C again to stop at once)")
            if slurm is not None:
                for r in running.values():
                    if r.slot[0] == "free" and resource(r.verdict.stage) == "device":
                        r.job.cancel(check=False)  # scancel: SIGTERM, which the job treats as a Ctrl-C
        for stage_id, r in list(running.items()):
            if not r.job.done():
                continue
            del running[stage_id]
            pool.give(r.slot)
            outcome = _outcome(r)
            for line in outcome.lines:
                say(line)
            if outcome.error is None:
                ran[stage_id] = round(time.monotonic() - r.started, 1)
                identity.record(home, r.verdict.stage, r.verdict.identity, seconds=ran[stage_id])
                done.add(stage_id)
                say(f"{stage_id}: ran in {ran[stage_id]:.0f} s")
            elif outcome.kind == "interrupted":
                interrupted = True
                cut.append(stage_id)
                say(f"{stage_id}: interrupted ({outcome.error})")
            else:
                say(f"{stage_id}: failed: {outcome.error}")
                failure = failure or (stage_id, outcome)
    if interrupted:
        raise Interrupted(cut, list(ran))
    if failure is not None:
        stage_id, outcome = failure
        error = WorkFailed if outcome.kind in ("failed", "crashed") else UserError
        raise error(outcome.error if outcome.kind != "crashed" else f"{stage_id}: {outcome.error}")
    return ran


def _start(v: identity.Verdict, slot: tuple, before, local, slurm, settings: ExecutionSection, command: str,
           name: str) -> Running:
    resume = before(v.stage, v)
    kind, gpu = slot
    to_slurm = slurm is not None and resource(v.stage) == "device"
    if to_slurm:
        params = _slurm_parameters(v.stage, settings, name)
        slurm.update_parameters(**params)
        executor, where = slurm, f"on SLURM ({params.get('slurm_partition', 'default partition')}, {params['gpus_per_node']} GPU)"
        distributed = params["tasks_per_node"] > 1
    else:
        local.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=1 if kind == "gpu" else 0,
                                visible_gpus=[gpu] if kind == "gpu" else [])
        executor, distributed = local, False
        where = f"on GPU {gpu}" if kind == "gpu" else "here" if kind == "cpu" else "beside the others"
    with _submitting():
        submitted = executor.submit(job, v.stage, v, command, resume, distributed)
    return Running(v, submitted, slot, time.monotonic(), where)


def _log(submitted) -> str:
    try:
        return str(submitted.paths.stdout)
    except Exception:  # noqa: BLE001 - a log path is a courtesy
        return "(in the study's jobs/ folder)"


def _outcome(r: Running) -> Outcome:
    """The job's Outcome, or a crash (a bug: an exception the stage did not turn into a user error) with
    the end of its traceback and the log that holds all of it."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        results = r.job.results()
    except (FailedJobError, UncompletedJobError) as err:
        tail = "\n".join(str(err).strip().splitlines()[-12:])
        if "KeyboardInterrupt" in tail or "SignalInterrupt" in tail:
            return Outcome(error="interrupted", kind="interrupted")
        return Outcome(error=f"the job crashed (log: {_log(r.job)}):\n{tail}", kind="crashed")
    first = results[0]
    for other in results[1:]:  # a multi-task training: the first task's lines, any task's error
        if first.error is None and other.error is not None:
            first = Outcome(first.lines, other.error, other.kind)
    return first
