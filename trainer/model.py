"""Base model, tokenizer and LoRA configuration for training."""

from __future__ import annotations

import logging

from harness_tasks.quant import bnb_config, to_dtype
from trainer.config import LoraSection, ModelSection

log = logging.getLogger(__name__)


def load_tokenizer(cfg: ModelSection):
    """The base model's tokenizer with a pad token that is not EOS.

    With pad == EOS a collator that masks padding also masks every EOS, and the model never learns
    to stop (two seed projects shipped that). Mistral's tokenizer has no pad token; its <unk> is a
    safe pad (never produced from text) and needs no new embedding row.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
    if tok.eos_token is None:
        raise ValueError(f"{cfg.base_model}: the tokenizer has no EOS token; cannot teach the model to stop")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        if tok.unk_token is not None and tok.unk_token_id != tok.eos_token_id:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
            log.warning("added a <pad> token to the tokenizer; the embeddings will be resized")
    return tok


def device_map():
    """Each process loads its own full copy on its own GPU (data parallel); never "auto" under DDP."""
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available():
        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def load_model(cfg: ModelSection, tokenizer):
    from transformers import AutoModelForCausalLM

    quant = None
    if cfg.quantization in ("nf4", "fp4"):
        quant = bnb_config(bnb_4bit_quant_type=cfg.quantization, bnb_4bit_use_double_quant=cfg.double_quant,
                           bnb_4bit_compute_dtype=cfg.compute_dtype)
    elif cfg.quantization == "int8":
        quant = bnb_config(load_in_4bit=False, load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base_model, quantization_config=quant, dtype=to_dtype(cfg.compute_dtype), device_map=device_map(),
        attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
    )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def lora_config(cfg: LoraSection):
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      bias="none", task_type="CAUSAL_LM")
