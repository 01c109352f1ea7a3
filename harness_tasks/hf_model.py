"""lm-eval's ``hf`` model with this project's loading and batching defaults.

- ``load_in_4bit`` / ``load_in_8bit`` / ``bnb_4bit_*`` work on transformers 5: lm-eval 0.4.13
  forwards them straight to ``from_pretrained``, which no longer accepts them, so they become a
  ``BitsAndBytesConfig`` (NF4 + double quantisation + bf16 compute by default: the QLoRA recipe).
- ``peft=`` adapters are merged into an unquantized base (``merge_peft``, default on): generation then
  runs the base's kernels alone instead of four extra LoRA matmuls per layer and step.
- ``load_in_4bit``: the NF4 weights are dequantized once to the compute dtype (``dequantize``, default
  ``auto``: when the copy fits in memory) and the adapter merged into them. The values are those the 4-bit
  matmul computes with (bitsandbytes dequantizes each weight to bf16 before its matmul), without paying
  the dequantization at every step of every layer: 4-bit evaluation at bf16 speed. ``dequantize=False``
  keeps the true 4-bit path (its memory; the adapter then stays separate, merging would round it into NF4).
- stop strings are checked on each new token's text (``stop_tokens``), not by re-decoding every row at
  every step, and rows finish one by one; the answers are cut at the stop strings by lm-eval as before.
- ``kv_cache=static`` (the default; ``dynamic`` is transformers' own) decodes into a KV cache allocated once
  per batch at its final length instead of one that grows by a copy at every step: the user's command on
  the 7B shape (1,977 answers, an H100) took 74-93 s instead of 118-122 s
  (``bench/results/eval_throughput.json``). Not compiled: a compiled step is rebuilt for every new batch
  shape, lm-eval's batches each have their own prompt length, and even one shape decoded slower compiled
  (``bench/results/decode_profile_256.json``).
- ``batch_size=auto`` sizes each generation batch from its longest prompt, ``max_gen_toks`` and free
  memory (``gen_memory``) instead of lm-eval's one probe at the full context length: the batches grow as
  the prompts get shorter. A batch that still runs out of memory is halved, and so are the ones after it.
Everything else is lm-eval's own code. ``cotharness eval`` selects it for ``--model hf``; from Python
use ``--model hf-cot``.
"""

from __future__ import annotations

import logging

import torch
from lm_eval.api.registry import model_registry, register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import normalize_gen_kwargs
from tqdm import tqdm

from harness_tasks.errors import UserError
from harness_tasks.gen_memory import MAX_BATCH, free_bytes, generation_batch_size
from harness_tasks.quant import bnb_config

NAME = "hf-cot"
QUANT_ARGS = ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "llm_int8_skip_modules")
log = logging.getLogger(__name__)


class ModelArgsError(UserError, ValueError):
    """``--model_args`` that cannot go together (found as the model loads)."""


KV_CACHES = ("dynamic", "static")


class QuantizedHFLM(HFLM):
    def __init__(self, *args, max_batch_size: int | None = None, kv_cache: str = "static", **kwargs):
        if kv_cache not in KV_CACHES:
            raise ModelArgsError(f"kv_cache={kv_cache!r}: give {' or '.join(KV_CACHES)}")
        self.kv_cache = kv_cache
        # lm-eval's own cap (64) stays for its log-likelihood probe, which only backs off on a CUDA OOM
        self.generation_cap = max_batch_size or MAX_BATCH
        super().__init__(*args, max_batch_size=max_batch_size or 64, **kwargs)

    def _create_model(self, pretrained, *args, quantization_config=None, merge_peft=None, dequantize="auto",
                      **kwargs):
        quant = {k: kwargs.pop(k) for k in QUANT_ARGS if k in kwargs}
        dequantize = _flag("dequantize", dequantize)
        if quant.get("load_in_4bit") or quant.get("load_in_8bit"):
            if quantization_config is not None:
                raise ModelArgsError(f"{pretrained} is already quantized ({quantization_config.quant_method}); "
                                 "drop load_in_4bit/load_in_8bit from --model_args")
            # lm-eval already loads with device_map={"": <device>}, so the quantized weights are
            # created where they run (they cannot be moved afterwards).
            quantization_config = bnb_config(**quant)
        elif quant:
            raise ModelArgsError(f"{sorted(quant)} given without load_in_4bit=True or load_in_8bit=True")
        if dequantize is True and not quant.get("load_in_4bit"):
            raise ModelArgsError("dequantize=True applies to load_in_4bit=True only")
        adapter = kwargs.get("peft")
        four_bit = bool(quant.get("load_in_4bit")) and dequantize is not False
        if four_bit:  # the adapter goes on after the weights are dequantized
            kwargs["peft"] = None
        super()._create_model(pretrained, *args, quantization_config=quantization_config, **kwargs)
        if four_bit:
            self._dequantize(dequantize, quantization_config)
            if adapter:
                from peft import PeftModel

                # as lm-eval's own adapter loading does: an adapter trained with added tokens
                if self._model.config.vocab_size != len(self.tokenizer):
                    self._model.resize_token_embeddings(len(self.tokenizer))
                self._model = PeftModel.from_pretrained(self._model, adapter, revision=kwargs.get("revision", "main"))
        self._merge_adapter(merge_peft, adapter)

    def _dequantize(self, dequantize, quantization_config) -> None:
        """NF4 -> the dtype of the model's other weights (the compute dtype, bf16, for a bf16 checkpoint),
        once, where it fits (``auto``) or when asked (True)."""
        dtype = self._model.get_input_embeddings().weight.dtype
        need = dequantized_bytes(self._model, dtype)
        free = free_bytes(self.device)
        if dequantize == "auto" and free is not None and need > DEQUANTIZE_SHARE * free:
            log.warning("load_in_4bit: keeping the 4-bit weights (a %s copy needs %.1f GiB, %.1f GiB free); "
                        "generation runs bitsandbytes' 4-bit kernels", dtype, need / 2**30, free / 2**30)
            return
        self._model = self._model.dequantize(dtype=dtype)
        log.info("load_in_4bit: NF4 weights dequantized once to %s (%.1f GiB; dequantize=False keeps 4-bit)",
                 dtype, need / 2**30)

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

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs) -> torch.Tensor:
        """lm-eval's own ``_model_generate`` (0.4.13) with ``stop_tokens``' criteria in place of its
        ``stop_sequences_criteria``."""
        from harness_tasks.stop_tokens import token_stop_criteria

        generation_kwargs["temperature"] = generation_kwargs.get("temperature", 0.0)
        do_sample = generation_kwargs.get("do_sample")
        if (temp := generation_kwargs.get("temperature")) == 0.0 and do_sample is None:
            generation_kwargs["do_sample"] = do_sample = False
        if do_sample is False and temp == 0.0:
            generation_kwargs.pop("temperature", None)
        stopping = token_stop_criteria(self.tokenizer, stop, context.shape[1], context.shape[0])
        if self.kv_cache == "static":  # --gen_kwargs may still choose otherwise
            generation_kwargs.setdefault("cache_implementation", "static")
            generation_kwargs.setdefault("disable_compile", True)
        if generation_kwargs.get("cache_implementation") == "static":
            forget_static_cache_length(self.model)
        with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                            enabled=self.mixed_precision_dtype is not None):
            return self.model.generate(input_ids=context, max_length=max_length, stopping_criteria=stopping,
                                       pad_token_id=self.tokenizer.pad_token_id, use_cache=True, **generation_kwargs)

    def generate_until(self, requests, disable_tqdm: bool = False):
        """``batch_size=auto``: the requests in lm-eval's order (longest prompt first), cut into batches each
        sized for its own longest prompt, so the shorter prompts further on go in larger batches. Each batch
        is one call of lm-eval's own ``generate_until`` at a fixed batch size."""
        if self.batch_size_per_gpu != "auto" or self.batch_schedule != 1 or not requests:
            return super().generate_until(requests, disable_tqdm)
        args = [r.args for r in requests]
        lengths = [len(self.tok_encode(context)) for context, _ in args]
        new = max(normalize_gen_kwargs(dict(kw), self.max_gen_toks)["max_gen_toks"] for _, kw in args)
        order = sorted(range(len(args)), key=lambda i: (-lengths[i], args[i][0]))  # lm-eval's own sort
        free, cap = free_bytes(self.device), self.generation_cap
        answers: list = [None] * len(args)
        sizes: list[int] = []
        pbar = tqdm(total=len(args), disable=disable_tqdm or self.rank != 0, desc="Running generate_until requests")
        try:
            start = 0
            while start < len(order):
                prompt = min(lengths[order[start]], self.max_length - new)
                size = generation_batch_size(self.model.config, prompt, new, free, cap=cap)
                batch = order[start:start + size]
                worked, out = self._generate_batch([requests[i] for i in batch], size)
                if worked < size:  # it ran out of memory: the later batches get no larger than what worked
                    cap = worked
                for i, answer in zip(batch, out, strict=True):
                    answers[i] = answer
                sizes.append(len(batch))
                pbar.update(len(batch))
                start += len(batch)
        finally:
            pbar.close()
            self.batch_size_per_gpu = "auto"
        log.info("batch_size=auto: %d generation batches of %s rows, each sized for its longest prompt "
                 "(%d to %d tokens) + %d new", len(sizes), _ranges(sizes), lengths[order[-1]], lengths[order[0]], new)
        return answers

    def _generate_batch(self, requests, size: int) -> tuple[int, list[str]]:
        """lm-eval's ``generate_until`` on these requests in batches of ``size``, halved while it runs
        out of memory (the size that worked is returned with the answers)."""
        while True:
            self.batch_size_per_gpu = size
            try:
                return size, super().generate_until(requests, disable_tqdm=True)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                size //= 2
                torch.cuda.empty_cache()
                log.warning("out of memory generating: retrying with batches of %d", size)


def forget_static_cache_length(model) -> None:
    """Size the next static cache for its own batch. transformers keeps the longest ``max_cache_len`` any
    ``generate`` call has used (``_previous_max_cache_length``, so that a compiled step is not rebuilt) and
    gives every later cache that length: after the longest prompts come first, each later batch would hold
    and attend over the first batch's length. On the 7B shape that made a 512-row batch of 253-token
    prompts allocate for 675 positions and run out of memory (the memory estimate counts 453)."""
    for module in model.modules():  # the generating model may sit inside a PEFT wrapper
        vars(module).pop("_previous_max_cache_length", None)


def _ranges(sizes: list[int]) -> str:
    """[336, 512, 512, 512, 105] -> '336, 512 x3, 105'."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return ", ".join(f"{size} x{n}" if n > 1 else str(size) for size, n in runs)


DEQUANTIZE_SHARE = 0.5  # the copy may take half the free memory: the rest is the generation batches' KV cache


def dequantized_bytes(model, dtype) -> int:
    """What the 4-bit linear weights take once dequantized to ``dtype`` (other weights are already in it)."""
    import bitsandbytes as bnb

    size = torch.finfo(dtype).bits // 8
    return sum(m.in_features * m.out_features * size for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


def _flag(name: str, value):
    """``auto``, True or False from --model_args (a string there: ``dequantize=false``)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "auto":
            return "auto"
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ModelArgsError(f"{name}={value!r}: give auto, true or false")
    return bool(value)


if NAME not in model_registry:
    register_model(NAME)(QuantizedHFLM)
