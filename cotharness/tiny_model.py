"""The embedded default model: a tiny Mistral-architecture causal LM and a real BPE tokenizer.

Built offline and deterministically from text the project generates, it loads with
``AutoModelForCausalLM.from_pretrained(DIR)`` / ``AutoTokenizer.from_pretrained(DIR)`` exactly like
a hub checkpoint, so every real loading path (4-bit, PEFT, lm-eval's ``hf`` model) is exercised on it.
Its special tokens follow Mistral's: ``<s>`` BOS added by the tokenizer, ``</s>`` EOS, ``[INST]``/
``[/INST]``; the pad token ``<pad>`` is distinct from EOS so training never masks EOS.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]"]
TOKENIZER_TEMPLATES = ("nli_cot", "nli_direct")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "[INST] {{ message['content'] }} [/INST]{% else %}{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def corpus(n_rows: int = 600, seed: int = 0) -> list[str]:
    """Text to train the tokenizer on: prompts and answers of the project's own tasks."""
    import prompts
    from datagen.synthetic.nli import generate
    from harness_tasks.tasks import get_task

    task, texts = get_task("nli_cot"), []
    for split in ("train", "dev", "test"):
        for row in generate(split, n_rows, seed):
            texts.append(task.prompt(row))
            texts.append(task.answer(row["thought_process"], row["label"]))
    # A fixed list, not every template: a new prompt file must not change the embedded model.
    for name in TOKENIZER_TEMPLATES:
        texts.append(prompts.template_path(name).read_text(encoding="utf-8"))
    return texts


def build_tokenizer(vocab_size: int = 2048, seed: int = 0):
    """Byte-level BPE (any text encodes, nothing is <unk>) wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed=seed), trainer=trainer)
    bos = tok.token_to_id("<s>")
    # Like Mistral's tokenizer: BOS is added on encode, EOS is not.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["[INST]", "[/INST]"], padding_side="left", model_max_length=2048,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )


def build(out: str | Path, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
          intermediate_size: int = 192, vocab_size: int = 2048, max_positions: int = 2048, init_std: float = 0.1,
          seed: int = 0) -> Path:
    """Write tokenizer + randomly initialised MistralForCausalLM to ``out``; same args, same files."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    out = Path(out)
    tokenizer = build_tokenizer(vocab_size, seed)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, rope_theta=10000.0, sliding_window=None,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        # Wider than Mistral's 0.02: at 0.02 a 64-wide random model's logits are nearly constant and
        # LoRA alone cannot sharpen them, so fine-tuning the tiny model would show almost nothing.
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
