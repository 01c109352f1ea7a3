"""What a run costs: token counts times the price table in ``configs/datagen/prices.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness_tasks.data_files import DataFileError

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "configs" / "datagen" / "prices.yaml"
# Budget estimates before a request is answered: English text runs ~4 characters per token in
# Mistral's tokenizers; 3 errs on the expensive side.
CHARS_PER_TOKEN_UPPER = 3


class _Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_discount: float = Field(0.5, gt=0, le=1)
    models: dict[str, _Price] = {}


@dataclass(frozen=True)
class Price:
    input: float
    """USD per million prompt tokens"""
    output: float
    """USD per million completion tokens"""

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1e6

    def describe(self) -> str:
        return f"${self.input:g} in / ${self.output:g} out per M tokens"


FREE = Price(0.0, 0.0)


def load_table(path: str | Path | None = None) -> _Table:
    path = Path(path or DEFAULT_PRICES)
    if not path.is_file():
        raise DataFileError(f"{path}: no such price table")
    try:
        return _Table.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValidationError) as err:
        raise DataFileError(f"{path}: not a price table: {err}") from None


def price_for(model: str, backend: str, path: str | Path | None = None) -> Price | None:
    """The price of ``model`` on ``backend`` (local models are free); None if the table lacks it."""
    if backend == "hf":
        return FREE
    table = load_table(path)
    listed = table.models.get(model)
    if listed is None:
        return None
    scale = table.batch_discount if backend == "mistral-batch" else 1.0
    return Price(listed.input * scale, listed.output * scale)


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens in ``text`` (used before the server has counted them)."""
    return len(text) // CHARS_PER_TOKEN_UPPER + 1
