"""Self-augmentation, the second step of instruction backtranslation (Humpback): a backward model,
trained on (instruction, response) seed pairs the other way round (``configs/train/backward.yaml``),
writes the instruction each unlabelled response answers.

The request is the ``backward`` task's prompt (``prompts/backward.j2``) and nothing else: as the
user message for an API or OpenAI-compatible server, and as raw text through
``prompts.wrap_instruction`` for a local model (``HFBackend(use_chat_template=False)``), so a model
fine-tuned with ``cotharness train`` sees exactly what it was trained on. Replies are free text.
An empty instruction, or one that only echoes the response, is asked again with the next seed
(``Stage.resample``: a backward model cannot follow a correction) and after ``max_reprompts``
re-asks the row is recorded as failed, never kept. Everything else (resuming, retries, rate limits,
costs, the manifest) is the shared pipeline's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from datagen.engine.answers import InvalidAnswer
from datagen.engine.stage import Stage
from harness_tasks.data_files import DataFileError, claim_id, read_rows, row_id, text_cell
from harness_tasks.tasks import get_task

STAGE = "augment"
TASK = "backward"
# A reply that labels itself ("Instruction: ...") although the prompt asks for the instruction only:
# API models prompted with the template often do; the label is not part of the instruction.
_LABEL = re.compile(r"^\s*(?:the\s+)?(?:user'?s?\s+)?instruction\s*(?:was|is)?\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"\w+")
ECHO_SHARE = 0.5  # one text inside the other and at least this share of its length: an echo


@dataclass
class Loaded:
    """Validated input rows and what was left out of them."""
    rows: list[dict]
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    """(line, line of the first occurrence) of each repeated response, left out"""


def read_responses(path: str | Path, column: str = "response") -> Loaded:
    """Unlabelled responses (CSV/JSONL, one per row in ``column``, optional ``id``) -> ``{id, response}``.

    Ids are the file's, else the row's position (0-based), as every datagen stage keys its output. A
    response repeated verbatim (whitespace aside) would only give the same pair twice: later copies are
    left out and reported.
    """
    path = Path(path)
    rows, seen_ids, seen_texts, duplicates = [], {}, {}, []
    for index, (lineno, row) in enumerate(read_rows(path)):
        where = f"{path}:{lineno}"
        text = text_cell(row, column, where, "name the response column with --response-column")
        rid = row_id(row.get("id"), index)
        claim_id(seen_ids, rid, where, lineno)
        key = " ".join(text.split())
        if key in seen_texts:
            duplicates.append((lineno, seen_texts[key]))
            continue
        seen_texts[key] = lineno
        rows.append({"id": rid, "response": text.strip()})  # as inverse wrote the training prompts
    if not rows:
        raise DataFileError(f"{path}: no rows")
    return Loaded(rows, duplicates)


def read_instruction(text: str) -> str:
    """The instruction in a backward model's reply: the reply itself, without a leading label."""
    instruction = _LABEL.sub("", (text or "").strip(), count=1).strip()
    if not _WORD.search(instruction):
        raise InvalidAnswer("the instruction is empty")
    return instruction


def _words(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def echoes(instruction: str, response: str) -> bool:
    """The instruction is (mostly) the response itself, or the other way round: a backward model that
    copies its input instead of asking for it. A real instruction may quote a few of the response's
    words, so only a copy of at least half of the longer text counts."""
    a, b = _words(instruction), _words(response)
    short, long = sorted((a, b), key=len)
    return bool(short) and f" {short} " in f" {long} " and len(short) >= ECHO_SHARE * len(long)


def check_instruction(row: dict, instruction: str) -> None:
    if echoes(instruction, row["response"]):
        raise InvalidAnswer("the instruction only echoes the response instead of asking for it")


def augment_stage() -> Stage:
    task = get_task(TASK)
    return Stage(STAGE, task, system=None, user=task.text, answer_model=None,
                 result=lambda row, instruction: {"instruction": instruction}, empty={"instruction": None},
                 check=check_instruction, read=read_instruction, resample=True)
