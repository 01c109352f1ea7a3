"""``cotharness train`` and ``cotharness merge``."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer


def train(
    config: Annotated[Path | None, typer.Option(help="Training config YAML (configs/train/*.yaml).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Hub id or local path of the base model.")] = None,
    train_file: Annotated[Path | None, typer.Option(help="CSV/JSONL of task rows (with thought and label, or a "
                                                               "free-text task's fields).")] = None,
    eval_file: Annotated[Path | None, typer.Option(help="Held-out rows for eval loss and early stopping.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Run directory (adapter, run.json, model card).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint (a finished run: only "
                                              "to a raised --max-steps or number of epochs).")] = False,
    estimate_memory: Annotated[bool, typer.Option(help="Only estimate GPU memory for this config.")] = False,
):
    """QLoRA fine-tuning with TRL's SFTTrainer (also: accelerate launch -m trainer ...)."""
    from harness_tasks.errors import UserError, traceback_if_debugging
    from trainer.train import RunInterrupted

    # one line each, as the cotharness command says them, also under `python -m trainer` / accelerate launch
    once = os.environ.get("RANK", "0") == "0"  # under a launcher, rank 0 speaks for every process
    try:
        _train(config, base_model, train_file, eval_file, output_dir, max_steps, set_ or [], resume, estimate_memory)
    except UserError as err:  # the user's files or settings
        if once:
            traceback_if_debugging()
            typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    except RunInterrupted as err:  # Ctrl-C or SIGTERM: what was kept and how to continue
        if once:
            typer.echo(f"interrupted: {err}", err=True)
        raise typer.Exit(130) from None


def _train(config, base_model, train_file, eval_file, output_dir, max_steps, set_, resume, estimate_memory):
    from trainer.config import load_config, parse_set
    from trainer.model import check_base_model

    flags = {"model": {"base_model": base_model}, "data": {"train_file": train_file, "eval_file": eval_file},
             "output_dir": output_dir, "training": {"max_steps": max_steps}}
    cfg = load_config(config, _merge_flags(parse_set(set_), flags))
    if estimate_memory:
        from trainer.memory import estimate, render
        from trainer.speed import resolve

        check_base_model(cfg.model.base_model)
        cfg, notes = resolve(cfg)
        typer.echo("\n".join([*notes, render(estimate(cfg))]))
        return
    from trainer.train import train as run

    command = _resume_command(config=config, base_model=base_model, train_file=train_file, eval_file=eval_file,
                              output_dir=output_dir, max_steps=max_steps, set_=set_)
    run(cfg, resume=resume, resume_command=command)


def _resume_command(set_: list[str], **options) -> str:
    """The command that continues this run: the options it was given, and --resume. Under a launcher
    (accelerate launch, torchrun) the launcher's own options (its config file, machines) are not visible
    to the processes; only their count is given."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    argv = ["accelerate", "launch", "--num_processes", str(world), "-m", "trainer"] if world > 1 else \
        ["cotharness", "train"]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    for item in set_:
        argv += ["--set", item]
    return shlex.join([*argv, "--resume"])


def _merge_flags(overrides: dict, flags: dict) -> dict:
    """Plain flags win over --set; unset flags (None) change nothing."""
    out = dict(overrides)
    for key, value in flags.items():
        if isinstance(value, dict):
            section = {k: str(v) if isinstance(v, Path) else v for k, v in value.items() if v is not None}
            if section:
                out[key] = {**out.get(key, {}), **section}
        elif value is not None:
            out[key] = str(value) if isinstance(value, Path) else value
    return out


def merge(
    adapter: Annotated[Path, typer.Option(help="Run directory holding the PEFT adapter.")],
    out: Annotated[Path, typer.Option(help="Where to write the merged bf16 model.")],
    base_model: Annotated[str | None, typer.Option(help="Override the base model recorded in the adapter.")] = None,
    dtype: Annotated[str, typer.Option(help="bfloat16 | float16 | float32")] = "bfloat16",
):
    """Merge a LoRA adapter into a 16-bit copy of its base model (for fast inference and export)."""
    from harness_tasks.errors import UserError, traceback_if_debugging
    from trainer.merge import merge as run

    try:
        written = run(adapter, out, base_model=base_model, dtype=dtype)
    except UserError as err:
        traceback_if_debugging()
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    typer.echo(f"merged model written to {written}")


def export_gguf(
    adapter: Annotated[Path, typer.Option(help="Run directory holding the PEFT adapter.")],
    out: Annotated[Path, typer.Option(help="The .gguf file to write; with several --quant, <stem>-<quant>.gguf "
                                           "beside it. Its manifest and Ollama Modelfile go beside each file.")],
    quant: Annotated[list[str] | None, typer.Option(
        help="f16 | q8_0 | q4_0 | q4_k_m (repeatable, or comma-separated); default q4_k_m.",
        show_default=False)] = None,
    base_model: Annotated[str | None, typer.Option(help="Override the base model recorded in the adapter.")] = None,
    check_task: Annotated[str | None, typer.Option(
        help="Task whose prompts check the GGUF against the HF model; default: the run's (run.json), else nli_cot.",
        show_default=False)] = None,
    check_data: Annotated[Path | None, typer.Option(
        help="The task's documents for the check (its data file); default: the task's bundled sample.",
        show_default=False)] = None,
    check_prompts: Annotated[int, typer.Option(min=1, help="How many documents the check decodes.")] = 8,
    check_tokens: Annotated[int, typer.Option(min=1, help="The first N generated tokens that must match.")] = 32,
    check_max_tokens: Annotated[int, typer.Option(min=1, help="How far each answer is decoded to parse its label.")] = 160,
    threads: Annotated[int | None, typer.Option(min=1, help="llama.cpp CPU threads (default: its own choice).",
                                                show_default=False)] = None,
):
    """A fine-tuned adapter as a GGUF file for llama.cpp and Ollama: merged, converted, quantized, then
    checked against the merged HF model on the task's prompts (agreement in the manifest and printed)."""
    from trainer.export.agreement import CheckSettings
    from trainer.export.pipeline import ExportRun, export

    quants = [q for item in (quant or ["q4_k_m"]) for q in item.split(",")]
    settings = CheckSettings(prompts=check_prompts, tokens=check_tokens, max_new_tokens=check_max_tokens,
                             threads=threads)
    done = export(ExportRun(adapter, out, quants, base_model=base_model, check_task=check_task,
                            check_data=check_data, check=settings), say=typer.echo)
    for item in done:
        typer.echo(f"written {item.path} (manifest {item.manifest.name}, Ollama {item.modelfile.name})")
