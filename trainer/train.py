"""QLoRA supervised fine-tuning: the config handed to TRL's SFTTrainer, plus the run directory.

Single process: ``cotharness train --config ...``; data parallel: ``accelerate launch -m trainer ...``
(each process loads its own 4-bit copy on its own GPU). Ctrl-C or SIGTERM saves a checkpoint at the
current step and ends with run.json ``"status": "interrupted"`` and the command that resumes it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness_tasks import manifest
from harness_tasks.data_files import DataFileError
from harness_tasks.errors import UserError
from harness_tasks.tasks import get_task
from trainer import model_card, speed
from trainer.config import MACHINE_CHOSEN, TrainConfig
from trainer.data import apply_length_policy, check_lengths, sft_rows
from trainer.model import check_base_model

console = Console(stderr=True)
RUN_FILE = "run.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class RunExists(UserError, FileExistsError):
    pass


class NoCheckpoint(UserError, FileNotFoundError):
    pass


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM: what was trained is saved, and the message says how to continue. A KeyboardInterrupt
    (exit status 130), so no ``except Exception`` on the way up mistakes it for a failure."""


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely (a kill can interrupt a save)."""
    done = [p for p in output_dir.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _check_output_dir(output_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from. Without --resume, refuse only a folder with something to lose (a
    checkpoint or a finished adapter): a run that crashed or was stopped before its first checkpoint
    simply starts again."""
    checkpoint = latest_checkpoint(output_dir) if output_dir.is_dir() else None
    if resume:
        return checkpoint
    kept = checkpoint or next((output_dir / n for n in ADAPTER_FILES if (output_dir / n).is_file()), None)
    if kept is not None:
        raise RunExists(f"{output_dir} already holds a run ({kept.name}); pass --resume to continue it, "
                        "or choose another --output-dir")
    return None


def preflight(cfg: TrainConfig, resume: bool = False) -> Path | None:
    """Every check that needs no data read and no model loaded: the training file is set, a local base
    model exists, this machine can run the settings, the output folder. Returns the checkpoint to resume."""
    if not cfg.data.train_file:
        raise DataFileError("no training data: set data.train_file or pass --train-file")
    check_base_model(cfg.model.base_model)
    speed.check_machine(cfg)
    return _check_output_dir(Path(cfg.output_dir), resume)


def _sft_config(cfg: TrainConfig, has_eval: bool):
    from trl import SFTConfig

    args = dict(cfg.training)
    # TRL's default is on; passed by its transformers 5.23 name, or the old one's default warns
    args.setdefault("activation_checkpointing", True)
    if not torch_cuda():  # pinned memory only speeds up copies to a GPU; without one torch warns
        args.setdefault("dataloader_pin_memory", False)
    if not has_eval:  # nothing to evaluate, select or stop on
        args.update(eval_strategy="no", load_best_model_at_end=False)
        args.pop("metric_for_best_model", None)
    # Rows over data.max_length are already dropped or refused (trainer/data.py), never truncated. TRL
    # refuses padding_free (rows concatenated, no pad tokens) with a max_length it would not enforce.
    padding_free = args.get("padding_free") and not args.get("packing")
    max_length = None if padding_free else cfg.data.max_length
    return SFTConfig(output_dir=cfg.output_dir, max_length=max_length, completion_only_loss=True, **args)


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _length_table(reports) -> Table:
    table = Table(title="SFT data (tokens: prompt + answer + EOS)")
    for col in ("file", "rows", "median", "p95", "max", f"> max_length ({reports[0].max_length})"):
        table.add_column(col)
    for r in reports:
        s = r.summary()
        table.add_row(r.path, str(s["rows"]), str(s["tokens_median"]), str(s["tokens_p95"]), str(s["tokens_max"]),
                      str(s["over_max_length"]))
    return table


@dataclass
class Prepared:
    trainer: object  # trl.SFTTrainer
    checkpoint: Path | None
    reports: list
    has_eval: bool
    cfg: TrainConfig  # as trained: "auto" settings resolved for this machine
    settings: dict  # the resolved ones, for run.json


def _longest_kept(reports) -> int:
    return max(max((n for n in r.lengths if n <= r.max_length), default=0) for r in reports)


def prepare(cfg: TrainConfig, resume: bool = False) -> Prepared:
    """Data, model and the configured SFTTrainer; nothing is trained or written yet."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    from trainer.model import load_model, load_tokenizer, lora_config
    from trainer.sft import Trainer

    state = PartialState()
    checkpoint = preflight(cfg, resume)
    previous = _previous_run(Path(cfg.output_dir))
    if not resume and previous and state.is_main_process:
        console.print(f"[yellow]{cfg.output_dir}: the earlier run ({previous.get('status')}) kept no checkpoint; "
                      "starting again", soft_wrap=True)
    task = get_task(cfg.data.task)
    # every row is checked before the tokenizer and model load; EOS is appended once the tokenizer is known
    read = {split: sft_rows(path, task, "", cfg.data.label_column, cfg.data.thought_column, cfg.data.empty_labels)
            for split, path in (("train", cfg.data.train_file), ("eval", cfg.data.eval_file)) if path}
    tokenizer = load_tokenizer(cfg.model)

    splits, reports = {}, []
    for split, rows in read.items():
        path = cfg.data.train_file if split == "train" else cfg.data.eval_file
        rows = [{**r, "completion": r["completion"] + tokenizer.eos_token} for r in rows]
        report = check_lengths(rows, tokenizer, cfg.data.max_length, path)
        splits[split] = Dataset.from_list(apply_length_policy(rows, report, cfg.data.overlong))
        reports.append(report)
    has_eval = "eval" in splits
    if state.is_main_process:
        console.print(_length_table(reports))
        if any(r.over for r in reports):
            console.print(f"[yellow]dropped rows longer than data.max_length={cfg.data.max_length} "
                          "(set data.overlong=fail to refuse instead)")
        if not has_eval:
            console.print("[yellow]no eval file: no eval loss, no best-checkpoint selection, no early stopping")

    cfg, notes = speed.resolve(cfg, longest=_longest_kept(reports))
    if state.is_main_process:
        for note in notes:
            console.print(f"[cyan]{note}")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.output_dir) / "logs")  # logs live in the run dir
    # TRL 1.16 (pinned) still applies Liger's layer kernels; the Hub kernels it points to instead are
    # downloaded at launch, which offline machines cannot do
    warnings.filterwarnings("ignore", message=r"`use_liger_kernel=True` is deprecated", category=FutureWarning)
    args = _sft_config(cfg, has_eval)
    callbacks = []
    if has_eval and cfg.early_stopping_patience and args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = Trainer(model=load_model(cfg.model, tokenizer), args=args, train_dataset=splits["train"],
                      eval_dataset=splits.get("eval"), processing_class=tokenizer,
                      peft_config=lora_config(cfg.lora), callbacks=callbacks)
    settings = {k: args.activation_checkpointing if k == "activation_checkpointing" else cfg.training.get(k)
                for k in MACHINE_CHOSEN}
    return Prepared(trainer, checkpoint, reports, has_eval, cfg, settings)


def _trainer_state(checkpoint: Path | None) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text()) if checkpoint else {}


def _target_steps(trainer) -> int:
    """The optimizer steps this configuration trains to: max_steps, or the epochs counted by the Trainer."""
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]


def _previous_run(output_dir: Path) -> dict:
    path = output_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _nothing_to_train(record: dict, output_dir: Path, checkpoint: Path | None, target: int) -> str | None:
    """Why a complete run has nothing left to train for ``target`` steps; None to train on.

    A complete run ends where its config's limit or early stopping ended it: it trains again only when the
    limit is raised above the one it trained to (an early-stopped run too, and early stopping still applies).
    """
    if record.get("status") != "complete":
        return None
    step = record["global_step"]
    # runs written before run.json recorded max_steps: their checkpoint's trainer state holds it
    trained_to = record.get("max_steps") or _trainer_state(checkpoint).get("max_steps") or step
    if target > trained_to:
        if checkpoint is None:  # save_strategy "no", or "epoch"/"best" that kept none
            raise NoCheckpoint(f"{output_dir} is complete at step {step} but kept no checkpoint to continue "
                                    "from; train to more steps in another --output-dir")
        return None
    how = f"at step {step} of {trained_to}" if step >= trained_to else \
        f"(stopped early at step {step} of {trained_to})"
    return (f"{output_dir} is complete {how}; nothing to train "
            "(raise --max-steps or training.num_train_epochs to continue)")


def _resume_note(record: dict, output_dir: Path, checkpoint: Path | None, target: int) -> str:
    if checkpoint is None:
        return f"no complete checkpoint in {output_dir}; starting from scratch"
    step = _trainer_state(checkpoint)["global_step"]
    if step >= target:
        return f"{checkpoint.name} is at step {step} of {target}; finishing the run without training"
    ended = record.get("global_step") or 0  # a complete run whose last steps' checkpoint was not kept
    again = f"; steps {step + 1}-{ended} are trained again (no newer checkpoint was kept)" if ended > step else ""
    return f"continuing from {checkpoint.name} (step {step}) to step {target}{again}"


def _adopt(trainer, checkpoint: Path, target: int) -> None:
    """Take over a checkpoint that already reached the target (killed before run.json said complete):
    its trainer state and adapter, the best checkpoint's when selecting on eval loss. No step is trained."""
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    trainer.state.max_steps = target  # what this run asked for, as run.json records it
    best = trainer.state.best_model_checkpoint
    weights = best if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else checkpoint
    trainer.model.load_adapter(str(weights), trainer.model.active_adapter)


@dataclass(frozen=True)
class TrainResult:
    """A finished run: its folder (``peft=`` for lm-eval), the adapter weights in it, and run.json."""

    run_dir: Path
    adapter: Path
    run_json: Path

    @classmethod
    def of(cls, run_dir: Path) -> TrainResult:
        return cls(run_dir, run_dir / ADAPTER_FILES[1], run_dir / RUN_FILE)


def train(cfg: TrainConfig, resume: bool = False, resume_command: str | None = None) -> TrainResult:
    """Train ``cfg`` into its output dir (the step function of ``cotharness train``). ``resume_command``:
    what the user runs to continue after an interrupt (the CLI passes its own command line); said in
    run.json and in the RunInterrupted raised. A user's mistake raises a UserError."""
    from accelerate import PartialState

    from trainer.interrupt import StopOnSignal

    state = PartialState()
    stop = StopOnSignal()
    with stop.installed():
        try:
            run = prepare(cfg, resume)
        except KeyboardInterrupt:
            raise RunInterrupted(f"stopped by {stop.received or 'SIGINT'} before training started; "
                                 "no step was trained") from None
        return TrainResult.of(_train(run, cfg, resume, stop, state, resume_command))


def _train(run: Prepared, cfg: TrainConfig, resume: bool, stop, state, resume_command: str | None) -> Path:
    trainer, output_dir, checkpoint = run.trainer, Path(cfg.output_dir), run.checkpoint
    trainer.add_callback(stop)
    # Never hand the Trainer a checkpoint at or past the target: its loop takes a step before it checks
    # max_steps, so resuming a finished run would train one more step (unless it ended on an epoch boundary)
    reached = False  # the checkpoint already holds every step of the target
    previous = _previous_run(output_dir) if resume else {}
    if resume:
        target = _target_steps(trainer)
        done = _nothing_to_train(previous, output_dir, checkpoint, target)
        if done:
            if state.is_main_process:
                console.print(done, soft_wrap=True, highlight=False)
            return output_dir
        if state.is_main_process:
            console.print(f"[yellow]--resume: {_resume_note(previous, output_dir, checkpoint, target)}",
                          soft_wrap=True)
        reached = checkpoint is not None and _trainer_state(checkpoint)["global_step"] >= target
    record = _record(cfg, run.reports, status="running", world_size=state.num_processes,
                     resolved=run.settings, resumed_from=str(checkpoint) if checkpoint else None,
                     segments=_segments(previous))
    segment = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "from_step": _trainer_state(checkpoint).get("global_step", 0)}
    started = time.time()
    state.wait_for_everyone()  # every process has checked the output dir before run.json appears in it
    if state.is_main_process:
        _write_json(output_dir / RUN_FILE, record)

    def finish(status: str, **extra) -> None:
        """run.json and the model card, as the run ends (rank 0 writes them)."""
        segment.update(seconds=round(time.time() - started, 1), to_step=trainer.state.global_step, status=status)
        segments = [*record["segments"], segment]
        record.update(status=status, segments=segments, train_seconds=round(sum(s["seconds"] for s in segments), 1),
                      global_step=trainer.state.global_step, max_steps=trainer.state.max_steps, **extra)
        if state.is_main_process:
            _write_json(output_dir / RUN_FILE, record)
            manifest.write_atomic(output_dir / "README.md", model_card.render(record))

    try:
        if reached:
            _adopt(trainer, checkpoint, target)
            train_metrics = {}
        else:
            train_metrics = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).metrics
        if stop.stopped_at is not None:
            raise KeyboardInterrupt  # the Trainer has saved and stopped; nothing more to do
        eval_metrics = trainer.evaluate() if run.has_eval else {}
        trainer.save_model(str(output_dir))  # the adapter (the best checkpoint's, when selecting on eval loss)
    except KeyboardInterrupt:
        kept = latest_checkpoint(output_dir)
        command = resume_command or "the same command with --resume"
        finish("interrupted", signal=stop.received, checkpoint=str(kept) if kept else None, resume_command=command)
        where = f"checkpoint saved in {kept}" if kept else "no checkpoint was saved (the run starts again)"
        raise RunInterrupted(f"stopped by {stop.received or 'SIGINT'} at step {trainer.state.global_step}; "
                             f"{where}; continue with: {command}") from None
    except Exception as err:  # a crash: run.json says so instead of "running"; the traceback follows
        finish("failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    finish("complete", train_metrics=train_metrics, eval_metrics=eval_metrics,
           best_checkpoint=trainer.state.best_model_checkpoint)
    if state.is_main_process:
        console.print(f"[green]run written to {output_dir}")
    state.wait_for_everyone()
    return output_dir


def _segments(previous: dict) -> list[dict]:
    """The earlier segments of a resumed run (one per process start), so its training time is their sum;
    a run.json written before segments were kept counts as one."""
    if "segments" in previous:
        return list(previous["segments"])
    return [{"seconds": previous["train_seconds"]}] if previous.get("train_seconds") is not None else []


def _record(cfg: TrainConfig, reports, **extra) -> dict:
    import prompts

    task = get_task(cfg.data.task)
    data = {r.path: {"sha256": manifest.sha256_file(r.path), **r.summary()} for r in reports}
    return {
        "config": cfg.model_dump(),
        "task": task.name,
        "prompt_template": {"name": task.template, "sha256": prompts.template_hash(task.template)},
        "data": data,
        "seed": cfg.training.get("seed", 42),
        "quantization": cfg.model.quantization,
        "versions": manifest.package_versions(),
        "git": manifest.git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def _write_json(path: Path, data: dict) -> None:
    manifest.write_atomic(path, json.dumps(data, indent=2, default=str))
