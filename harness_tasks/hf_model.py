"""lm-eval's ``hf`` model with this project's loading and batching defaults.

- ``load_in_4bit`` / ``load_in_8bit`` / ``bnb_4bit_*`` work on transformers 5: lm-eval 0.4.13
  forwards them straight to ``from_pretrained``, which no longer accepts them, so they become a
  ``BitsAndBytesConfig`` (NF4 + double quantisation + bf16 compute by default: the QLoRA recipe).
- ``peft=`` adapters are merged into an unquantized base (``merge_peft``, default on): generation then
  runs the base's kernels alone instead of four extra LoRA matmuls per layer and step. On a 4-bit base
  the adapter stays separate (merging would round it into NF4).
- ``batch_size=auto`` sizes generation batches from the prompts' lengths, ``max_gen_toks`` and free
  memory (``gen_memory``) instead of lm-eval's probe at the full context length, and halves the batch
  if it still runs out of memory (the longest prompts come first, so that happens at once).
Everything else is lm-eval's own code. ``cotharness eval`` selects it for ``--model hf``; from Python
use ``--model hf-cot``.
"""

from __future__ import annotations

import logging

import torch
from lm_eval.api.registry import model_registry, register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import normalize_gen_kwargs

from harness_tasks.errors import UserError
from harness_tasks.gen_memory import MAX_BATCH, free_bytes, generation_batch_size
from harness_tasks.quant import bnb_config

NAME = "hf-cot"
QUANT_ARGS = ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "llm_int8_skip_modules")
log = logging.getLogger(__name__)


class ModelArgsError(UserError, ValueError):
    """``--model_args`` that cannot go together (found as the model loads)."""


class QuantizedHFLM(HFLM):
    def __init__(self, *args, max_batch_size: int | None = None, **kwargs):
        # lm-eval's own cap (64) stays for its log-likelihood probe, which only backs off on a CUDA OOM
        self.generation_cap = max_batch_size or MAX_BATCH
        super().__init__(*args, max_batch_size=max_batch_size or 64, **kwargs)

    def _create_model(self, pretrained, *args, quantization_config=None, merge_peft=None, **kwargs):
        quant = {k: kwargs.pop(k) for k in QUANT_ARGS if k in kwargs}
        if quant.get("load_in_4bit") or quant.get("load_in_8bit"):
            if quantization_config is not None:
                raise ModelArgsError(f"{pretrained} is already quantized ({quantization_config.quant_method}); "
                                 "drop load_in_4bit/load_in_8bit from --model_args")
            # lm-eval already loads with device_map={"": <device>}, so the quantized weights are
            # created where they run (they cannot be moved afterwards).
            quantization_config = bnb_config(**quant)
        elif quant:
            raise ModelArgsError(f"{sorted(quant)} given without load_in_4bit=True or load_in_8bit=True")
        super()._create_model(pretrained, *args, quantization_config=quantization_config, **kwargs)
        self._merge_adapter(merge_peft, kwargs.get("peft"))

    def _merge_adapter(self, merge_peft, adapter) -> None:
        from peft import PeftModel

        if not isinstance(self._model, PeftModel) or merge_peft is False:
            return
        if getattr(self._model.config, "quantization_config", None) is not None:  # bitsandbytes (or other) weights
            if merge_peft:
                raise ModelArgsError("merge_peft=True needs an unquantized base: merging into a 4-bit/8-bit base "
                                 "rounds the adapter into it; drop load_in_4bit or merge_peft")
            return
        self._model = self._model.merge_and_unload()
        log.info("merged the adapter %s into the base for generation (merge_peft=False keeps it separate)", adapter)

    def generate_until(self, requests, disable_tqdm: bool = False):
        if self.batch_size_per_gpu != "auto" or self.batch_schedule != 1 or not requests:
            return super().generate_until(requests, disable_tqdm)
        size = self._generation_batch(requests)
        try:
            while True:
                self.batch_size_per_gpu = size
                try:
                    return super().generate_until(requests, disable_tqdm)
                except torch.OutOfMemoryError:
                    if size == 1:
                        raise
                    size //= 2
                    torch.cuda.empty_cache()
                    log.warning("out of memory generating: retrying with batches of %d", size)
        finally:
            self.batch_size_per_gpu = "auto"

    def _generation_batch(self, requests) -> int:
        longest = max(len(self.tok_encode(context)) for context, _ in (r.args for r in requests))
        new = max(normalize_gen_kwargs(dict(kw), self.max_gen_toks)["max_gen_toks"] for _, kw in (r.args for r in requests))
        prompt = min(longest, self.max_length - new)
        size = generation_batch_size(self.model.config, prompt, new, free_bytes(self.device), cap=self.generation_cap)
        log.info("batch_size=auto: %d sequences per generation batch (longest prompt %d tokens + %d new)",
                 size, prompt, new)
        return size


if NAME not in model_registry:
    register_model(NAME)(QuantizedHFLM)
