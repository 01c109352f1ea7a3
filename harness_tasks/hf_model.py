"""lm-eval's ``hf`` model with ``load_in_4bit`` / ``load_in_8bit`` / ``bnb_4bit_*`` working on transformers 5.

lm-eval 0.4.13 forwards those model_args straight to ``from_pretrained``, which transformers 5 no
longer accepts. This subclass turns them into a ``BitsAndBytesConfig`` (NF4 + double quantisation
+ bf16 compute by default: the QLoRA training recipe). Everything else, ``peft=`` included, is lm-eval's own code.
``cotharness eval`` selects it for ``--model hf``; from Python use ``--model hf-cot``.
"""

from __future__ import annotations

from lm_eval.api.registry import model_registry, register_model
from lm_eval.models.huggingface import HFLM

from harness_tasks.quant import bnb_config

NAME = "hf-cot"
QUANT_ARGS = ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "llm_int8_skip_modules")


class QuantizedHFLM(HFLM):
    def _create_model(self, pretrained, *args, quantization_config=None, **kwargs):
        quant = {k: kwargs.pop(k) for k in QUANT_ARGS if k in kwargs}
        if quant.get("load_in_4bit") or quant.get("load_in_8bit"):
            if quantization_config is not None:
                raise ValueError(f"{pretrained} is already quantized ({quantization_config.quant_method}); "
                                 "drop load_in_4bit/load_in_8bit from --model_args")
            # lm-eval already loads with device_map={"": <device>}, so the quantized weights are
            # created where they run (they cannot be moved afterwards).
            quantization_config = bnb_config(**quant)
        elif quant:
            raise ValueError(f"{sorted(quant)} given without load_in_4bit=True or load_in_8bit=True")
        return super()._create_model(pretrained, *args, quantization_config=quantization_config, **kwargs)


if NAME not in model_registry:
    register_model(NAME)(QuantizedHFLM)
