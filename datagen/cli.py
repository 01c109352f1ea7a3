"""``cotharness datagen ...``: training-data generation commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from datagen.cli_options import (
    DryRun,
    Limit,
    MaxCost,
    Prices,
    RedoChanged,
    Retries,
    RetryFailed,
    Rpm,
    Timeout,
    Tpm,
)

app = typer.Typer(no_args_is_help=True, help="Generate training and evaluation data.")

# Options shared by the teacher stages (thoughts, score, reflect).
Input = Annotated[Path, typer.Option(help="Rows to process (CSV/JSONL; score/reflect: a thoughts file).")]
Out = Annotated[Path, typer.Option(help="Output JSONL; rerun with the same --out to resume.")]
Backend = Annotated[str, typer.Option(help="mistral | mistral-batch (Batch API, half price) | hf (local model).")]
ServerUrl = Annotated[str | None, typer.Option(help="Any server with Mistral/OpenAI chat completions, e.g. "
                                                    "http://localhost:8000 (vLLM, llama.cpp); default: the Mistral API.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Requests in flight (hf: also the batch size).")]
Task = Annotated[str, typer.Option(help="Task folder under harness_tasks/ (prompt and answer schema).")]
Temperature = Annotated[float, typer.Option(min=0, help="Sampling temperature (0: greedy).")]
TopP = Annotated[float | None, typer.Option(help="Nucleus sampling.")]
MaxTokens = Annotated[int, typer.Option(min=1, help="Most tokens per answer.")]
Seed = Annotated[int | None, typer.Option(help="random_seed sent with each request (reproducible sampling).")]
Format = Annotated[str, typer.Option(help="json_object (JSON mode) | json_schema (structured output, where the "
                                          "model supports it: fewer re-prompts) | none.")]
Reprompts = Annotated[int, typer.Option(min=0, help="Re-prompts with the error after an invalid answer.")]
Adapter = Annotated[Path | None, typer.Option(help="hf: a PEFT adapter on top of --model.")]
FourBit = Annotated[bool, typer.Option(help="hf: load --model in 4-bit NF4.")]
Device = Annotated[str | None, typer.Option(help="hf: cuda, cuda:1, cpu (default: cuda if available).")]
Poll = Annotated[float, typer.Option(min=0.01, help="mistral-batch: seconds between job status checks.")]


def _stage(stage: str, **kw) -> None:
    from datagen.pipeline import StageRun
    from datagen.runner import Options

    options = Options(**{k: kw.pop(k) for k in ("concurrency", "rpm", "tpm", "max_reprompts", "max_retries",
                                                 "max_cost", "retry_failed", "redo_changed")})
    backend_args = {"hf": {"adapter": kw.pop("adapter"), "load_in_4bit": kw.pop("load_in_4bit"),
                           "device": kw.pop("device"), "batch_size": options.concurrency},
                    "mistral-batch": {"poll_interval": kw.pop("poll_interval")}}.get(kw["backend"], {})
    for k in ("adapter", "load_in_4bit", "device", "poll_interval"):
        kw.pop(k, None)
    run_or_exit(StageRun(stage=stage, options=options, backend_args=backend_args, **kw))


def run_or_exit(cfg) -> None:
    """Run a stage; a user's mistake or an outside failure ends in one line, not a traceback.

    Exit codes: 0 every row this stage wants is done; 1 some are failed (see ``finish``); 2 a user's
    mistake or a failure no request can survive; 3 stopped early (``--max-cost``); 130 Ctrl-C."""
    from datagen.backends.base import FatalBackendError
    from datagen.pipeline import UsageError, run
    from datagen.runner import ChangedRequestsError
    from datagen.store import OutputLockedError
    from harness_tasks.data_files import DataFileError
    from harness_tasks.secrets import MissingKeyError, redact

    try:
        tally = run(cfg)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished rows are saved; rerun the same command to continue", err=True)
        raise typer.Exit(130) from None
    except (UsageError, DataFileError, ChangedRequestsError, MissingKeyError, OutputLockedError,
            FatalBackendError, FileNotFoundError) as err:
        typer.echo(f"error: {redact(str(err))}", err=True)
        raise typer.Exit(2) from None
    if not cfg.dry_run:  # a dry run did nothing that could fail
        finish(tally)


def finish(tally) -> None:
    """The exit after a run that has written everything: 3 if it stopped early, else 1 if rows it was
    asked to do are failed, so that a script or a Makefile notices. Failed rows get one closing line."""
    if tally.failed_rows:
        earlier = f", {tally.failed_before} of them in an earlier run" if tally.failed_before else ""
        typer.echo(f"{tally.failed_rows} row(s) failed{earlier}: rerun with --retry-failed to try them again",
                   err=True)
    if tally.stopped:
        raise typer.Exit(3)
    if tally.failed_rows:
        raise typer.Exit(1)


def _teacher_command(stage_name: str, default_model: str, doc: str):
    def command(
        input: Input, out: Out, model: Annotated[str, typer.Option(help="Model name.")] = default_model,
        backend: Backend = "mistral", server_url: ServerUrl = None, concurrency: Concurrency = 8,
        limit: Limit = None, dry_run: DryRun = False, task: Task = "nli_cot",
        temperature: Temperature = 0.0, top_p: TopP = None, max_tokens: MaxTokens = 1024, seed: Seed = 0,
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
    from datagen.prepare import command

    return command


app.command("prepare")(_prepare_command())


def _tools_command():
    from datagen.tools_cli import command

    return command


app.command("tools")(_tools_command())


def _backtranslate_cli():
    from datagen import backtranslate_cli

    return backtranslate_cli


# Instruction backtranslation: `backtranslate inverse|augment`, and `curate` (a judge keeps the good pairs)
app.add_typer(_backtranslate_cli().app, name="backtranslate")
app.command("curate")(_backtranslate_cli().curate)


@app.command()
def puzzles(
    out: Annotated[Path, typer.Option(help="Output JSONL (id, family, premise, hypothesis, label, thought_process).")],
    split: Annotated[str, typer.Option(help="train | dev | test (people's names differ between splits).")] = "train",
    n: Annotated[int, typer.Option(min=1, help="Rows; families and labels take turns, so both are balanced.")] = 1000,
    seed: Annotated[int, typer.Option(help="Same seed, same rows.")] = 0,
    manifest: Annotated[bool, typer.Option(help="Also write <name>.manifest.json (options, balance, versions).")]
    = True,
):
    """Logic puzzles for the puzzte task (comparison, knights and knaves, zebra): labels computed by a
    solver (entailment / contradiction / ambiguous), with the solver's reasoning as the thought."""
    from datagen.synthetic_puzzles import LABELS, write

    try:
        counts = write(out, split, n, seed, manifest)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{out}: {n} rows ({split}, seed {seed})")
    for family, by_label in counts.items():
        typer.echo(f"  {family}: " + ", ".join(f"{label} {by_label[label]}" for label in LABELS))


@app.command()
def synthetic(
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, dev.jsonl, test.jsonl.")],
    train: Annotated[int, typer.Option(help="Training rows.")] = 2000,
    dev: Annotated[int, typer.Option(help="Development rows (eval loss, early stopping).")] = 100,
    test: Annotated[int, typer.Option(help="Held-out test rows (names unseen in train/dev).")] = 200,
    seed: Annotated[int, typer.Option(help="Same seed, same rows.")] = 0,
):
    """The project's synthetic NLI task with gold labels and step-by-step thoughts."""
    for split, path in write_synthetic(out, {"train": train, "dev": dev, "test": test}, seed).items():
        typer.echo(f"{split}: {path}")


def write_synthetic(out: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, Path]:
    from datagen.synthetic_nli import generate
    from harness_tasks.manifest import write_atomic

    return {split: write_atomic(out / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in generate(split, n, seed)))
            for split, n in sizes.items()}
