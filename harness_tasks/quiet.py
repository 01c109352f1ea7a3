"""Silence what a user cannot act on (called first thing by the ``cotharness`` command).

Each filter names the library's logger (or warning) and the start of its message, so anything else
that logger or library says, and every warning about the user's own settings, still shows. What is
silenced, and why:

- bitsandbytes' ``Failed to load CPU gemm_4bit_forward from kernels-community`` (logged when its CPU
  backend is imported, whether or not anything is 4-bit): an optional kernel downloaded from the model
  hub; bitsandbytes falls back to its own.
- lm-eval's ``<task>: Custom kwargs can be passed to `--metadata` ...``, logged for every task with a
  Python data loader, i.e. every task of this project; ``docs/eval.md`` lists the keys they read.
- lm-eval's ``fatal: not a git repository`` (``git describe`` run for the results file with git's stderr
  left on the console, outside a checkout): the same command is run with its stderr captured, so the
  results file records the same commit as before.
- transformers' ``is_gradient_checkpointing is deprecated`` FutureWarning, triggered inside peft's
  ``get_peft_model`` (not by any setting of the user's).

``COTHARNESS_DEBUG=1`` (the variable that also keeps tracebacks) turns all of this off.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import subprocess
import sys
import warnings

# (logger name, start of the message as logged, after %-formatting)
LOG_LINES: tuple[tuple[str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)
# (logger name, a part of the message)
LOG_PARTS: tuple[tuple[str, str], ...] = (
    ("lm_eval.api.task", ": Custom kwargs can be passed to `--metadata` in console"),
)
# (regex matched against the start of the warning's text, category, module the warning is attributed to)
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
)
GIT_HASH_MODULE = "lm_eval.loggers.utils"


class _Drop(logging.Filter):
    """Drops the records of one logger whose message starts with (or contains) one of ``texts``."""

    def __init__(self, starts: tuple[str, ...] = (), parts: tuple[str, ...] = ()):
        super().__init__()
        self.starts, self.parts = starts, parts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is not ours to hide
            return True
        return not (message.startswith(self.starts) or any(p in message for p in self.parts))


def _quiet_git_commit_hash():
    """lm-eval's ``get_git_commit_hash`` with git's stderr captured (same command, same fallback)."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        return subprocess.run(["git", "describe", "--always"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return get_commit_from_path(os.getcwd())


def _patch_git_hash(module) -> None:
    if hasattr(module, "get_git_commit_hash"):
        module.get_git_commit_hash = _quiet_git_commit_hash


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``hook(module)`` right after ``name`` is imported (before anyone imports names from it)."""

    def __init__(self, name: str, hook):
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run, hook = loader.exec_module, self.hook

        def exec_module(module):
            run(module)
            hook(module)

        loader.exec_module = exec_module
        return spec


def quiet() -> None:
    """Filters for library warnings and log lines that say nothing the user can act on (idempotent)."""
    if os.environ.get("COTHARNESS_DEBUG"):
        return
    starts: dict[str, list[str]] = {}
    parts: dict[str, list[str]] = {}
    for name, text in LOG_LINES:
        starts.setdefault(name, []).append(text)
    for name, text in LOG_PARTS:
        parts.setdefault(name, []).append(text)
    for name in starts.keys() | parts.keys():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(tuple(starts.get(name, ())), tuple(parts.get(name, ()))))
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    if GIT_HASH_MODULE in sys.modules:
        _patch_git_hash(sys.modules[GIT_HASH_MODULE])
        evaluator = sys.modules.get("lm_eval.evaluator")
        if evaluator is not None and hasattr(evaluator, "get_git_commit_hash"):
            evaluator.get_git_commit_hash = _quiet_git_commit_hash
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(GIT_HASH_MODULE, _patch_git_hash))
