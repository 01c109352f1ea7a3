"""GPU memory estimate for a training config: weights, adapter, optimizer, activations.

Counts what LoRA training on frozen (possibly 4-bit) weights keeps alive: frozen linear layers
save no input for a weight gradient, so the activations are the nonlinear ops' inputs plus the
LoRA branches' inputs. Worst case: every micro-batch padded to the longest row (``data.max_length``
unless the caller knows the data). Checked against measured peaks on a Mistral-7B shape
(tests/test_train_config.py reads bench/results/train_throughput.json).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import TrainConfig

GIB = 1024**3
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_8bit": 2, "adamw_8bit": 2,
                   "adamw_bnb_8bit": 2, "paged_adamw_32bit": 8, "sgd": 0, "adafactor": 4}


@dataclass
class Estimate:
    model: str
    parts: dict[str, float]  # GiB
    tokens_per_micro_batch: int
    gpus: list[tuple[str, float]]  # (name, GiB)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def estimate(cfg: TrainConfig, model_config=None, longest: int | None = None) -> Estimate:
    from transformers import AutoConfig

    mc = model_config or AutoConfig.from_pretrained(cfg.model.base_model,
                                                   trust_remote_code=cfg.model.trust_remote_code)
    h, n_layers, vocab, inter = mc.hidden_size, mc.num_hidden_layers, mc.vocab_size, mc.intermediate_size
    head_dim = getattr(mc, "head_dim", None) or h // mc.num_attention_heads
    q_dim, kv_dim = mc.num_attention_heads * head_dim, mc.num_key_value_heads * head_dim
    shapes = {"q_proj": (h, q_dim), "k_proj": (h, kv_dim), "v_proj": (h, kv_dim), "o_proj": (q_dim, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    act = BYTES[cfg.model.compute_dtype]
    quant = cfg.model.quantization
    linear_params = n_layers * sum(i * o for i, o in shapes.values())
    # bnb 4-bit: 0.5 B/param + one absmax per 64 weights (fp32, or 8-bit with double quantisation)
    per_param = {"nf4": 0.5, "fp4": 0.5, "int8": 1.0, "none": act}[quant]
    if quant in ("nf4", "fp4"):
        per_param += (1 + 4 / 256) / 64 if cfg.model.double_quant else 4 / 64
    embed_params = vocab * h * (1 if getattr(mc, "tie_word_embeddings", False) else 2)

    targets = list(shapes) if cfg.lora.target_modules == "all-linear" else cfg.lora.target_modules
    lora_params = n_layers * sum(cfg.lora.r * sum(shapes[t]) for t in targets if t in shapes)
    lora_dtype = 2 if quant != "none" else act  # TRL keeps QLoRA adapters in bf16
    optim = OPTIMIZER_BYTES.get(cfg.training.get("optim", "adamw_torch"), 8)

    tokens = cfg.training.get("per_device_train_batch_size", 8) * min(longest or cfg.data.max_length,
                                                                        cfg.data.max_length)
    lora_in = sum(shapes[t][0] for t in targets if t in shapes)
    liger = cfg.training.get("use_liger_kernel") is True
    per_layer = (
        act * (2 * h + q_dim + 2 * kv_dim + q_dim)  # norm input, q/k/v and attention output kept for sdpa backward
        + act * (h + 2 * inter)  # norm input, gate and up for SwiGLU's backward
        # Liger's SwiGLU recomputes act(gate) and its RMSNorm keeps only the bf16 input; without
        # them transformers keeps act(gate) and each RMSNorm's fp32 upcast of its input
        + (0 if liger else act * inter + 2 * 4 * h)
        + (act + (1 if cfg.lora.dropout > 0 else 0)) * lora_in  # each LoRA branch's (dropped-out) input
    ) * tokens
    checkpointing = cfg.training.get("activation_checkpointing", True)
    activations = (n_layers * act * h * tokens + per_layer) if checkpointing else n_layers * per_layer
    # TRL's SFTTrainer computes the loss through a fused, chunked LM head: no tokens x vocab logits
    # tensor, only the final hidden states in fp32
    logits = tokens * h * 4
    parts = {
        "base weights": (linear_params * per_param + embed_params * act) / GIB,
        "LoRA weights + grads": lora_params * 2 * lora_dtype / GIB,
        "optimizer states": lora_params * optim / GIB,
        "activations": activations / GIB,
        "LM head + loss (chunked)": logits / GIB,
    }
    parts["CUDA context + allocator slack (~8%)"] = 0.5 + 0.08 * sum(parts.values())
    return Estimate(cfg.model.base_model, parts, tokens, _gpus())


def _gpus() -> list[tuple[str, float]]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / GIB)
            for i in range(torch.cuda.device_count())]


def render(est: Estimate) -> str:
    lines = [f"Memory estimate per GPU for {est.model} ({est.tokens_per_micro_batch} tokens per micro-batch):"]
    lines += [f"  {name:<40} {gib:8.2f} GiB" for name, gib in est.parts.items()]
    lines.append(f"  {'total':<40} {est.total:8.2f} GiB")
    if not est.gpus:
        lines.append("No CUDA GPU visible here: compare the total with your GPU's memory.")
    for i, (name, gib) in enumerate(est.gpus):
        verdict = "fits" if est.total <= gib * 0.95 else "DOES NOT FIT: lower per_device_train_batch_size, " \
                  "data.max_length, or turn on training.activation_checkpointing"
        lines.append(f"  GPU {i}: {name}, {gib:.1f} GiB: {verdict}")
    return "\n".join(lines)
