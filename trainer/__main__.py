"""``python -m trainer`` / ``accelerate launch -m trainer``: the same command as ``cotharness train``."""

import typer

from trainer.cli import train

if __name__ == "__main__":
    typer.run(train)
