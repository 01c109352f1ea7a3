"""The random-weight Mistral-7B-v0.3 shape the GPU benchmarks load (speed and memory do not depend on
the weights' values), saved with the project's tiny tokenizer: Mistral's is not available offline, and
the tiny one's ids are a subset of the 32,768-token vocabulary. ``small`` keeps the shape's proportions
(grouped-query attention 4:1, MLP 3.5x) in 4 layers of width 512, for checks that run on a CPU."""

from __future__ import annotations

from pathlib import Path

MISTRAL_7B = dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rope_theta=1e6, sliding_window=None, tie_word_embeddings=False)
SMALL = MISTRAL_7B | dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=4, num_attention_heads=8,
                          num_key_value_heads=2)
SHAPES = {"7b": MISTRAL_7B, "small": SMALL}


def build_model(tokenizer_dir: Path, out: Path, adapter_out: Path | None = None, shape: str = "7b",
                device: str = "cuda") -> Path:
    """Save the model (bf16) to ``out``; with ``adapter_out`` also a LoRA r16/a32 adapter on q,k,v,o with
    non-zero random weights (the seed recipe's adapter shape)."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralForCausalLM(MistralConfig(**SHAPES[shape], bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                                   ).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if adapter_out is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(model, lora).save_pretrained(adapter_out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out
