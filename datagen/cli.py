"""``cotharness datagen ...``: training-data generation commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from datagen.engine.cli_checks import (
    api_key_for,
    backend_settings,
    finish,
    one_line,
)
from datagen.engine.cli_options import (
    Adapter,
    Backend,
    BatchSize,
    Concurrency,
    Device,
    DryRun,
    Force,
    FourBit,
    Limit,
    MaxCost,
    Poll,
    Prices,
    RedoChanged,
    Retries,
    RetryFailed,
    Rpm,
    Seed,
    ServerUrl,
    Timeout,
    Tpm,
)

app = typer.Typer(no_args_is_help=True, help="Generate training and evaluation data.")

# Options of the teacher stages (thoughts, score, reflect); those every model command shares are in cli_options
Input = Annotated[Path, typer.Option(help="Rows to process (CSV/JSONL; score/reflect: a thoughts file).")]
Out = Annotated[Path, typer.Option(help="Output JSONL (+ <name>.manifest.json); rerun with the same --out to "
                                        "resume.")]
Task = Annotated[str, typer.Option(help="Task folder under harness_tasks/ (prompt and answer schema).")]
Temperature = Annotated[float, typer.Option(min=0, max=2, help="Sampling temperature (0: greedy).")]
TopP = Annotated[float | None, typer.Option(min=0.01, max=1, help="Nucleus sampling.")]
MaxTokens = Annotated[int, typer.Option(min=1, help="Most tokens per answer.")]
RandomSeed = Annotated[int | None, typer.Option(min=0, help="random_seed sent with each request (reproducible "
                                                           "sampling).")]
Format = Annotated[str, typer.Option(help="json_object (JSON mode) | json_schema (structured output, where the "
                                          "model supports it: fewer re-prompts) | none.")]
Reprompts = Annotated[int, typer.Option(min=0, help="Re-prompts with the error after an invalid answer.")]


def _stage(stage: str, **kw) -> None:
    from datagen.engine.pipeline import StageRun
    from datagen.engine.runner import Options

    with one_line():
        concurrency, backend_args = backend_settings(
            kw["backend"], kw["model"], kw["server_url"], concurrency=kw.pop("concurrency"),
            batch_size=kw.pop("batch_size"), adapter=kw.pop("adapter"), load_in_4bit=kw.pop("load_in_4bit"),
            device=kw.pop("device"), poll_interval=kw.pop("poll_interval"))
        api_key_for(kw["backend"], kw["server_url"], kw["dry_run"])
        options = Options(concurrency=concurrency, **{k: kw.pop(k) for k in (
            "rpm", "tpm", "max_reprompts", "max_retries", "max_cost", "retry_failed", "redo_changed")})
        cfg = StageRun(stage=stage, options=options, backend_args=backend_args, **kw)
    run_or_exit(cfg)


def run_or_exit(cfg) -> None:
    """Run a stage; a user's mistake or an outside failure ends in one line, not a traceback.

    Exit codes: 0 every row this stage wants is done; 1 some are failed (see ``finish``); 2 a user's
    mistake or a failure no request can survive; 3 stopped early (``--max-cost``); 130 Ctrl-C."""
    from datagen.teacher.stages import run

    with one_line():
        tally = run(cfg).tally
    if not cfg.dry_run:  # a dry run did nothing that could fail
        finish(tally)


def _teacher_command(stage_name: str, default_model: str, doc: str):
    def command(
        input: Input, out: Out,
        model: Annotated[str, typer.Option(help="Model name (--backend hf: a local model directory).")]
        = default_model,
        backend: Backend = "mistral", server_url: ServerUrl = None, concurrency: Concurrency = None,
        batch_size: BatchSize = None, limit: Limit = None, dry_run: DryRun = False, task: Task = "nli_cot",
        temperature: Temperature = 0.0, top_p: TopP = None, max_tokens: MaxTokens = 1024, seed: RandomSeed = 0,
        response_format: Format = "json_object", timeout: Timeout = 120.0, rpm: Rpm = None, tpm: Tpm = None,
        max_reprompts: Reprompts = 2, max_retries: Retries = 6, max_cost: MaxCost = None,
        retry_failed: RetryFailed = False, redo_changed: RedoChanged = False, prices: Prices = None,
        adapter: Adapter = None, load_in_4bit: FourBit = False, device: Device = None, poll_interval: Poll = 30.0,
        label_column: Annotated[str, typer.Option(help="thoughts: the gold label's column (if any).")] = "label",
        empty_labels: Annotated[Literal["error", "skip"], typer.Option(
            help="thoughts: rows of a labelled file with an empty label: error (the default) or skip them "
                 "(counted aloud and in the manifest).")] = "error",
    ):
        kw = dict(locals())
        kw.pop("stage_name", None)  # a closure variable, which locals() includes
        _stage(stage_name, **kw)

    command.__doc__ = doc
    return command


app.command("thoughts")(_teacher_command(
    "thoughts", "open-mistral-7b",
    "A teacher answers each row with {thought_process, predicted_label} (resumable; failures recorded)."))
app.command("score")(_teacher_command(
    "score", "mistral-large-latest", "A judge rates each thought 1-5 and may improve it."))
app.command("reflect")(_teacher_command(
    "reflect", "mistral-large-latest",
    "For rows the teacher got wrong, a stronger model is told the true label and corrects the reasoning."))


def _prepare_command():
    from datagen.teacher.prepare import command

    return command


app.command("prepare")(_prepare_command())


def _tools_command():
    from datagen.tools.cli import command

    return command


app.command("tools")(_tools_command())


def _backtranslate_cli():
    from datagen.backtranslate import cli as backtranslate_cli

    return backtranslate_cli


# Instruction backtranslation: `backtranslate inverse|augment`, and `curate` (a judge keeps the good pairs)
app.add_typer(_backtranslate_cli().app, name="backtranslate")
app.command("curate")(_backtranslate_cli().curate)


@app.command()
def puzzles(
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, dev.jsonl, test.jsonl and manifest.json "
                                           "(rows: id, family, premise, hypothesis, label, thought_process).")],
    train: Annotated[int, typer.Option(min=0, max=1_000_000, help="Training rows (0: no train.jsonl).")] = 1000,
    dev: Annotated[int, typer.Option(min=0, max=1_000_000, help="Development rows (0: no dev.jsonl).")] = 100,
    test: Annotated[int, typer.Option(min=0, max=1_000_000, help="Test rows (0: no test.jsonl).")] = 300,
    seed: Seed = 0, force: Force = False,
    split: Annotated[str | None, typer.Option(hidden=True)] = None,
    n: Annotated[int | None, typer.Option(hidden=True)] = None,
):
    """Logic puzzles for the puzzte task (comparison, knights and knaves, zebra): labels computed by a
    solver (entailment / contradiction / ambiguous), with the solver's reasoning as the thought.

    People's names differ between splits; families and labels take turns, so both are balanced."""
    from datagen.engine.cli_checks import UsageError
    from datagen.synthetic.puzzles import LABELS, write

    with one_line("each file is either complete or untouched; rerun with --force"):
        if split is not None or n is not None:  # the spelling of a single-file output, before --out was a folder
            raise UsageError("--split/--n are replaced by a row count per split: --out DIR --train N --dev N "
                             "--test N")
        counts = write(out, {"train": train, "dev": dev, "test": test}, seed, force)
    for name, by_family in counts.items():
        typer.echo(f"{name}: {out / (name + '.jsonl')} ({sum(sum(c.values()) for c in by_family.values())} rows)")
        for family, by_label in by_family.items():
            typer.echo(f"  {family}: " + ", ".join(f"{label} {by_label[label]}" for label in LABELS))


@app.command()
def synthetic(
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, dev.jsonl, test.jsonl and manifest.json.")],
    train: Annotated[int, typer.Option(min=0, max=1_000_000, help="Training rows (0: no train.jsonl).")] = 2000,
    dev: Annotated[int, typer.Option(min=0, max=1_000_000, help="Development rows (eval loss, early stopping; "
                                                                "0: no dev.jsonl).")] = 100,
    test: Annotated[int, typer.Option(min=0, max=1_000_000, help="Held-out test rows (names unseen in train/dev; "
                                                                 "0: no test.jsonl).")] = 200,
    seed: Seed = 0, force: Force = False,
):
    """The project's synthetic NLI task with gold labels and step-by-step thoughts."""
    from datagen.synthetic.nli import write_splits

    with one_line("each file is either complete or untouched; rerun with --force"):
        written = write_splits(out, {"train": train, "dev": dev, "test": test}, seed, force)
    for split, path in written.items():
        typer.echo(f"{split}: {path}")


def write_synthetic(out: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """The synthetic NLI splits, replacing any earlier ones (the demo's own working folder)."""
    from datagen.synthetic.nli import write_splits

    return write_splits(out, sizes, seed, force=True)
