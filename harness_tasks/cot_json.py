"""Extract the answer from a model's chain-of-thought JSON output.

``parse(text, schema)`` never raises and never guesses: a label comes only from an explicit label field of
an answer the model wrote. Anything else is ``label=None``, which the metrics count as wrong.
Order of attempts (the first answer carrying a valid label wins within each):
  1. "json":     strict JSON objects found anywhere in the text (code fences, prose, glued repeats);
  2. "repaired": json-repair on the first object-like spans that write a valid label after a label
                 key (single quotes, trailing commas, truncation after the label, unescaped quotes),
                 the repaired label accepted only where the span writes it;
                 also JSON written with typographic quotes (“thought_process”: …), read again with
                 plain ones;
  3. "regex":    a key-anchored ``"predicted_label": 1`` pattern (output too broken to repair).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterator
from dataclasses import asdict, dataclass

import json_repair
from lm_eval.api.filter import Filter

from harness_tasks.schema import AnswerSchema

# Bounds that keep parse() fast on long garbage: answers are at most a few thousand characters.
MAX_CHARS = 32_000
MAX_STRICT_STARTS = 200
MAX_REPAIR_STARTS = 4
REPAIR_WINDOW = 8_000

_DECODER = json.JSONDecoder()
_OBJECT_START = re.compile(r"\{\s*[\"'\w]")  # "{" that could open a keyed object


@dataclass(frozen=True)
class Parsed:
    label: Hashable | None
    thought: str | None
    method: str  # "json" | "repaired" | "regex" | "none"
    extra: dict | None = None
    """the schema's extra keys (e.g. "parameters") as the answer object holding the label wrote them;
    None when no such object was decoded (regex or nothing)"""

    def as_dict(self) -> dict:
        return asdict(self)


# Typographic quotes some models write as JSON delimiters: {“thought_process”: “…”, …}
_TYPOGRAPHIC = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "‚": "'"})


def straighten_quotes(text: str) -> str:
    """``text`` with typographic quotes made plain, so that JSON written with them can be read."""
    return text.translate(_TYPOGRAPHIC)


def parse(text, schema: AnswerSchema) -> Parsed:
    """Parse one model output in the answer format of ``schema`` (the task's). Never raises; ``label``
    is a valid label or None."""
    try:
        parsed = _parse(text, schema)
        # Only when the text as written has no answer: typographic quotes inside a valid JSON string
        # (a quoted word in the reasoning) are the model's text and stay as they are.
        if parsed.label is None and isinstance(text, str) and straighten_quotes(text) != text:
            again = _parse(straighten_quotes(text), schema)
            if again.label is not None:
                return Parsed(again.label, again.thought, "repaired", again.extra)
        return parsed
    except Exception:  # a parser bug must cost one answer, not the whole evaluation
        return Parsed(None, None, "none")


def _parse(text, schema: AnswerSchema) -> Parsed:
    if not isinstance(text, str) or "{" not in text and ":" not in text:
        return Parsed(None, None, "none")
    text = text[:MAX_CHARS]
    fallback_thought = None
    for obj in _strict_objects(text):
        label, thought, holder = _answer(obj, schema)
        if label is not None:
            return Parsed(label, thought, "json", _extra(holder, schema))
        fallback_thought = fallback_thought or thought
    for start in _object_starts(text, MAX_REPAIR_STARTS):
        window = text[start : start + REPAIR_WINDOW]
        written = _raw_labels(window, schema)
        if not written:  # a repaired label must be written in the window: none is, so skip the slow repair
            continue
        repaired = json_repair.loads(window)
        for obj in repaired if isinstance(repaired, list) else [repaired]:
            label, thought, holder = _answer(obj, schema)
            if label is not None and label in written:
                return Parsed(label, thought, "repaired", _extra(holder, schema))
            fallback_thought = fallback_thought or thought
    raw = _raw_labels(text, schema)
    return Parsed(raw[0] if raw else None, fallback_thought or _raw_thought(text, schema), "regex" if raw else "none")


def _object_starts(text: str, limit: int) -> Iterator[int]:
    for n, match in enumerate(_OBJECT_START.finditer(text)):
        if n >= limit:
            return
        yield match.start()


def _strict_objects(text: str) -> Iterator:
    """Every JSON object that decodes strictly, in order; nested dicts follow their parent."""
    pos, tries = text.find("{"), 0
    while pos != -1 and tries < MAX_STRICT_STARTS:
        tries += 1
        try:
            obj, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            # Our tasks stop generation at "}\n" and lm-eval cuts the stop sequence off, so an answer
            # that is complete but for its final brace still counts as strict JSON.
            tail = text.rstrip()
            if err.pos >= len(tail):
                try:
                    yield _DECODER.raw_decode(tail + "}", pos)[0]
                    return
                except ValueError:
                    pass
            pos = text.find("{", pos + 1)
            continue
        yield obj
        pos = text.find("{", end)


def _answer(obj, schema: AnswerSchema) -> tuple[Hashable | None, str | None, dict | None]:
    """(label, thought, the object holding the label) from a decoded object; looks one level into
    nested dicts."""
    if not isinstance(obj, dict):
        return None, None, None
    keyed = {str(k).strip().lower(): v for k, v in obj.items()}
    thought = next((keyed[k] for k in schema.thought_keys if isinstance(keyed.get(k), str)), None)
    for key in schema.label_keys:
        if key in keyed:
            label = schema.to_label(keyed[key])
            if label is not None:
                return label, thought, keyed
    for value in obj.values():
        if isinstance(value, dict):
            label, inner_thought, holder = _answer(value, schema)
            if label is not None:
                return label, inner_thought or thought, holder
    return None, thought, None


def _extra(holder: dict | None, schema: AnswerSchema) -> dict | None:
    if not schema.extra_keys or holder is None:
        return None
    return {k: holder.get(k.lower()) for k in schema.extra_keys}


def _key_pattern(keys) -> str:
    return "|".join(re.escape(k) for k in keys)


def _raw_labels(text: str, schema: AnswerSchema) -> list:
    """Valid labels written literally after a label key: `"predicted_label": 1`, `label: 'yes'`.

    The raw value must be a whole token, so an echoed template (`1 or 0`) or `1 (entailment)`
    is not read as a label, which json-repair alone would do.
    """
    pattern = re.compile(
        r"""(?<![\w])["']?(?:""" + _key_pattern(schema.label_keys) + r""")["']?\s*[:=]\s*"""
        r"""("[^"\n]{0,64}"|'[^'\n]{0,64}'|[^,}\]\n]{0,64})""",
        re.IGNORECASE,
    )
    found = []
    for match in pattern.finditer(text):
        label = schema.to_label(match.group(1).strip())
        if label is not None:
            found.append(label)
    return found


def _raw_thought(text: str, schema: AnswerSchema) -> str | None:
    match = re.search(
        r"""["']?(?:""" + _key_pattern(schema.thought_keys) + r""")["']?\s*:\s*"((?:[^"\\]|\\.)*)""",
        text,
        re.IGNORECASE,
    )
    if not match:
        return None
    try:
        return json.loads(f'"{match.group(1)}"')
    except ValueError:
        return match.group(1)


class CoTJSONFilter(Filter):
    """lm-eval filter: each response -> JSON text ``{"label": ..., "method": ...}`` (label null = unparsed).

    JSON text rather than a dict because lm-eval logs filtered responses with ``str()``; this way
    ``samples_*.jsonl`` stays machine-readable (see :func:`filtered_answer`).
    Subclass per task with its ``schema``; reference the subclass from the task YAML as
    ``- function: !function harness_tasks.<task>.utils.<Filter>``.
    """

    schema: AnswerSchema | None = None

    def schema_for_doc(self, doc: dict) -> AnswerSchema | None:
        """The schema a document is answered in; override when it varies by document (e.g. each
        tool_select document lists the tools it may be answered with)."""
        return self.schema

    def apply(self, resps, docs):
        return [[_answer_json(parse(r, self.schema_for_doc(doc))) for r in group] for group, doc in zip(resps, docs, strict=True)]


def _answer_json(parsed: Parsed) -> str:
    out = {"label": parsed.label, "method": parsed.method}
    if parsed.extra is not None:
        out["extra"] = parsed.extra
    return json.dumps(out, ensure_ascii=False)


def filtered_answer(filtered: str) -> dict:
    """Inverse of the filter's output: ``{"label": ..., "method": ...}`` plus ``"extra"`` (the schema's
    extra keys) when the task has any and the answer was a decoded object."""
    return json.loads(filtered)
