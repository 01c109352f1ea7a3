"""A teacher's reply -> a validated answer, or an error message to re-prompt with.

Replies are read as one JSON object (code fences and text around it tolerated; json-repair for
small breakage such as a trailing comma) and validated with the stage's pydantic model, built from
the task's ``AnswerSchema``. What fails becomes an :class:`InvalidAnswer` whose message tells the
model exactly what to fix.
"""

from __future__ import annotations

import json
import re

import json_repair
from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_DECODER = json.JSONDecoder()


class InvalidAnswer(ValueError):
    pass


def json_object(text: str) -> tuple[dict, bool]:
    """(object, repaired?) from a reply; raises InvalidAnswer when it holds no JSON object."""
    text = _FENCE.sub("", (text or "").strip())
    start = text.find("{")
    if start == -1:
        raise InvalidAnswer("the reply contains no JSON object")
    try:
        obj, _ = _DECODER.raw_decode(text, start)
        repaired = False
    except json.JSONDecodeError:
        obj, repaired = json_repair.loads(text[start:]), True
    if isinstance(obj, list):  # json-repair may split glued objects: the first one is the answer
        obj = next((o for o in obj if isinstance(o, dict)), None)
    if not isinstance(obj, dict) or not obj:
        raise InvalidAnswer("the reply is not a valid JSON object")
    return obj, repaired


def validate(text: str, model: type[BaseModel]) -> tuple[BaseModel, bool]:
    """(answer, repaired?) or InvalidAnswer naming every field that is wrong."""
    obj, repaired = json_object(text)
    try:
        return model.model_validate(obj), repaired
    except ValidationError as err:
        raise InvalidAnswer(describe(err)) from None


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "answer"
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f'"{where}" is missing' if e["type"] == "missing" else f'"{where}": {message}')
    return "; ".join(parts)
