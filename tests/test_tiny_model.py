import hashlib

from transformers import AutoModelForCausalLM, AutoTokenizer

import prompts


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_deterministic(tiny_model, tmp_path):
    from cotharness.tiny_model import build

    assert _digest(build(tmp_path / "again")) == _digest(tiny_model)


def test_loads_like_a_hub_model(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.model_type == "mistral"
    assert tok.pad_token_id not in (tok.eos_token_id, None)  # pad != eos: EOS is never masked in training
    assert model.config.vocab_size == len(tok)


def test_instruction_format_and_bos(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = tok(prompts.wrap_instruction("Is it raining? Zürich, 東京")).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # BOS added once, by the tokenizer
    assert ids[1] == tok.convert_tokens_to_ids("[INST]") and ids[-1] == tok.convert_tokens_to_ids("[/INST]")
    assert tok.eos_token_id not in ids
    # byte-level BPE: text the tokenizer never saw round-trips, nothing becomes <unk>
    assert tok.decode(ids, skip_special_tokens=True) == " Is it raining? Zürich, 東京 "
    assert tok.unk_token_id not in ids


def test_tokenizer_does_not_change_when_prompts_are_added():
    """The demo's published figures come from this exact tokenizer; new prompt files (datagen's) or
    other edits outside its corpus must not change it. Update the digest only on purpose."""
    from cotharness.tiny_model import build_tokenizer

    vocab = build_tokenizer().backend_tokenizer.to_str()
    assert hashlib.sha256(vocab.encode()).hexdigest() == (
        "dfc8a2922d91146cf077bf6625b98b83a4126942c916abf47b72a71925ed41a7")
