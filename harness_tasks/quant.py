"""One BitsAndBytesConfig for training and evaluation, so a 4-bit-trained adapter is evaluated on
the same NF4 base it was trained on (one seed project trained on 4-bit and evaluated on bf16)."""

from __future__ import annotations

import torch

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


def to_dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def bnb_config(load_in_4bit: bool = True, load_in_8bit: bool = False, bnb_4bit_quant_type: str = "nf4",
               bnb_4bit_use_double_quant: bool = True, bnb_4bit_compute_dtype="bfloat16", **extra):
    """QLoRA's quantisation (NF4, double quantisation, bf16 compute) unless told otherwise."""
    from transformers import BitsAndBytesConfig

    if load_in_4bit and load_in_8bit:
        raise ValueError("choose one of load_in_4bit and load_in_8bit")
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, **extra)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=to_dtype(bnb_4bit_compute_dtype), **extra,
    )
