"""Base model, tokenizer and LoRA configuration for training."""

from __future__ import annotations

import logging
from pathlib import Path

from harness_tasks.model_paths import looks_local
from harness_tasks.quant import bnb_config, to_dtype
from trainer.config import ConfigError, LoraSection, ModelSection

log = logging.getLogger(__name__)

def check_base_model(name: str, option: str = "--base-model") -> None:
    """A base model given as a local path that does not exist: said in one line before anything loads.

    A path that looks local (``harness_tasks.model_paths.looks_local``: a leading '/', '.' or '~', more
    than one '/', or a first part that is a folder here) is never looked up on the hub, where it would
    fail as a malformed repo id."""
    if looks_local(name) and not Path(name).expanduser().is_dir():
        raise ConfigError(f"{option} {name}: no such directory (a hub id is owner/name, with no leading "
                          "'/', './' or '~')")


def hub_error(name: str, err: OSError, option: str = "--base-model") -> ConfigError:
    """transformers' many-line OSError for a model it cannot find (a typo, no network) as one line."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(f"{option} {name}: cannot load it ({first})")


def load_tokenizer(cfg: ModelSection):
    """The base model's tokenizer with a pad token that is not EOS.

    With pad == EOS a collator that masks padding also masks every EOS, and the model never learns
    to stop (two seed projects shipped that). Mistral's tokenizer has no pad token; its <unk> is a
    safe pad (never produced from text) and needs no new embedding row.
    """
    from transformers import AutoTokenizer

    check_base_model(cfg.base_model)
    try:
        tok = AutoTokenizer.from_pretrained(cfg.base_model, trust_remote_code=cfg.trust_remote_code)
    except OSError as err:
        raise hub_error(cfg.base_model, err) from None
    if tok.eos_token is None:
        raise ConfigError(f"{cfg.base_model}: the tokenizer has no EOS token; cannot teach the model to stop")
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
