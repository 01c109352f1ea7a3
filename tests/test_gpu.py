"""GPU-only checks (skipped without CUDA; run them on a GPU machine with `pytest tests/test_gpu.py`).

Liger's kernels replace RMSNorm, SwiGLU and RoPE inside the model: the loss they train on must be
the loss without them, and ``auto`` must pick the fast settings when the GPU has room.
"""

import importlib.util

import pytest
import torch

from datagen.synthetic.nli import generate
from trainer.config import load_config
from trainer.train import prepare

from conftest import REPO, write_jsonl

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _losses(tiny_model, data, out, **training):
    cfg = load_config(REPO / "configs/train/default.yaml", {
        "output_dir": str(out), "model": {"base_model": str(tiny_model)},
        "data": {"train_file": str(data), "eval_file": None},
        "training": {"max_steps": 4, "logging_steps": 1, "save_strategy": "no", "report_to": [],
                     "train_sampling_strategy": "sequential", **training}})
    run = prepare(cfg)
    run.trainer.train()
    return run.settings, [h["loss"] for h in run.trainer.state.log_history if "loss" in h]


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
def test_liger_kernels_train_on_the_same_loss(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", generate("train", 64))
    plain, plain_losses = _losses(tiny_model, data, tmp_path / "plain", use_liger_kernel=False,
                                  gradient_checkpointing=False)
    fused, fused_losses = _losses(tiny_model, data, tmp_path / "liger", use_liger_kernel=True,
                                  gradient_checkpointing=False)
    assert fused["use_liger_kernel"] and not plain["use_liger_kernel"]
    assert len(plain_losses) == len(fused_losses) == 4
    assert fused_losses == pytest.approx(plain_losses, rel=5e-3)  # measured: equal to 3 decimals (H200)


def test_auto_turns_checkpointing_off_when_it_fits(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", generate("train", 32))
    settings, losses = _losses(tiny_model, data, tmp_path / "auto")
    assert settings["activation_checkpointing"] is False  # a tiny model fits any GPU without it
    assert settings["use_liger_kernel"] is (importlib.util.find_spec("liger_kernel") is not None)
    assert len(losses) == 4
