"""Ctrl-C (SIGINT) and SIGTERM during training keep the work: the step in progress finishes, the
Trainer saves a checkpoint there and stops, and ``--resume`` continues from that step."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from transformers import TrainerCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalInterrupt(KeyboardInterrupt):
    """A signal outside the training loop (loading, the final evaluation), or a second one inside it:
    the user insists, so it stops at once. A KeyboardInterrupt, so nothing catches it by accident."""


class StopOnSignal(TrainerCallback):
    """Turns the first SIGINT/SIGTERM into the Trainer's own stop: ``control.should_save`` at the end of
    the current optimizer step (the Trainer writes ``checkpoint-<step>`` as it does on ``save_steps``) and
    ``should_training_stop``. The loop is left the way ``max_steps`` leaves it, so TRL/PEFT save their
    files as usual; no evaluation is started on the way out."""

    def __init__(self):
        self.received: str | None = None  # the first signal's name
        self.stopped_at: int | None = None  # the step whose checkpoint was asked for
        self._in_loop = False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is not None or not self._in_loop:
            self.received = self.received or name
            raise SignalInterrupt(name)
        self.received = name

    @contextmanager
    def installed(self):
        """Our handler for SIGINT and SIGTERM (the default SIGTERM would end the process without a word
        in run.json); the previous handlers come back afterwards."""
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def on_train_begin(self, args, state, control, **kwargs):
        self._in_loop = True

    def on_train_end(self, args, state, control, **kwargs):
        self._in_loop = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self._requested():
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # an eval step would delay the stop (and with "best", skip the save)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped_at is not None:  # saved already at the step; no end-of-epoch eval or second save
            control.should_evaluate = control.should_save = False
        return control

    def _requested(self) -> bool:
        """Whether any process got the signal. Under ``accelerate launch`` every process must stop at the
        same step: one that left the loop alone would leave the others waiting in a collective op."""
        import torch.distributed as dist

        flag = self.received is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch
            from accelerate import PartialState

            votes = torch.tensor([int(flag)], device=PartialState().device)
            dist.all_reduce(votes, op=dist.ReduceOp.MAX)
            flag = bool(votes.item())
        return flag
