"""``python -m trainer`` / ``accelerate launch -m trainer``: the same command as ``cotharness train``."""

import typer

from harness_tasks.quiet import quiet
from trainer.cli import train

if __name__ == "__main__":
    quiet()  # as the cotharness command does: library noise a user cannot act on is filtered in every process
    typer.run(train)
