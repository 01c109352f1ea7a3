"""Stop strings checked on each new token's text (harness_tasks/stop_tokens.py, the project's issue 20): the
answers are exactly lm-eval's (its own stop criteria re-decode every row each step), rows stop one by one,
and a stop string split across tokens is found."""

import pytest
import torch

CONTEXTS = [f"Premise: person {i} walks to the market. Hypothesis: someone {'moves' if i % 2 else 'sleeps'}."
            for i in range(12)]


def requests(until, max_gen_toks=24):
    from lm_eval.api.instance import Instance

    return [Instance(request_type="generate_until", doc={}, idx=i,
                     arguments=(c, {"until": list(until), "max_gen_toks": max_gen_toks, "do_sample": False}))
            for i, c in enumerate(CONTEXTS)]


@pytest.fixture(scope="module")
def models(tiny_model):
    from lm_eval.models.huggingface import HFLM

    from harness_tasks.hf_model import QuantizedHFLM

    class LmEvalStops(QuantizedHFLM):
        _model_generate = HFLM._model_generate  # lm-eval's own criteria

    args = {"pretrained": str(tiny_model), "device": "cpu", "dtype": "float32", "batch_size": 4}
    return QuantizedHFLM(**args), LmEvalStops(**args)


@pytest.mark.parametrize("until", [["e"], ["}\n", "[INST]"], ["an", "o w"], ["zzzz"]])
def test_the_answers_are_lm_evals(models, until):
    ours, theirs = models
    got, expected = ours.generate_until(requests(until)), theirs.generate_until(requests(until))
    assert got == expected
    if until == ["e"]:  # random text writes an "e" soon: the cut happened, so this checks something
        assert sum(len(s) < 40 for s in got) >= len(got) // 2, got


def test_rows_stop_one_by_one_and_a_stop_split_across_tokens_is_found(models):
    from harness_tasks.stop_tokens import TokenStopCriteria, token_texts

    tok = models[0].tokenizer
    pieces = token_texts(tok)
    ids = {text: i for i, text in enumerate(pieces)}
    first, second = ids["}"], next(i for i, p in enumerate(pieces) if p == "\n")
    filler = tok.encode("walk", add_special_tokens=False)[0]
    criteria = TokenStopCriteria(tok, ["}\n"], initial_length=1, batch_size=2)
    seq = torch.tensor([[filler, first], [filler, filler]])
    assert criteria(seq, None).tolist() == [False, False]
    seq = torch.cat([seq, torch.tensor([[second], [filler]])], dim=1)
    assert criteria(seq, None).tolist() == [True, False]  # "}" then "\n": the first row is done
    seq = torch.cat([seq, torch.tensor([[filler], [filler]])], dim=1)
    assert criteria(seq, None).tolist() == [True, False]  # done stays done


def test_a_static_kv_cache_gives_the_same_answers(tiny_model, models):
    """kv_cache=static (the default: a cache allocated at its final length, harness_tasks/hf_model.py): the same
    answers as transformers' growing cache (kv_cache=dynamic), prompts of different lengths in one batch (left
    padding) included."""
    from harness_tasks.hf_model import QuantizedHFLM

    args = {"pretrained": str(tiny_model), "device": "cpu", "dtype": "float32", "batch_size": 4}
    static, dynamic = models[0], QuantizedHFLM(**args, kv_cache="dynamic")
    seen = {}
    for name, lm in (("static", static), ("dynamic", dynamic)):
        generate = lm.model.generate
        lm.model.generate = lambda *a, _g=generate, _n=name, **kw: seen.setdefault(_n, set()).add(
            kw.get("cache_implementation")) or _g(*a, **kw)
    try:
        for until in (["}\n", "[INST]"], ["zzzz"]):
            assert static.generate_until(requests(until)) == dynamic.generate_until(requests(until))
    finally:
        del static.model.generate  # the module-scoped model gets its own method back
    assert seen == {"static": {"static"}, "dynamic": {None}}


def test_a_kv_cache_typo_is_one_clear_error(tiny_model):
    from harness_tasks.hf_model import ModelArgsError, QuantizedHFLM

    with pytest.raises(ModelArgsError, match="kv_cache='statc': give dynamic or static"):
        QuantizedHFLM(pretrained=str(tiny_model), device="cpu", kv_cache="statc")


def test_each_static_cache_is_sized_for_its_own_batch(tiny_model, monkeypatch):
    """transformers gives every static cache the longest length an earlier call used; lm-eval sends the
    longest prompts first, so without hf_model.forget_static_cache_length every later batch would be sized
    (and attended over) at the first batch's length: more memory than gen_memory counts for it."""
    import transformers.generation.utils as generation

    from harness_tasks.hf_model import QuantizedHFLM

    sizes = []

    class Recorded(generation.StaticCache):
        def __init__(self, *args, max_cache_len=None, **kwargs):
            sizes.append(max_cache_len)
            super().__init__(*args, max_cache_len=max_cache_len, **kwargs)

    monkeypatch.setattr(generation, "StaticCache", Recorded)
    lm = QuantizedHFLM(pretrained=str(tiny_model), device="cpu", dtype="float32", batch_size=4, kv_cache="static")
    long_prompt, short_prompt = " ".join(CONTEXTS[:4]), CONTEXTS[0]
    for prompt in (long_prompt, short_prompt):
        request = requests(["zzzz"], max_gen_toks=8)[0]
        request.arguments = (prompt, request.arguments[1])
        lm.generate_until([request])
    short_tokens = len(lm.tok_encode(short_prompt))
    assert len(sizes) == 2 and sizes[0] > len(lm.tok_encode(long_prompt))
    assert short_tokens < sizes[1] <= short_tokens + 8 < sizes[0]
