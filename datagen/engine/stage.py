"""What a stage is: the request it makes of each row, the rows it wants, what it keeps.

The runner and the pipeline run any ``Stage``; each workload defines its own (the teacher's three in
``datagen/teacher/stages.py``, backtranslation's ``augment`` and ``curate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from harness_tasks.tasks import TaskSpec


@dataclass(frozen=True)
class Stage:
    name: str
    task: TaskSpec
    system: str | None
    """the system prompt (the same for every row); None: the user message alone"""
    user: Callable[[dict], str]
    answer_model: type[BaseModel] | None
    """the JSON answer's schema; None for a stage whose replies are free text (see ``read``)"""
    result: Callable[[dict, BaseModel], dict]
    """output fields from (input row, validated answer)"""
    empty: dict
    """the same fields for a row that failed"""
    wanted: Callable[[dict], bool] = lambda row: True
    """the rows the stage asks about; a finished row it no longer wants is dropped by a resumed run"""
    derived: Callable[[dict], dict] = lambda row: {}
    """fields worked out from an output row (its input and its answer), never asked of the model: e.g.
    thoughts' ``correct``. Recomputed whenever a row is written, also when a resumed run refreshes a
    finished row from a changed input (a corrected gold label) without asking again."""
    check: Callable[[dict, BaseModel], None] = lambda row, answer: None
    """a further check of a valid answer against its row; raises InvalidAnswer"""
    read: Callable[[str], object] | None = None
    """free-text replies (a judge's reasoning ending in "Score: N", an instruction): the answer read from a
    reply, or InvalidAnswer; used instead of JSON validation against ``answer_model``"""
    reprompt: str | None = None
    """the message after an invalid answer (``{error}`` is filled in); default: the runner's JSON one"""
    resample: bool = False
    """re-ask an invalid answer with the same prompt and the next ``random_seed`` instead of continuing the
    conversation: for a model trained on one single-turn prompt (the backward model), which cannot follow
    a correction. Live backends only (the Batch API re-asks a conversation)."""
    templates: tuple[str, ...] = ()
    """prompt templates the stage renders besides its task's (hashed into the manifest)"""
    report: Callable[[list[dict]], dict] | None = None
    """counts over the output rows (e.g. a score distribution): printed in the summary, kept in the manifest"""

    def messages(self, row: dict) -> tuple[dict, ...]:
        user = {"role": "user", "content": self.user(row)}
        return (user,) if self.system is None else ({"role": "system", "content": self.system}, user)
