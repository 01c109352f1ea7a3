"""The three teacher stages: what each one asks, which rows it asks about, and what it keeps.

- ``thoughts``: a teacher answers each task row with its reasoning and a label;
- ``score``: a judge rates each reasoning 1-5 and may improve it;
- ``reflect``: for rows the teacher got wrong, a stronger model is told the true label and writes
  an error analysis and an improved reasoning that reaches it.

Prompts come from ``prompts/`` and the JSON keys and labels from the task's ``AnswerSchema``, so a new
task gets all three stages from its folder and template alone. Each output row is its input row
plus the stage's fields, with how it was made under ``meta.<stage>``.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, create_model

import prompts
from datagen.engine import pipeline
from datagen.engine.answers import InvalidAnswer
from datagen.engine.cli_checks import UsageError
from datagen.engine.pipeline import StageRun
from datagen.engine.runner import Tally
from datagen.engine.stage import Stage
from harness_tasks.data_files import DataFileError, check_header, load_task_rows, read_table, require_columns
from harness_tasks.tasks import TaskSpec


def _model(name: str, **fields) -> type[BaseModel]:
    return create_model(name, __config__=ConfigDict(extra="ignore", str_strip_whitespace=True), **fields)


def _schema_fields(task: TaskSpec) -> dict:
    s = task.schema
    return {"thought_key": s.thought_key, "label_key": s.label_key, "labels": dict(s.labels)}


def _answer_json(task: TaskSpec, row: dict) -> str:
    s = task.schema
    return task.answer(row[s.thought_key], row[s.label_key])


def thoughts(task: TaskSpec) -> Stage:
    s = task.schema
    example = task.example
    system = prompts.render(
        "teacher_system", **_schema_fields(task),
        example_task=task.text(example) if example else None,
        example_answer=task.answer(example["thought_process"], example["label"]) if example else None)

    def result(row, answer):
        return {s.thought_key: getattr(answer, s.thought_key), s.label_key: getattr(answer, s.label_key)}

    def derived(row):  # the gold label is not in the request: correcting it must not need a new answer
        label, gold = row.get(s.label_key), row.get("true_label")
        return {"correct": None if gold is None or label is None else label == gold}

    return Stage("thoughts", task, system, task.text, s.answer_model(), result,
                 empty={s.thought_key: None, s.label_key: None, "correct": None}, derived=derived,
                 templates=("teacher_system",))


def score(task: TaskSpec) -> Stage:
    s = task.schema
    improved = f"improved_{s.thought_key}"
    model = _model("Judgement", analysis=(str, Field(min_length=1)), score=(int, Field(ge=1, le=5)),
                   **{improved: (str | None, None), s.label_key: (s.label_field() | None, None)})

    def user(row):
        return prompts.render("judge_user", task_text=task.text(row), answer=_answer_json(task, row))

    def result(row, answer):
        return {"judge_score": answer.score, "judge_analysis": answer.analysis,
                "judge_improved_thought": getattr(answer, improved) or None,
                "judge_label": getattr(answer, s.label_key)}

    return Stage("score", task, prompts.render("judge_system", **_schema_fields(task)), user, model, result,
                 empty=dict.fromkeys(("judge_score", "judge_analysis", "judge_improved_thought", "judge_label")),
                 wanted=lambda row: _answered(row, s), templates=("judge_system", "judge_user"))


def reflect(task: TaskSpec) -> Stage:
    s = task.schema
    improved = f"improved_{s.thought_key}"
    model = _model("Reflection", error_analysis=(str, Field(min_length=1)),
                   **{improved: (str, Field(min_length=1)), s.label_key: (s.label_field(), ...)})

    def user(row):
        gold = s.to_label(row["true_label"])
        return prompts.render("reflect_user", task_text=task.text(row), answer=_answer_json(task, row),
                              label_key=s.label_key, true_label=gold, true_label_name=s.name(gold))

    def check(row, answer):
        gold = s.to_label(row["true_label"])
        if getattr(answer, s.label_key) != gold:
            raise InvalidAnswer(f'"{s.label_key}" must be the correct label, {json.dumps(gold)}, and the '
                                f'improved reasoning must reach it')

    def result(row, answer):
        return {"error_analysis": answer.error_analysis, improved: getattr(answer, improved)}

    def wanted(row):
        gold = s.to_label(row.get("true_label"))
        return _answered(row, s) and gold is not None and s.to_label(row[s.label_key]) != gold

    return Stage("reflect", task, prompts.render("reflect_system", **_schema_fields(task)), user, model, result,
                 empty={"error_analysis": None, improved: None}, wanted=wanted, check=check,
                 templates=("reflect_system", "reflect_user"))


STAGES = {"thoughts": thoughts, "score": score, "reflect": reflect}


def _answered(row: dict, schema) -> bool:
    """The teacher's answer is there (the thoughts stage did not fail on this row)."""
    return isinstance(row.get(schema.thought_key), str) and schema.to_label(row.get(schema.label_key)) is not None


def input_rows(stage: str, path: str | Path, task: TaskSpec, label_column: str = "label",
               empty_labels: str = "error") -> list[dict]:
    """The rows a stage reads, validated, with a unique string ``id``.

    ``thoughts`` reads task rows by eval's rules (``harness_tasks.data_files``: the task's fields,
    optional ``id`` and gold label, other columns kept; empty labels an error unless
    ``empty_labels="skip"``) and names the gold label ``true_label``; ``score`` and ``reflect`` read
    thoughts rows (this project's or the seed format: the fields, the reasoning, the label, ``true_label``).
    """
    if stage == "thoughts":
        rows = load_task_rows(path, task.fields, task.schema, label_column, keep_columns=True,
                              empty_labels=empty_labels)
        ids = Counter(row["id"] for row in rows)
        again = [i for i, n in ids.items() if n > 1]
        if again:
            raise DataFileError(f"{path}: id {again[0]!r} is on {ids[again[0]]} rows ({len(again)} ids repeat); "
                                "ids must be unique: the output is keyed by them")
        for row in rows:
            row["true_label"] = row.pop("label")
        return rows
    s = task.schema
    needed = (*task.fields, s.thought_key, s.label_key) + (("true_label",) if stage == "reflect" else ())
    table = read_table(path)
    check_header(table, ("id", *needed))
    rows, seen = [], {}
    for lineno, row in table.rows:
        require_columns(row, ("id", *needed), f"{path}:{lineno}",
                        f"{stage} reads the output of `cotharness datagen thoughts`")
        key = str(row["id"])
        if key in seen:
            raise DataFileError(f"{path}:{lineno}: id {row['id']!r} again (first on line {seen[key]})")
        seen[key] = lineno
        rows.append(row)
    if not rows:
        raise DataFileError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class StageResult:
    """What a teacher stage wrote: its output rows, their manifest, and the tally of this invocation.
    After a dry run (``cfg.dry_run``) neither file is written: the paths are where a run writes them."""

    out: Path
    manifest: Path
    tally: Tally


def run(cfg: StageRun) -> StageResult:
    """Run the teacher stage ``cfg.stage`` on the rows it reads from ``cfg.input`` (the shared pipeline).

    The step function of ``cotharness datagen thoughts|score|reflect``: a user's mistake raises a
    UserError; rows that failed are in ``tally.failed`` (the command exits 1 on them, a caller decides)."""

    def rows(task: TaskSpec) -> list[dict]:
        if cfg.stage == "thoughts" and cfg.label_column != "label":
            # a gold label column asked for by name must be there: read as absent, the file would quietly
            # become unlabelled and every row be sent
            columns = read_table(cfg.input).columns
            if cfg.label_column not in columns:
                close = difflib.get_close_matches(cfg.label_column, columns, n=1)
                raise UsageError(f"--label-column {cfg.label_column!r}: {cfg.input} has no such column (columns: "
                                 f"{', '.join(columns)}){f'; did you mean {close[0]!r}?' if close else ''}")
        return input_rows(cfg.stage, cfg.input, task, cfg.label_column, cfg.empty_labels)

    tally = pipeline.run(cfg, STAGES[cfg.stage], rows)
    return StageResult(out=cfg.out, manifest=pipeline.manifest_path(cfg.out), tally=tally)
