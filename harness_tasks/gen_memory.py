"""How many prompts fit in one ``generate`` batch: the KV cache and the prefill's activations per
sequence against the free accelerator (or host) memory.

lm-eval's own ``batch_size=auto`` probes a forward pass at the model's full context (32k tokens for
Mistral), which suits log-likelihood but gives generation a batch of a few rows. Generation needs
room for each sequence's prompt plus its new tokens, known before the first batch runs.
"""

from __future__ import annotations

import torch

HEADROOM = 0.85  # of the free memory; the rest covers the allocator's fragmentation and sampling buffers
MAX_BATCH = 512  # past this, decoding a 7B model stops getting faster per sequence on one GPU


def bytes_per_sequence(config, prompt_tokens: int, new_tokens: int, kv_bytes: int = 2, act_bytes: int = 2) -> int:
    """KV cache for prompt + new tokens, plus the widest prefill activations (the MLP's three
    intermediate tensors and a float32 attention score matrix, in case SDPA falls back to the math kernel)."""
    config = getattr(config, "text_config", config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    kv = 2 * config.num_hidden_layers * kv_heads * head_dim * kv_bytes * (prompt_tokens + new_tokens)
    prefill = prompt_tokens * (3 * config.intermediate_size + 4 * config.hidden_size) * act_bytes
    scores = heads * prompt_tokens * prompt_tokens * 4
    logits = config.vocab_size * 4 * 2  # the last position's logits, float32, and their processed copy
    return kv + prefill + scores + logits


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # memory torch has cached but not handed out is free for the next batch too
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    import psutil

    return psutil.virtual_memory().available


def generation_batch_size(config, prompt_tokens: int, new_tokens: int, free: int, cap: int = MAX_BATCH) -> int:
    per_seq = bytes_per_sequence(config, prompt_tokens, new_tokens)
    size = max(1, min(cap, int(free * HEADROOM) // per_seq))
    return size - size % 8 if size >= 16 else size  # multiples of 8 suit the tensor cores
