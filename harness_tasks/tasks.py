"""A CoT task as the rest of the project sees it: template + input fields + answer schema.

Each task folder's ``utils.py`` defines ``TASK = TaskSpec(...)``; lm-eval's ``doc_to_text``, the SFT
formatter and datagen all go through :meth:`TaskSpec.prompt` and :meth:`TaskSpec.answer`, so
what a model is trained on and evaluated on is the same text.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
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
    schema: AnswerSchema | None
    """JSON keys and labels of the answer; None for a free-text task (see ``target``)"""
    example: Mapping | None = None
    """a worked example (the fields, ``thought_process`` and ``label``) that teacher prompts show"""
    context: Callable[[dict], dict] | None = None
    """more template fields for a row, derived from it (e.g. the tool list a tool_select row is asked about)"""
    row_schema: Callable[[dict], AnswerSchema] | None = None
    """the schema one row is answered in, where the labels vary by row (a tool_select row may list its
    own tools); ``schema`` otherwise, and always for display"""

    target: Callable[[dict], str] | None = None
    """a free-text task's training target for a row (e.g. the response to an instruction); tasks
    with a label schema train on :meth:`answer` instead"""

    def schema_of(self, row: dict) -> AnswerSchema:
        return self.row_schema(row) if self.row_schema else self.schema

    def text(self, row: dict) -> str:
        """The task text for ``row`` without the instruction wrapper (what an API teacher is sent)."""
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise KeyError(f"task {self.name}: row lacks field(s) {missing}")
        extra = self.context(row) if self.context else {}
        schema_fields = self.schema.template_fields() if self.schema else {}
        return prompts.render(self.template, **{f: row[f] for f in self.fields}, **extra, **schema_fields)

    def prompt(self, row: dict) -> str:
        """The full model input (instruction-wrapped), identical for training and evaluation."""
        return prompts.wrap_instruction(self.text(row))

    def answer(self, thought: str, label, schema: AnswerSchema | None = None, **extra) -> str:
        """The target answer text: reasoning first, then the label, then the schema's extra keys given
        (no EOS; the trainer adds it). ``schema``: the row's (:meth:`schema_of`), default ``self.schema``."""
        schema = schema or self.schema
        if schema.to_label(label) is None:
            raise ValueError(f"task {self.name}: {label!r} is not a label of {list(schema.labels)}")
        answer = {schema.thought_key: thought, schema.label_key: schema.to_label(label)}
        answer.update({k: extra[k] for k in schema.extra_keys if k in extra})
        return json.dumps(answer, ensure_ascii=False)


def _folders() -> list[str]:
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/utils.py"))


def task_names() -> list[str]:
    """Every task name: each folder's ``TASK`` and the ``VARIANTS`` its utils.py defines."""
    names = []
    for folder in _folders():
        module = importlib.import_module(f"harness_tasks.{folder}.utils")
        names += [folder, *getattr(module, "VARIANTS", {})]
    return names


def get_task(name: str) -> TaskSpec:
    """The TaskSpec of ``harness_tasks/<name>/utils.py`` (``TASK``), or a variant a folder defines
    (``VARIANTS = {"puzzte_3way": TaskSpec(...)}``: another label set over the same data)."""
    if (TASKS_DIR / name / "utils.py").is_file():
        return importlib.import_module(f"harness_tasks.{name}.utils").TASK
    for folder in _folders():
        variants = getattr(importlib.import_module(f"harness_tasks.{folder}.utils"), "VARIANTS", {})
        if name in variants:
            return variants[name]
    raise KeyError(f"unknown task {name!r}; known: {task_names()}")


def schema_for(lm_eval_task: str) -> AnswerSchema | None:
    """The answer schema behind an lm-eval task name of this project: a task or variant of that name,
    else the folder whose YAML defines it (e.g. ``nli_direct`` scores with ``nli_cot``'s labels)."""
    try:
        return get_task(lm_eval_task).schema
    except KeyError:
        pass
    for yaml_file in TASKS_DIR.glob(f"*/{lm_eval_task}.yaml"):
        if (yaml_file.parent / "utils.py").is_file():
            return get_task(yaml_file.parent.name).schema
    return None
