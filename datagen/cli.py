"""``cotharness datagen ...``: training-data generation commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Generate training and evaluation data.")


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
