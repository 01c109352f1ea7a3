"""Command-line options the datagen commands share (typer annotations): one name, one meaning and one
help text per option, so that ``--concurrency`` or ``--batch-size`` mean the same in every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Limit = Annotated[int | None, typer.Option(min=1, help="Only the first N input rows.")]
DryRun = Annotated[bool, typer.Option(help="Print the first request and a token/cost estimate; send and write "
                                           "nothing.")]
Timeout = Annotated[float, typer.Option(min=1, help="Seconds per request before it is retried.")]
Rpm = Annotated[int | None, typer.Option(min=1, help="Requests per minute at most.")]
Tpm = Annotated[int | None, typer.Option(min=1, help="Tokens per minute at most (estimated before sending).")]
Retries = Annotated[int, typer.Option(min=0, help="Retries of a 429/5xx/timeout (exponential backoff, "
                                                  "Retry-After honoured).")]
MaxCost = Annotated[float | None, typer.Option(min=0, help="Stop before spending more than this many USD (this "
                                                           "run); exit 3, rows kept.")]
RetryFailed = Annotated[bool, typer.Option(help="Try rows that failed in an earlier run again.")]
RedoChanged = Annotated[bool, typer.Option(help="Replace rows made with a different prompt/model/parameters.")]
Prices = Annotated[Path | None, typer.Option(help="Price table (default configs/datagen/prices.yaml).")]

# Who answers: one grammar for every command that asks a model
Backend = Annotated[str, typer.Option(help="mistral (the API or --server-url) | mistral-batch (Batch API, half "
                                           "price) | hf (a local model: --model DIR [--adapter DIR]).")]
ServerUrl = Annotated[str | None, typer.Option(help="Any server with Mistral/OpenAI chat completions, e.g. "
                                                    "http://localhost:8000 (vLLM, llama.cpp); default: the Mistral "
                                                    "API (MISTRAL_API_KEY).")]
Concurrency = Annotated[int | None, typer.Option(min=1, max=1024, help="Requests in flight to the server "
                                                                       "(mistral backends; default 8).")]
BatchSize = Annotated[int | None, typer.Option(min=1, max=4096, help="--backend hf: prompts per generate call of "
                                                                     "the local model (default 8).")]
Adapter = Annotated[Path | None, typer.Option(help="--backend hf: a PEFT adapter on --model (a `cotharness train` "
                                                   "run).")]
FourBit = Annotated[bool, typer.Option(help="--backend hf: load --model in 4-bit NF4 (as QLoRA adapters are "
                                            "trained).")]
Device = Annotated[str | None, typer.Option(help="--backend hf: cuda, cuda:1, cpu (default: cuda if available).")]
Poll = Annotated[float, typer.Option(min=0.01, help="mistral-batch: seconds between job status checks.")]

# Files a command writes
Force = Annotated[bool, typer.Option(help="Replace the files of an earlier run in --out (refused without it).")]
Seed = Annotated[int, typer.Option(min=0, help="Same seed and inputs, same files.")]
