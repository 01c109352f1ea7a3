"""Training configuration: YAML files with ``base:`` inheritance, validated by pydantic.

``training:`` accepts exactly the fields of TRL's ``SFTConfig`` (TRL owns them; we only check the
names), the other sections are ours. Any unknown key is an error naming the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness_tasks.errors import UserError
from harness_tasks.yaml_files import YamlFileError, merge, read_yaml


class ConfigError(UserError, ValueError):
    pass


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Section):
    base_model: str = "mistralai/Mistral-7B-v0.3"
    """hub id or local directory"""
    quantization: Literal["nf4", "fp4", "int8", "none"] = "nf4"
    """nf4/fp4: 4-bit QLoRA; int8: 8-bit; none: LoRA on 16/32-bit weights"""
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """dtype of the matmuls (4-bit) and of the unquantized weights"""
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False


class LoraSection(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class DataSection(Section):
    task: str = "nli_cot"
    """task folder under harness_tasks/: its prompt template and answer schema format the rows"""
    train_file: str | None = None
    eval_file: str | None = None
    label_column: str = "label"
    thought_column: str = "thought_process"
    """these two: tasks with an answer schema; a free-text task (``TaskSpec.target``) trains on its target"""
    empty_labels: Literal["error", "skip"] = "error"
    """rows with an empty label: an error naming the count and first line, or left out (counted aloud)"""
    max_length: int = Field(1024, gt=0)
    """tokens of prompt + answer + EOS; longer rows are dropped or fail, never cut (that would cut EOS)"""
    overlong: Literal["drop", "fail"] = "drop"


# SFTConfig fields that also take "auto": trainer/speed.py chooses them for the machine at launch
MACHINE_CHOSEN = ("use_liger_kernel", "gradient_checkpointing")


class TrainConfig(Section):
    base: str | None = None
    """parent config file (relative to this one); its values are the defaults here"""
    output_dir: str = "runs/default"
    model: ModelSection = ModelSection()
    lora: LoraSection = LoraSection()
    data: DataSection = DataSection()
    early_stopping_patience: int | None = Field(3, ge=1)
    """evaluations without eval-loss improvement before stopping (None: off)"""
    training: dict[str, Any] = {}
    """any field of trl.SFTConfig"""

    @field_validator("training")
    @classmethod
    def _known_sft_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = {"output_dir": "output_dir", "max_length": "data.max_length"}
        for key in value:
            if key in owned:
                raise ValueError(f"training.{key}: set it as {owned[key]}")
            if key not in sft_fields():
                raise ValueError(f"{key!r} is not a field of trl.SFTConfig{_suggest(key, sft_fields())}")
            if key in MACHINE_CHOSEN and value[key] not in (True, False, "auto"):
                raise ValueError(f"{key}: expected true, false or auto, got {value[key]!r}")
        # YAML 1.1 reads 2e-4 (no dot) as a string; SFTConfig would get "2e-4"
        return {k: _number(v) for k, v in value.items()}


def _number(value):
    """``"2e-4"`` -> 0.0002 (YAML 1.1 reads exponents without a dot as strings)."""
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value.strip()) else value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@cache
def sft_fields() -> frozenset[str]:
    from trl import SFTConfig

    return frozenset(f.name for f in dataclasses.fields(SFTConfig) if f.init)


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_set(assignments: list[str]) -> dict:
    """``["training.learning_rate=1e-4", ...]`` -> nested dict; values are read as YAML scalars."""
    out: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        value = yaml.safe_load(raw) if raw.strip() else None
        node[leaf] = _number(value)
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    try:
        data = read_yaml(Path(path)) if path else {}
    except YamlFileError as err:
        raise ConfigError(str(err)) from None
    data = merge(data, overrides or {})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_explain(err, path)) from None


def _explain(err: ValidationError, path) -> str:
    where = f"{path}: " if path else ""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _section_model(e["loc"][:-1])
            valid = section.model_fields if section else {}
            lines.append(f"unknown key {loc!r}{_suggest(str(e['loc'][-1]), valid)}")
        else:
            lines.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return where + "; ".join(lines)


def _section_model(loc) -> type[BaseModel] | None:
    model: type[BaseModel] = TrainConfig
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
