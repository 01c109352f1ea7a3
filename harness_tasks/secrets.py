"""The API key: read from the environment or a ``.env`` file, and kept out of every output.

Shared by datagen (teacher and judge calls) and the judge-scored evaluation task. Every message
either prints or records passes through :func:`redact`, which replaces any key
it has handed out (and any ``Bearer`` credential) with ``[redacted]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness_tasks.errors import UserError

ENV_VAR = "MISTRAL_API_KEY"
_KNOWN: set[str] = set()
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])[^\s\"',;)]+")  # any credential, also unknown keys


class MissingKeyError(UserError):
    pass


def api_key(env_file: str | Path = ".env", required: bool = True, env_var: str = ENV_VAR) -> str | None:
    """``env_var`` (``MISTRAL_API_KEY``) from the environment, else from ``env_file`` (not loaded into
    the environment)."""
    key = os.environ.get(env_var)
    if not key and Path(env_file).is_file():
        from dotenv import dotenv_values

        key = dotenv_values(env_file).get(env_var)
    key = (key or "").strip() or None
    if key is None and required:
        raise MissingKeyError(f"{env_var} is not set (environment or {env_file}); create a key at "
                              "https://console.mistral.ai, or pass --server-url for a server that needs none")
    if key:
        _KNOWN.add(key)
    return key


def redact(text: str) -> str:
    for key in _KNOWN:
        text = text.replace(key, "[redacted]")
    return _BEARER.sub(r"\1[redacted]", text)
