"""Prompt templates: the one place prompt text lives.

Every consumer (lm-eval's ``doc_to_text``, the SFT data formatter, the datagen teacher calls)
renders prompts through :func:`render` / :func:`instruction_prompt`, so train and eval prompts
cannot drift apart.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent

# Mistral's instruction format. The tokenizer adds BOS itself, so no literal "<s>" here
# (a seed project trained on a doubled BOS).
INST_OPEN, INST_CLOSE = "[INST]", "[/INST]"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,  # a missing field is an error, never an empty string
        keep_trailing_newline=False,
        autoescape=False,
    )


def template_path(name: str) -> Path:
    path = TEMPLATE_DIR / f"{name}.j2"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TEMPLATE_DIR.glob("*.j2")))
        raise FileNotFoundError(f"no prompt template {path.name!r} in {TEMPLATE_DIR} (known: {known})")
    return path


def render(name: str, **fields) -> str:
    """Render ``prompts/<name>.j2`` with ``fields``; surrounding whitespace is stripped."""
    template_path(name)
    try:
        return _env().get_template(f"{name}.j2").render(**fields).strip()
    except jinja2.UndefinedError as err:
        raise KeyError(f"prompt template {name}.j2: {err.message}; fields given: {sorted(fields)}") from None


def wrap_instruction(text: str) -> str:
    """The single place where the instruction wrapper is applied."""
    return f"{INST_OPEN} {text} {INST_CLOSE}"


def instruction_prompt(name: str, **fields) -> str:
    """Full model input for template ``name``: the rendered text inside the instruction wrapper."""
    return wrap_instruction(render(name, **fields))


def template_hash(name: str) -> str:
    """sha256 of the template source, recorded in run and result manifests."""
    return hashlib.sha256(template_path(name).read_bytes()).hexdigest()
