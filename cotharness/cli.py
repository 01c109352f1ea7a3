"""The ``cotharness`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Teach open LLMs to reason before they answer, and prove it with lm-eval.")


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="Directory to write the model and tokenizer to.")],
    hidden_size: Annotated[int, typer.Option(help="Model width.")] = 64,
    layers: Annotated[int, typer.Option(help="Number of transformer layers.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the tokenizer corpus and the weights.")] = 0,
):
    """Build the embedded default model: a tiny Mistral-architecture LM + BPE tokenizer, offline."""
    from cotharness.tiny_model import build

    path = build(out, hidden_size=hidden_size, layers=layers, intermediate_size=3 * hidden_size, seed=seed)
    typer.echo(f"tiny model written to {path}")


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                        "help_option_names": []})
def eval_(ctx: typer.Context):
    """lm_eval with this project's tasks and load_in_4bit=True working; takes any lm_eval arguments.

    Example: cotharness eval --tasks nli_cot --model_args pretrained=DIR,peft=ADAPTER,load_in_4bit=True
    """
    from cotharness.run_eval import main

    raise typer.Exit(main(list(ctx.args)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the comparison report and lm-eval outputs go.")] = Path("results/demo"),
    work: Annotated[Path, typer.Option(help="Where the base model, data and adapter go (reused).")] = Path("runs/demo"),
    limit: Annotated[int, typer.Option(help="Evaluate only the first N test documents (0 = all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the base's pre-training and of fine-tuning (data stay fixed).")] = 0,
    config: Annotated[Path, typer.Option(help="Training config (its base model, data and output dir are the demo's).")]
    = Path("configs/train/demo.yaml"),
):
    """Data -> LoRA training -> lm-eval on base and fine-tuned -> comparison, on the tiny model (CPU)."""
    from cotharness.demo import run

    raise typer.Exit(run(out_dir=out, work=work, config=config, limit=limit or None, seed=seed))


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="lm-eval --output_path directories (or one results_*.json of a directory that holds several), or a "
             "teacher's datagen thoughts .jsonl (matched to the first directory's documents); the first is the base.")],
    out: Annotated[Path, typer.Option(help="Where summary.{md,csv,json}, manifest.json and PNGs go.")],
    names: Annotated[str | None, typer.Option(help="Comma-separated display names, one per run.")] = None,
    teacher_task: Annotated[str, typer.Option(
        help="Task of a thoughts .jsonl that has no <name>.manifest.json beside it.")] = "nli_cot",
    intersect: Annotated[bool, typer.Option(
        help="Runs on different documents: compare on those all runs share (the report says how many each "
             "lost) instead of refusing.")] = False,
):
    """Compare lm-eval runs (and a teacher's thoughts file) on the same documents: the tasks' own metrics
    with CIs, deltas, McNemar, confusion matrices, plots."""
    from cotharness.compare import compare as run
    from cotharness.compare import print_table

    try:
        report = run(runs, out, names=names.split(",") if names else None, teacher_task=teacher_task,
                     intersect=intersect)
    except (FileNotFoundError, ValueError) as err:  # the user's paths or files; bugs keep their traceback
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for note in report["notes"]:
        typer.echo(f"note: {note}", err=True)
    print_table(report["rows"])
    typer.echo(f"report written to {out}/summary.md")


def _register_subcommands():
    from datagen.cli import app as datagen_app
    from trainer import cli as trainer_cli

    app.command("train")(trainer_cli.train)
    app.command("merge")(trainer_cli.merge)
    app.add_typer(datagen_app, name="datagen")


_register_subcommands()


def main():
    app()


if __name__ == "__main__":
    main()
