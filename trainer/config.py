"""Training configuration: YAML files with ``base:`` inheritance, validated by pydantic.

``training:`` accepts exactly the fields of TRL's ``SFTConfig`` (TRL owns them; we check each name and
value against its dataclass field), the other sections are ours. Any unknown key is an error naming the
closest valid key, any value of the wrong type an error naming the key and the type it takes, before
data or a model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

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
MACHINE_CHOSEN = ("use_liger_kernel", "activation_checkpointing")
# transformers 5.23 renamed these (the old names warn, and go in v6); configs may still use the old ones
RENAMED = {"gradient_checkpointing": "activation_checkpointing",
           "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


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
        value = renamed(value)
        out = {}
        for key, item in value.items():
            if key in owned:
                raise ValueError(f"training.{key}: set it as {owned[key]}")
            if key not in sft_fields():
                raise ValueError(f"{key!r} is not a field of trl.SFTConfig{_suggest(key, sft_fields())}")
            if key in MACHINE_CHOSEN and item == "auto":
                out[key] = item
            elif key in MACHINE_CHOSEN and item not in (True, False):
                raise ValueError(f"training.{key}: expected true, false or auto, got {item!r}")
            else:
                out[key] = _typed(key, item)
        return out


def renamed(training: dict[str, Any]) -> dict[str, Any]:
    """``training`` with transformers' deprecated names under their new ones. Where a config that inherits
    (``base:``) holds both, the old name wins: the shipped configs use only the new one, so an old name
    was written by the user."""
    out = {k: v for k, v in training.items() if k not in RENAMED}
    for old, new in RENAMED.items():
        if old in training:
            out[new] = training[old]
    return out


def _typed(key: str, value):
    """``value`` checked against SFTConfig's annotation of ``key``: a wrong type fails here, naming the key,
    not deep inside the Trainer after the data and model are loaded. A number or boolean written as text
    (YAML 1.1 reads 2e-4, without a dot, as a string) and a whole float for an int come back converted;
    anything else as written (an enum stays the string the user wrote, for run.json and the card)."""
    value = _number(value)
    try:
        checked = _adapter(key).validate_python(value)
    except ValidationError:
        raise ValueError(f"training.{key}={value!r}: expected {_type_name(_field_types()[key])} "
                         "(the type of trl.SFTConfig's field)") from None
    plain = type(checked) in (bool, int, float)
    return checked if plain and (isinstance(value, str) or type(checked) is int and type(value) is float) else value


@cache
def _field_types() -> dict[str, Any]:
    from trl import SFTConfig

    return {f.name: f.type for f in dataclasses.fields(SFTConfig) if f.init}


@cache
def _adapter(key: str) -> TypeAdapter:
    return TypeAdapter(_field_types()[key], config=ConfigDict(arbitrary_types_allowed=True))


def _type_name(annotation) -> str:
    """``float``, ``int | None``, ``SchedulerType | str``: the annotation without module paths."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text).replace("NoneType", "None")


def _number(value):
    """``"2e-4"`` -> 0.0002 (YAML 1.1 reads exponents without a dot as strings)."""
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value.strip()) else value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def sft_fields() -> frozenset[str]:
    return frozenset(_field_types())


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
    overrides = dict(overrides or {})
    if isinstance(overrides.get("training"), dict):  # --set training.gradient_checkpointing=... replaces the new name
        overrides["training"] = renamed(overrides["training"])
        if isinstance(data.get("training"), dict):
            data["training"] = renamed(data["training"])
    data = merge(data, overrides)
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
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(msg if msg.startswith(f"{loc}.") else f"{loc}: {msg}")
    return where + "; ".join(lines)


def _section_model(loc) -> type[BaseModel] | None:
    model: type[BaseModel] = TrainConfig
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
