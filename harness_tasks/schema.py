"""The answer schema of a task: JSON keys and label set, written once.

The parser, the metrics, the prompt templates, the SFT data preparers and the datagen validators
all read the schema of a task from its folder (``harness_tasks/<task>/utils.py: SCHEMA``), so a key
or a label name is never spelled twice.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

_SPACES = re.compile(r"[\s_\-]+")
_INTEGRAL = re.compile(r"\s*[+-]?\d+\.0*\s*")


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text.strip().strip("\"'`.").strip()).lower()


@dataclass(frozen=True)
class AnswerSchema:
    labels: Mapping[Hashable, str]
    """label id -> human name, in display order (e.g. {1: "entailment", 0: "no entailment"})."""
    positive: Hashable | None = None
    """the class whose precision/recall/F1 are reported (binary tasks)."""
    thought_key: str = "thought_process"
    label_key: str = "predicted_label"
    label_key_aliases: tuple[str, ...] = ("label", "prediction", "predicted_class", "final_label", "answer")
    thought_key_aliases: tuple[str, ...] = ("thought", "thoughts", "reasoning", "rationale", "explanation")
    label_synonyms: Mapping[str, Hashable] = field(default_factory=dict)
    """extra spellings accepted for a label, e.g. {"not entailed": 0}; compared case-insensitively."""
    extra_keys: tuple[str, ...] = ()
    """answer keys after the label (e.g. a tool call's "parameters"); the parser hands them to the task."""

    def __post_init__(self):
        lookup: dict[str, Hashable] = {}
        for label, name in self.labels.items():
            lookup[_norm(str(label))] = label
            lookup[_norm(name)] = label
        for spelling, label in self.label_synonyms.items():
            if label not in self.labels:
                raise ValueError(f"label synonym {spelling!r} maps to unknown label {label!r}")
            lookup[_norm(spelling)] = label
        object.__setattr__(self, "_lookup", lookup)

    @property
    def label_keys(self) -> tuple[str, ...]:
        return (self.label_key, *self.label_key_aliases)

    @property
    def thought_keys(self) -> tuple[str, ...]:
        return (self.thought_key, *self.thought_key_aliases)

    def to_label(self, value) -> Hashable | None:
        """A valid label for ``value``, or None. Exact ids and names only: never a guess.

        The one label rule of the project: the parser, eval's task loaders, datagen and the trainer
        all read labels through it. Ids (also as text, "1" or "1.0"), names and synonyms, in any case,
        with ``_``/``-``/spaces alike and surrounding spaces, quotes or a full stop ignored."""
        if isinstance(value, bool) or value is None:
            return None  # true/false is not a label of ours
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and _INTEGRAL.fullmatch(value):
            value = int(float(value))  # "1.0": a label column a spreadsheet or pandas wrote as floats
        if isinstance(value, int):
            return value if value in self.labels else self._lookup.get(str(value))
        if isinstance(value, str) and len(value) <= 64:
            return self._lookup.get(_norm(value))
        return None

    def spellings(self) -> str:
        """The labels as a reader accepts them, for messages: ``1 = entailment, 0 = no entailment``."""
        return ", ".join(f"{label} = {name}" if str(label) != name else name for label, name in self.labels.items())

    def name(self, label) -> str:
        return self.labels.get(label, "unparsed") if label is not None else "unparsed"

    def template_fields(self) -> dict:
        """What a prompt template needs to spell the answer format."""
        return {"thought_key": self.thought_key, "label_key": self.label_key, "labels": list(self.labels)}

    def label_field(self):
        """A pydantic field type for a label: ids, names and synonyms in, the label id out."""
        from typing import Annotated, Literal

        from pydantic import BeforeValidator

        def check(value):
            label = self.to_label(value)
            if label is None:
                raise ValueError(f"{value!r} is not one of {list(self.labels)}")
            return label

        return Annotated[Literal[tuple(self.labels)], BeforeValidator(check)]

    def answer_model(self):
        """The pydantic model of a valid answer: a non-empty thought and one of our labels.

        Validates teacher answers in datagen; its JSON schema is what structured-output requests send.
        """
        model = self.__dict__.get("_answer_model")
        if model is None:
            from pydantic import AliasChoices, ConfigDict, Field, create_model

            model = create_model(
                "Answer", __config__=ConfigDict(extra="ignore", str_strip_whitespace=True),
                **{self.thought_key: (str, Field(min_length=1,
                                                 validation_alias=AliasChoices(*self.thought_keys))),
                   self.label_key: (self.label_field(), Field(validation_alias=AliasChoices(*self.label_keys)))},
            )
            object.__setattr__(self, "_answer_model", model)
        return model
