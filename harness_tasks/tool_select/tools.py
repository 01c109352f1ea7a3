"""The tools a tool_select model chooses from, declared in YAML and validated once.

A tools file (``tools.yaml`` next to this module is the default) lists each tool's ``name``,
``description`` and ``parameters`` (a JSON Schema object), plus an optional ``synthesis`` section that
``cotharness datagen tools`` writes example requests from. A mistake in the file is one
:class:`ToolsFileError` naming the file and the key. Prompts, the answer schema and the metrics only
use the prompt-facing part (:meth:`Tool.spec`), which datagen also embeds in every row it writes, so a
row renders the same prompt at training and at evaluation.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness_tasks.errors import UserError
from harness_tasks.schema import AnswerSchema

DEFAULT_TOOLS_FILE = Path(__file__).resolve().parent / "tools.yaml"
THOUGHT_KEY, LABEL_KEY, PARAMETERS_KEY = "reasoning", "tool", "parameters"

# "{slot}" or "{slot.field}"; "{{" and "}}" are literal braces (as in str.format), e.g. in code.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?\}")
SlotValue = str | int | float | dict[str, str | int | float]


class ToolsFileError(UserError, ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Example(_Strict):
    """A request template: ``query``, the gold ``parameters`` and a short ``reasoning``, with
    ``{slot}`` placeholders filled from the slot lists."""

    query: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    reasoning: str = Field(min_length=1)


class AmbiguousExample(Example):
    """A request that plausibly fits two tools: the tool it is listed under is the right one, ``also``
    the other plausible one; ``reasoning`` says why the first wins."""

    also: str


class Synthesis(_Strict):
    slots: dict[str, list[SlotValue]] = Field(default_factory=dict)
    queries: list[Example] = Field(min_length=1)
    ambiguous: list[AmbiguousExample] = Field(default_factory=list)


class Tool(_Strict):
    # letters, digits and "_": the answer parser reads "web search" / "Web-Search" as web_search, so names
    # differing only in case, "-" or spaces could not be told apart
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
    description: str = Field(min_length=1)
    parameters: dict[str, Any]
    synthesis: Synthesis | None = None

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, schema: dict) -> dict:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as err:
            where = "/".join(map(str, err.absolute_path)) or "(top)"
            raise ValueError(f"not a valid JSON Schema at {where}: {err.message}") from None
        if schema.get("type") != "object":
            raise ValueError('must be a JSON Schema with "type": "object" (a tool takes named parameters)')
        return schema

    def spec(self) -> dict:
        """What prompts show and rows embed: name, description, parameters schema."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolsFile(_Strict):
    slots: dict[str, list[SlotValue]] = Field(default_factory=dict)
    """slot lists every tool's templates may use (a tool's own slots take precedence)"""
    tools: list[Tool] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> ToolsFile:
        names = [t.name for t in self.tools]
        folded = [n.casefold() for n in names]
        dupes = sorted({n for n in names if folded.count(n.casefold()) > 1})
        if dupes:
            raise ValueError(f"tool names must be unique (ignoring case); repeated: {dupes}")
        for i, tool in enumerate(self.tools):
            if tool.synthesis is None:
                continue
            slots = {**self.slots, **tool.synthesis.slots}
            for kind, examples in (("queries", tool.synthesis.queries), ("ambiguous", tool.synthesis.ambiguous)):
                for j, ex in enumerate(examples):
                    where = f"tools.{i} ({tool.name}).synthesis.{kind}.{j}"
                    if isinstance(ex, AmbiguousExample) and (ex.also not in names or ex.also == tool.name):
                        raise ValueError(f"{where}.also: {ex.also!r} must be another declared tool of {names}")
                    for key, text in _strings(ex.model_dump(exclude={"also"})):
                        _check_placeholders(text, slots, f"{where}.{key}")
        return self

    def specs(self) -> list[dict]:
        return [t.spec() for t in self.tools]


def _strings(value, key: str = "") -> list[tuple[str, str]]:
    """Every string inside ``value`` with its dotted key."""
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{key}.{i}")]
    return []


def _check_placeholders(text: str, slots: dict[str, list], where: str) -> None:
    for m in PLACEHOLDER.finditer(text):
        slot, field = m.groups()
        if slot is None:
            continue
        if slot not in slots:
            raise ValueError(f"{where}: unknown slot {{{slot}}}; declared slots: {sorted(slots)}")
        if not slots[slot]:
            raise ValueError(f"{where}: slot {slot!r} has no values")
        lacking = [v for v in slots[slot] if field is not None and (not isinstance(v, dict) or field not in v)]
        if lacking:
            raise ValueError(f"{where}: {{{slot}.{field}}} but value {lacking[0]!r} of slot {slot!r} has no "
                             f"key {field!r}")
        if field is None and any(isinstance(v, dict) for v in slots[slot]):
            raise ValueError(f"{where}: slot {slot!r} holds mappings; name a key, e.g. {{{slot}.<key>}}")


def _error_text(err: ValidationError, data) -> str:
    """The first error as ``key: message``; a tool's index is followed by its name where it has one."""
    first = err.errors()[0]
    parts = []
    for i, part in enumerate(first["loc"]):
        parts.append(str(part))
        if i == 1 and first["loc"][0] == "tools" and isinstance(part, int):
            name = _name_at(data, part)
            parts[-1] += f" ({name})" if name else ""
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    return f"{'.'.join(parts)}: {message}{more}" if parts else message + more


def _name_at(data, index: int) -> str | None:
    tools = data.get("tools") if isinstance(data, dict) else None
    if isinstance(tools, list) and index < len(tools) and isinstance(tools[index], dict):
        name = tools[index].get("name")
        return name if isinstance(name, str) else None
    return None


def load_tools(path: str | Path | None = None) -> ToolsFile:
    """The validated tools file at ``path`` (default: the bundled tools.yaml)."""
    path = Path(path) if path else DEFAULT_TOOLS_FILE
    if not path.is_file():
        raise ToolsFileError(f"{path}: no such tools file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ToolsFileError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ToolsFileError(f"{path}: expected a mapping with a 'tools:' list at the top level")
    try:
        return ToolsFile.model_validate(data)
    except ValidationError as err:
        raise ToolsFileError(f"{path}: {_error_text(err, data)}") from None


@lru_cache(maxsize=8)
def _default_specs(path: str) -> tuple[str, ...]:
    return tuple(json.dumps(s, ensure_ascii=False) for s in load_tools(path).specs())


def default_specs() -> list[dict]:
    """The prompt-facing specs of the bundled tools.yaml (read once)."""
    return [json.loads(s) for s in _default_specs(str(DEFAULT_TOOLS_FILE))]


def parse_specs(value, where: str) -> list[dict]:
    """A row's own tool list (a list of specs, or its JSON text as in a CSV cell), validated."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ToolsFileError(f"{where}: 'tools' is not valid JSON ({err.msg})") from None
    if not isinstance(value, list):
        raise ToolsFileError(f"{where}: 'tools' must be a list of tool specs, got {type(value).__name__}")
    data = {"tools": [_spec_only(t) for t in value]}
    try:
        tools = ToolsFile.model_validate(data)
    except ValidationError as err:
        raise ToolsFileError(f"{where}: {_error_text(err, data)}") from None
    return tools.specs()


def _spec_only(tool):
    # a row may embed a whole tools-file entry; its synthesis templates do not matter here
    return {k: v for k, v in tool.items() if k != "synthesis"} if isinstance(tool, dict) else tool


def row_specs(row: dict) -> list[dict]:
    """The tools a row was asked about: its own ``tools`` (list or JSON text) else the default file.

    Unvalidated (the loaders validate): this runs for every prompt."""
    tools = row.get("tools")
    if tools in (None, "", []):
        return default_specs()
    return json.loads(tools) if isinstance(tools, str) else tools


@lru_cache(maxsize=64)
def schema_for_names(names: tuple[str, ...]) -> AnswerSchema:
    """The answer schema for a tool list: ``{"reasoning": ..., "tool": <name>, "parameters": {...}}``."""
    return AnswerSchema(
        labels={n: n for n in names}, thought_key=THOUGHT_KEY, label_key=LABEL_KEY,
        # a model may call the tool's field "name" or "tool_name"; a value is still only taken if it
        # is exactly one of the declared tools
        label_key_aliases=("tool_name", "name", "label", "answer"), extra_keys=(PARAMETERS_KEY,),
    )


def schema_for_row(row: dict) -> AnswerSchema:
    return schema_for_names(tuple(t["name"] for t in row_specs(row)))


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def parameter_errors(spec: dict, parameters) -> list[str]:
    """Why ``parameters`` do not satisfy the tool's schema ([] when they do)."""
    if not isinstance(parameters, dict):
        return [f"parameters must be a JSON object, got {type(parameters).__name__}"]
    validator = _validator(json.dumps(spec["parameters"], sort_keys=True))
    return [f"{'/'.join(map(str, e.absolute_path)) or 'parameters'}: {e.message}"
            for e in sorted(validator.iter_errors(parameters), key=lambda e: (list(map(str, e.absolute_path)), e.message))]
