"""A CoT task as the rest of the project sees it: template + input fields + answer schema.

Each task folder's ``utils.py`` defines ``TASK = TaskSpec(...)``; lm-eval's ``doc_to_text``, the SFT
formatter and datagen all go through :meth:`TaskSpec.prompt` and :meth:`TaskSpec.answer`, so
what a model is trained on and evaluated on is the same text.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import prompts
from harness_tasks.schema import AnswerSchema

TASKS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TaskSpec:
    name: str
    template: str
    fields: tuple[str, ...]
    schema: AnswerSchema
    example: Mapping | None = None
    """a worked example (the fields, ``thought_process`` and ``label``) that teacher prompts show"""

    def text(self, row: dict) -> str:
        """The task text for ``row`` without the instruction wrapper (what an API teacher is sent)."""
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise KeyError(f"task {self.name}: row lacks field(s) {missing}")
        return prompts.render(self.template, **{f: row[f] for f in self.fields}, **self.schema.template_fields())

    def prompt(self, row: dict) -> str:
        """The full model input (instruction-wrapped), identical for training and evaluation."""
        return prompts.wrap_instruction(self.text(row))

    def answer(self, thought: str, label) -> str:
        """The target answer text: reasoning first, then the label (no EOS; the trainer adds it)."""
        if self.schema.to_label(label) is None:
            raise ValueError(f"task {self.name}: {label!r} is not a label of {list(self.schema.labels)}")
        return json.dumps({self.schema.thought_key: thought, self.schema.label_key: self.schema.to_label(label)},
                          ensure_ascii=False)


def get_task(name: str) -> TaskSpec:
    """The TaskSpec of ``harness_tasks/<name>/utils.py``."""
    if not (TASKS_DIR / name / "utils.py").is_file():
        known = sorted(p.parent.name for p in TASKS_DIR.glob("*/utils.py"))
        raise KeyError(f"unknown task {name!r}; known: {known}")
    return importlib.import_module(f"harness_tasks.{name}.utils").TASK


def schema_for(lm_eval_task: str) -> AnswerSchema | None:
    """The answer schema behind an lm-eval task name of this project (any YAML in a task folder)."""
    for yaml_file in TASKS_DIR.glob(f"*/{lm_eval_task}.yaml"):
        if (yaml_file.parent / "utils.py").is_file():
            return get_task(yaml_file.parent.name).schema
    return None
