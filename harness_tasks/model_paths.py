"""Whether a model name is a local path or a hub id: one rule for eval, the trainer and datagen's
local models, so that a typo in a path is said at once instead of being looked up on the hub."""

from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_local(value: str) -> bool:
    """A path, not a hub id: starts with / . ~, is not ``name`` or ``owner/name``, or its first part is a
    folder here (``runs/x`` with ``runs/`` present)."""
    first = Path(value).parts[0] if Path(value).parts else value
    return value.startswith(("/", ".", "~")) or not HUB_ID.fullmatch(value) or Path(first).is_dir()
