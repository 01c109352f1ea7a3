"""The local transformers teacher (datagen/engine/backends/hf.py) on the embedded tiny model: batching,
padding, token counts, adapters, seeding, re-prompt conversations, failures."""

from __future__ import annotations

import asyncio

import pytest
import torch

from datagen.engine.backends import make_backend
from datagen.engine.backends.base import ChatRequest
from datagen.engine.backends.hf import HFBackend

SYSTEM = {"role": "system", "content": "You label premise/hypothesis pairs."}


def request(text: str, **params) -> ChatRequest:
    return ChatRequest("tiny", (SYSTEM, {"role": "user", "content": text}), {"type": "json_object"},
                       {"max_tokens": 12, **params})


# Different lengths, so a batch needs padding.
REQUESTS = [request("Premise: a dog runs. Hypothesis: an animal moves." * (i % 3 + 1) + f" #{i}")
            for i in range(8)]


def concurrently(backend: HFBackend, requests) -> list:
    async def go():
        try:
            return await asyncio.gather(*(backend.complete(r) for r in requests))
        finally:
            await backend.aclose()
    return asyncio.run(go())


def one_by_one(backend: HFBackend, requests) -> list:
    async def go():
        try:
            return [await backend.complete(r) for r in requests]
        finally:
            await backend.aclose()
    return asyncio.run(go())


def count_generate(monkeypatch, backend: HFBackend) -> list[int]:
    sizes, generate = [], backend.model.generate

    def counted(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)
    monkeypatch.setattr(backend.model, "generate", counted)
    return sizes


@pytest.fixture(scope="module")
def backend(tiny_model) -> HFBackend:
    return HFBackend(str(tiny_model), endpoint="hf:tiny", batch_size=4)


def test_batched_equals_one_by_one(backend, tiny_model, monkeypatch):
    sizes = count_generate(monkeypatch, backend)
    batched = concurrently(backend, REQUESTS)
    assert sizes == [4, 4]  # 8 concurrent requests, batch_size 4: two generate calls, not eight
    single = HFBackend(str(tiny_model), endpoint="hf:tiny", batch_size=1)
    alone = one_by_one(single, REQUESTS)
    assert [c.text for c in batched] == [c.text for c in alone]
    assert [(c.tokens_in, c.tokens_out) for c in batched] == [(c.tokens_in, c.tokens_out) for c in alone]
    assert len({c.text for c in batched}) > 1  # different prompts, different answers: nothing got mixed up


def test_token_counts_and_single_bos(backend):
    tok = backend.tokenizer
    [completion] = concurrently(backend, [REQUESTS[0]])
    ids = backend.encode(backend.render(REQUESTS[0].messages))
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert completion.tokens_in == len(ids)
    assert 0 < completion.tokens_out <= 12
    assert completion.model == backend.model_name


def test_tokens_out_stops_at_eos_and_skips_padding(backend, monkeypatch):
    tok = backend.tokenizer
    answer = tok("hello world", add_special_tokens=False)["input_ids"]

    def fake_generate(input_ids, **kwargs):  # row 0 stops early (EOS, then padding); row 1 runs out
        rows = [answer + [tok.eos_token_id] + [tok.pad_token_id] * 3, [5] * (len(answer) + 4)]
        return torch.cat([input_ids, torch.tensor(rows, device=input_ids.device)], dim=1)
    monkeypatch.setattr(backend.model, "generate", fake_generate)
    first, second = concurrently(backend, REQUESTS[:2])
    assert (first.text, first.tokens_out) == ("hello world", len(answer) + 1)
    assert second.tokens_out == len(answer) + 4


def test_grouped_by_generation_parameters(backend, monkeypatch):
    sizes = count_generate(monkeypatch, backend)
    mixed = [REQUESTS[0], request("x", max_tokens=5), REQUESTS[1], request("y", max_tokens=5)]
    completions = concurrently(backend, mixed)
    assert sorted(sizes) == [2, 2]
    assert all(c.tokens_out <= 5 for c in completions[1::2])


def test_adapter_changes_the_model(tiny_model, lora_adapter, backend):
    tuned = HFBackend(str(tiny_model), endpoint="hf:tiny+lora", adapter=lora_adapter)
    assert (tuned.name, tuned.endpoint, backend.endpoint) == ("hf", "hf:tiny+lora", "hf:tiny")
    ids = torch.tensor([backend.encode(backend.render(REQUESTS[0].messages))])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(ids).logits, backend.model(ids).logits)
    texts = [c.text for c in concurrently(tuned, REQUESTS[:4])]
    assert texts != [c.text for c in concurrently(backend, REQUESTS[:4])]


def test_seeded_sampling_is_reproducible(tiny_model, backend):
    sampled = [request(f"Premise {i}.", temperature=1.0, top_p=0.95, random_seed=7) for i in range(3)]
    other = HFBackend(str(tiny_model), endpoint="hf:tiny", batch_size=4)
    first, second = concurrently(backend, sampled), concurrently(other, sampled)
    assert [c.text for c in first] == [c.text for c in second]
    reseeded = [request(f"Premise {i}.", temperature=1.0, top_p=0.95, random_seed=8) for i in range(3)]
    assert [c.text for c in concurrently(backend, reseeded)] != [c.text for c in first]


def test_reprompt_conversation(backend):
    conversation = REQUESTS[0].reprompt('{"label": "maybe"', "Your reply could not be used: invalid JSON.")
    text = backend.render(conversation.messages)
    assert text.startswith("<s>[INST] You label") and text.count("<s>") == 1
    assert '[/INST]{"label": "maybe"</s>[INST] Your reply could not be used' in text
    assert text.endswith("[/INST]")
    [completion] = concurrently(backend, [conversation])
    assert completion.tokens_in > concurrently(backend, [REQUESTS[0]])[0].tokens_in
    assert completion.tokens_out > 0


def test_without_chat_template_uses_the_instruction_wrapper(backend, monkeypatch):
    monkeypatch.setattr(backend.tokenizer, "chat_template", None)
    text = backend.render(REQUESTS[0].reprompt("no", "again").messages)
    assert text.startswith("[INST] You label premise/hypothesis pairs.\n\nPremise")
    assert "[/INST]no</s>[INST] again" in text
    ids = backend.encode(text)
    assert ids[0] == backend.tokenizer.bos_token_id and ids.count(backend.tokenizer.bos_token_id) == 1


def test_generation_error_fails_the_requests_and_serving_goes_on(backend, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    async def go():
        monkeypatch.setattr(backend.model, "generate", broken)
        results = await asyncio.wait_for(asyncio.gather(*(backend.complete(r) for r in REQUESTS[:3]),
                                                        return_exceptions=True), 30)
        monkeypatch.undo()
        after = await asyncio.wait_for(backend.complete(REQUESTS[0]), 30)
        await backend.aclose()
        return results, after
    results, after = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) and "boom" in str(r) for r in results)
    assert after.tokens_out > 0


def test_aclose_does_not_leave_callers_waiting(backend):
    async def go():
        tasks = [asyncio.create_task(backend.complete(r)) for r in REQUESTS]
        await asyncio.sleep(0)  # queued, the first batch not yet started
        await backend.aclose()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    results = asyncio.run(go())
    assert len(results) == 8 and all(isinstance(r, RuntimeError) and "closed" in str(r) for r in results)


def test_missing_directories_are_named(tiny_model, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        HFBackend(str(missing), endpoint="x")
    with pytest.raises(FileNotFoundError, match="no-such-adapter"):
        HFBackend(str(tiny_model), endpoint="x", adapter=tmp_path / "no-such-adapter")


def test_make_backend(tiny_model, lora_adapter):
    args = {"adapter": str(lora_adapter), "batch_size": 2}
    backend = make_backend("hf", str(tiny_model), None, 60.0, args)
    assert backend.endpoint == f"hf:{tiny_model.resolve()}+{lora_adapter.resolve()}"
    assert all(c.tokens_out > 0 for c in concurrently(backend, REQUESTS[:3]))
