#!/usr/bin/env bash
# Runs every experiment; writes the transcript to stdout.
# VENV: a venv with `pip install dvc==3.67.1`; WORK: a scratch dir (repos are created under it).
SRC=$(cd "$(dirname "$0")" && pwd)
for e in a b d e f g; do
  echo "=================== exp_$e.sh"
  bash "$SRC/exp_$e.sh"
done
