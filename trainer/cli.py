"""``cotharness train`` and ``cotharness merge``."""

from __future__ import annotations

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
    from trainer.config import ConfigError, load_config, parse_set

    overrides = parse_set(set_ or [])
    flags = {"model": {"base_model": base_model}, "data": {"train_file": train_file, "eval_file": eval_file},
             "output_dir": output_dir, "training": {"max_steps": max_steps}}
    try:
        cfg = load_config(config, _merge_flags(overrides, flags))
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--config/--set") from None
    if estimate_memory:
        from trainer.memory import estimate, render
        from trainer.speed import resolve

        cfg, notes = resolve(cfg)
        typer.echo("\n".join([*notes, render(estimate(cfg))]))
        return
    from harness_tasks.data_files import DataFileError
    from trainer.train import train as run

    try:
        run(cfg, resume=resume)
    except (ConfigError, DataFileError, FileExistsError, FileNotFoundError) as err:  # the user's files or settings
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


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
    from trainer.merge import merge as run

    typer.echo(f"merged model written to {run(adapter, out, base_model=base_model, dtype=dtype)}")
