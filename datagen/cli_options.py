"""Command-line options the datagen commands share (typer annotations): one help text per option."""

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
MaxCost = Annotated[float | None, typer.Option(help="Stop before spending more than this many USD (this run).")]
RetryFailed = Annotated[bool, typer.Option(help="Try rows that failed in an earlier run again.")]
RedoChanged = Annotated[bool, typer.Option(help="Replace rows made with a different prompt/model/parameters.")]
Prices = Annotated[Path | None, typer.Option(help="Price table (default configs/datagen/prices.yaml).")]
