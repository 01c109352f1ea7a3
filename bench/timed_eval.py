"""``cotharness eval`` exactly as a user runs it, with a clock at each phase boundary.

``bench/eval_throughput.py --mode command`` starts this file as its own process, with the arguments a user
would give ``cotharness eval``. It runs the real command (``cotharness.cli``, ``cotharness.run_eval``,
lm-eval, ``hf-cot``) unchanged; thin wrappers only note the wall-clock time when the model's constructor
starts and ends (load, quantize, adapter, merge), when generation starts and ends (and each batch's
rows, padded prompt length and seconds), and the time
``run_eval.main`` returns (after scoring and writing results, samples, predictions and the per-class
report). The marks go to the JSON file named by ``COTHARNESS_PHASES`` when the process exits; the
caller adds the process's start and end, which it measures itself.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARKS: dict = {"imported": time.time(), "batches": []}


def _clocked(owner, attr: str, phase: str) -> None:
    """Note ``<phase>_start`` at the first call of ``owner.attr`` and ``<phase>_end`` after the last."""
    inner = getattr(owner, attr)

    @functools.wraps(inner)
    def timed(*args, **kwargs):
        MARKS.setdefault(f"{phase}_start", time.time())
        try:
            return inner(*args, **kwargs)
        finally:
            MARKS[f"{phase}_end"] = time.time()

    setattr(owner, attr, timed)


def _batches(owner) -> None:
    """Each generation batch (one ``_model_generate`` call): its rows, padded prompt tokens and seconds."""
    inner = owner._model_generate

    @functools.wraps(inner)
    def timed(self, context, *args, **kwargs):
        import torch

        started = time.time()
        try:
            return inner(self, context, *args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            MARKS["batches"].append({"rows": int(context.shape[0]), "prompt_tokens": int(context.shape[1]),
                                     "seconds": round(time.time() - started, 2)})

    owner._model_generate = timed


def _write() -> None:
    path = os.environ.get("COTHARNESS_PHASES")
    if path:
        Path(path).write_text(json.dumps(MARKS))


def main() -> None:
    from cotharness import cli, run_eval
    from harness_tasks.hf_model import QuantizedHFLM

    MARKS["modules_imported"] = time.time()  # torch, transformers, lm-eval, peft: what every start pays

    _clocked(QuantizedHFLM, "__init__", "load")
    _clocked(QuantizedHFLM, "generate_until", "generation")
    _batches(QuantizedHFLM)
    _clocked(run_eval, "main", "command")  # cotharness.cli imports run_eval.main when the command runs
    atexit.register(_write)
    cli.main(["eval", *sys.argv[1:]])  # the console script's own entry: its exit included


if __name__ == "__main__":
    main()
