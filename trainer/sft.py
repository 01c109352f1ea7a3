"""TRL's SFTTrainer, except that the run folder's model card is ours."""

from __future__ import annotations

from trl import SFTTrainer


class Trainer(SFTTrainer):
    def create_model_card(self, *args, **kwargs) -> None:
        """Writes nothing. The run folder's README.md is trainer/model_card.py's, written with run.json;
        TRL's ``_save_checkpoint`` would replace it at every checkpoint with a draft that names no base
        model for a local one, and a stopped run would leave that draft behind."""
