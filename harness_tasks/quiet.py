"""Silence what a user cannot act on (called first thing by the ``cotharness`` command)."""

from __future__ import annotations


def quiet() -> None:
    """Filters for library warnings and log lines that say nothing the user can act on."""
