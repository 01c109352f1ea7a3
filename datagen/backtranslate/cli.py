"""``cotharness datagen backtranslate inverse|augment`` and ``cotharness datagen curate``: instruction
backtranslation (Humpback-style self-instruct) on the shared datagen pipeline.

1. ``inverse``: seed (instruction, response) pairs -> train/dev rows for the backward model
   (``cotharness train --config configs/train/backward.yaml``);
2. ``augment``: the backward model writes an instruction for each unlabelled response;
3. ``curate``: a judge rates each pair 1-5; the pairs rated >= threshold are kept
   (``cotharness train --config configs/train/self_instruct.yaml``).

Sampling and judging settings come from ``configs/datagen/backtranslate.yaml`` unless a flag says
otherwise. A user's mistake or an outside failure ends in one ``error:`` line (exit 2); a run that
stopped early (e.g. ``--max-cost``) exits 3 with its rows saved, one that ends with failed rows 1
(``datagen.engine.cli_checks.finish``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagen.engine.cli_checks import (
    UsageError,
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

app = typer.Typer(no_args_is_help=True,
                  help="Instruction backtranslation: seed pairs for a backward model, and the instructions it "
                       "writes for unlabelled responses.")

FromConfig = "default: configs/datagen/backtranslate.yaml"
Config = Annotated[Path | None, typer.Option(help="Settings YAML read over configs/datagen/backtranslate.yaml.")]
Temperature = Annotated[float | None, typer.Option(min=0, max=2, help=f"Sampling temperature ({FromConfig}).")]
MaxTokens = Annotated[int | None, typer.Option(min=1, help=f"Most tokens per answer ({FromConfig}).")]
Reprompts = Annotated[int | None, typer.Option(min=0, help=f"Re-asks after an unusable answer ({FromConfig}).")]
FromSettings = f"({FromConfig})"


@app.command()
def inverse(
    input: Annotated[Path, typer.Option(help="Seed (instruction, response) pairs, CSV or JSONL.")],
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, dev.jsonl and manifest.json.")],
    instruction_column: Annotated[str, typer.Option(help="The instruction's column.")] = "instruction",
    response_column: Annotated[str, typer.Option(help="The response's column.")] = "response",
    dev_fraction: Annotated[float, typer.Option(min=0, max=0.99, help="Share of distinct responses held out for "
                                                                        "eval loss.")] = 0.05,
    seed: Seed = 0, force: Force = False,
):
    """Seed pairs -> training rows for the backward model (data.task: backward), checked and split."""
    from datagen.backtranslate.inverse import invert

    with one_line("each file is either complete or untouched; rerun with --force"):
        result = invert(input, out, instruction_column, response_column, dev_fraction, seed, force)
    typer.echo(f"{input}: {result.read} rows read; {len(result.train)} train and {len(result.dev)} dev pairs "
               f"written to {out}/")
    if result.duplicates:
        shown = ", ".join(f"line {line} repeats line {first}" for line, first in result.duplicates[:5])
        more = f" and {len(result.duplicates) - 5} more" if len(result.duplicates) > 5 else ""
        typer.echo(f"left out {len(result.duplicates)} repeated pair(s): {shown}{more} (listed in "
                   f"{out}/manifest.json)")


@app.command()
def augment(
    input: Annotated[Path, typer.Option(help="Unlabelled responses, CSV or JSONL (a response column, optional id).")],
    out: Annotated[Path, typer.Option(help="Output JSONL of {id, response, instruction}; rerun to resume.")],
    model: Annotated[str | None, typer.Option(help="The backward model: its name on the server or API, or with "
                                                   "--backend hf a local base model directory (+ --adapter: "
                                                   "the backward model trained here).")] = None,
    backend: Backend = "mistral", server_url: ServerUrl = None,
    adapter: Adapter = None, load_in_4bit: FourBit = False, device: Device = None,
    temperature: Temperature = None,
    top_p: Annotated[float | None, typer.Option(min=0.01, max=1, help=f"Nucleus sampling {FromSettings}.")] = None,
    max_tokens: MaxTokens = None,
    seed: Annotated[int | None, typer.Option(min=0, help=f"Sampling seed {FromSettings}.")] = None,
    batch_size: BatchSize = None, concurrency: Concurrency = None, max_reprompts: Reprompts = None,
    limit: Limit = None,
    response_column: Annotated[str, typer.Option(help="The response's column.")] = "response",
    config: Config = None, dry_run: DryRun = False, timeout: Timeout = 120.0, rpm: Rpm = None, tpm: Tpm = None,
    max_retries: Retries = 6, max_cost: MaxCost = None, retry_failed: RetryFailed = False,
    redo_changed: RedoChanged = False, prices: Prices = None, poll_interval: Poll = 30.0,
    local_model: Annotated[Path | None, typer.Option(hidden=True, help="Renamed: --backend hf --model DIR.")] = None,
):
    """The backward model writes the instruction each unlabelled response answers.

    Resumable; an empty or echoed instruction is asked again, then recorded as failed."""
    from datagen.backtranslate.steps import AugmentRun
    from datagen.backtranslate.steps import augment as run_augment

    with one_line():
        if local_model is not None:
            # the spelling before one grammar; model cards of earlier runs still print it
            if model is not None or backend != "mistral":
                raise UsageError("--local-model DIR is the old spelling of --backend hf --model DIR: give one")
            typer.echo("note: --local-model is renamed: --backend hf --model DIR", err=True)
            backend, model = "hf", str(local_model)
        if model is None:
            raise UsageError("--model is required: the backward model's name on the server or API, or with "
                             "--backend hf its local directory")
        result = run_augment(AugmentRun(
            input=input, out=out, model=model, backend=backend, server_url=server_url, adapter=adapter,
            load_in_4bit=load_in_4bit, device=device, batch_size=batch_size, concurrency=concurrency,
            settings=dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                          max_reprompts=max_reprompts),
            config=config, limit=limit, response_column=response_column, dry_run=dry_run, timeout=timeout,
            rpm=rpm, tpm=tpm, max_retries=max_retries, max_cost=max_cost, retry_failed=retry_failed,
            redo_changed=redo_changed, prices=prices, poll_interval=poll_interval))
        if result.duplicates:
            typer.echo(f"{input}: left out {len(result.duplicates)} repeated response(s), e.g. line "
                       f"{result.duplicates[0][0]} repeats line {result.duplicates[0][1]}", err=True)
        tally = result.tally
    if not dry_run:
        finish(tally)


def curate(
    input: Annotated[Path, typer.Option(help="(instruction, response) pairs, e.g. backtranslate augment's output.")],
    out: Annotated[Path, typer.Option(help="Output JSONL of the pairs rated >= --threshold; every score goes to "
                                           "<out>.scores.jsonl. Rerun to resume or to re-filter.")],
    model: Annotated[str | None, typer.Option(help=f"The judge ({FromConfig}).")] = None,
    threshold: Annotated[int | None, typer.Option(min=1, max=5, help=f"Keep pairs rated at least this "
                                                                     f"({FromConfig}).")] = None,
    backend: Backend = "mistral",
    server_url: ServerUrl = None, temperature: Temperature = None, max_tokens: MaxTokens = None,
    seed: Annotated[int | None, typer.Option(min=0, help="random_seed sent with each request.")] = 0,
    concurrency: Concurrency = None, batch_size: BatchSize = None, max_reprompts: Reprompts = None,
    limit: Limit = None, config: Config = None,
    dry_run: DryRun = False, timeout: Timeout = 120.0, rpm: Rpm = None, tpm: Tpm = None, max_retries: Retries = 6,
    max_cost: MaxCost = None, retry_failed: RetryFailed = False, redo_changed: RedoChanged = False,
    prices: Prices = None, adapter: Adapter = None, load_in_4bit: FourBit = False, device: Device = None,
    poll_interval: Poll = 30.0,
):
    """A judge rates each (instruction, response) pair 1-5; the pairs rated >= --threshold are kept.

    The rubric is prompts/rate_pair_system.j2; every score and the judge's reasoning are saved beside the
    output (resumable; a rerun with another --threshold asks the judge nothing)."""
    from datagen.backtranslate.curate import scores_path
    from datagen.backtranslate.steps import CurateRun
    from datagen.backtranslate.steps import curate as run_curate

    with one_line():
        done = run_curate(CurateRun(
            input=input, out=out, backend=backend, server_url=server_url,
            settings=dict(model=model, threshold=threshold, temperature=temperature, max_tokens=max_tokens,
                          max_reprompts=max_reprompts),
            config=config, seed=seed, concurrency=concurrency, batch_size=batch_size, limit=limit,
            dry_run=dry_run, timeout=timeout, rpm=rpm, tpm=tpm, max_retries=max_retries, max_cost=max_cost,
            retry_failed=retry_failed, redo_changed=redo_changed, prices=prices, adapter=adapter,
            load_in_4bit=load_in_4bit, device=device, poll_interval=poll_interval))
        if dry_run:
            return
        tally, s, result = done.tally, done.settings, done.filtered
    counts = ", ".join(f"{k}: {v}" for k, v in result.counts.items())
    typer.echo(f"scores of {result.judged} judged pairs: {counts}")
    typer.echo(f"kept {result.kept} of {result.judged} (score >= {s.threshold}) -> {out}; every score and "
               f"reasoning in {scores_path(out)}")
    if result.not_judged:
        typer.echo(f"{result.not_judged} row(s) have no instruction (augment failed) and were not judged")
    if result.pending:
        typer.echo(f"{result.pending} pair(s) are not judged yet: rerun the same command to continue", err=True)
    finish(tally)
