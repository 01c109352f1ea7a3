"""The two kinds of error a user can act on, below every package that raises them.

The ``cotharness`` command (``cotharness/cli.py``) turns either into one ``error:`` line on stderr and
an exit status, with no traceback (``--debug`` or ``COTHARNESS_DEBUG=1`` shows it); any other exception
is a bug and keeps its traceback. Raise them with a message that names the thing (file, line, key,
option, value) and says what to do.
"""

from __future__ import annotations

import os
import traceback

DEBUG_ENV = "COTHARNESS_DEBUG"


class UserError(Exception):
    """A user's mistake: a path, name, key or value, an existing output, a missing credential, a setting
    this machine cannot run. Exit status 2 (usage)."""

    exit_code = 2


class WorkFailed(UserError):
    """The work ran and failed for a reason outside the code (a server that keeps refusing, rows that
    failed): exit status 1, after writing everything that was done."""

    exit_code = 1


def debugging() -> bool:
    """``--debug`` on the command line (the ``cotharness`` command sets the variable) or ``COTHARNESS_DEBUG=1``."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def traceback_if_debugging() -> None:
    """Called where a command turns an exception into its one line: with ``--debug``, the traceback first."""
    if debugging():
        traceback.print_exc()
