"""Training settings chosen for the machine at launch: Liger's kernels and gradient checkpointing.

``training.use_liger_kernel: auto`` turns on Liger's Triton kernels (RMSNorm, SwiGLU, RoPE) when a CUDA
GPU and the ``liger-kernel`` package (``pip install 'cotharness[gpu]'``) are there. They are faster and
keep fewer activations alive. ``training.activation_checkpointing: auto`` turns checkpointing off when the
memory estimate without it, for the longest row that will be trained on, fits in 90% of the GPU:
recomputing every layer's forward costs about a quarter of each step. On CPU, ``auto`` keeps the seed
recipe's choices (no kernels, checkpointing on). Explicit ``true``/``false`` are obeyed; ``true`` where
it cannot work is a configuration error, not a crash inside the trainer.
"""

from __future__ import annotations

import importlib.util

from trainer.config import ConfigError, TrainConfig

AUTO = "auto"
FIT = 0.9  # of the GPU's memory: room for the allocator's fragmentation and other processes


def cuda_memory_gib() -> float | None:
    """Total memory of this process's GPU (its local rank under accelerate), or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    from accelerate import PartialState

    return torch.cuda.get_device_properties(PartialState().local_process_index).total_memory / 2**30


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def check_machine(cfg: TrainConfig) -> None:
    """Refuse settings this machine cannot run (ConfigError), before any data or model is loaded."""
    gpu = cuda_memory_gib() is not None
    mixed = [k for k in ("bf16", "fp16") if cfg.training.get(k)]
    if not gpu and mixed:
        raise ConfigError(f"training.{mixed[0]}=true (mixed precision) needs a CUDA GPU; on a CPU set "
                          f"training.{mixed[0]}=false, or start from configs/train/demo.yaml")
    if cfg.training.get("use_liger_kernel") is True and not (gpu and liger_installed()):
        raise ConfigError("training.use_liger_kernel=true needs a CUDA GPU and the liger-kernel package "
                          "(pip install 'cotharness[gpu]'); set it to auto or false")


def resolve(cfg: TrainConfig, longest: int | None = None, model_config=None) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with ``auto`` replaced by true/false for this machine, and one line saying why for each.

    ``longest``: tokens of the longest row to train on (default ``data.max_length``).
    """
    check_machine(cfg)
    gpu_gib = cuda_memory_gib()
    training = dict(cfg.training)
    notes = []
    liger = training.get("use_liger_kernel", False)
    installed = liger_installed()
    if liger == AUTO:
        liger = gpu_gib is not None and installed
        if gpu_gib is None:
            notes.append("use_liger_kernel=auto -> off (no CUDA GPU)")
        elif not installed:
            notes.append("use_liger_kernel=auto -> off: liger-kernel is not installed "
                         "(pip install 'cotharness[gpu]' for faster steps and less memory)")
        else:
            notes.append("use_liger_kernel=auto -> on (CUDA GPU, liger-kernel installed)")
    training["use_liger_kernel"] = bool(liger)

    if training.get("activation_checkpointing", True) == AUTO:
        if gpu_gib is None:
            training["activation_checkpointing"] = True
            notes.append("activation_checkpointing=auto -> on (no CUDA GPU to size)")
        else:
            from trainer.memory import estimate

            trial = cfg.model_copy(update={"training": {**training, "activation_checkpointing": False}})
            need = estimate(trial, model_config, longest=longest).total
            fits = need <= FIT * gpu_gib
            training["activation_checkpointing"] = not fits
            notes.append(f"activation_checkpointing=auto -> {'off' if fits else 'on'}: {need:.1f} GiB estimated "
                         f"without it, {'within' if fits else 'over'} {FIT:.0%} of this GPU's {gpu_gib:.0f} GiB")
    return cfg.model_copy(update={"training": training}), notes
