"""Teacher backends behind one interface (``base.Backend``): ``mistral`` (the Mistral API or any
server with its chat-completions shape), ``mistral-batch`` (the Batch API: half price, hours of
latency; see ``mistral_batch.py``) and ``hf`` (a local transformers model, optionally with a PEFT
adapter)."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("mistral", "mistral-batch", "hf")


def endpoint(backend: str, model: str, server_url: str | None, args: dict) -> str:
    """Who answers: goes into every request hash, so a change of server or adapter is noticed."""
    if backend == "hf":
        adapter = args.get("adapter")
        return f"hf:{Path(model).resolve() if Path(model).exists() else model}" + (
            f"+{Path(adapter).resolve()}" if adapter else "") + (":4bit" if args.get("load_in_4bit") else "") + (
            ":instruction-format" if args.get("use_chat_template") is False else "")  # another prompt text
    from datagen.engine.backends.mistral import endpoint_of

    return endpoint_of(server_url)


def make_backend(backend: str, model: str, server_url: str | None, timeout_s: float, args: dict,
                 concurrency: int = 8):
    if backend == "mistral":
        from datagen.engine.backends.mistral import MistralBackend
        from harness_tasks.secrets import api_key

        return MistralBackend(api_key(required=server_url is None), server_url, timeout_s, concurrency)
    if backend == "hf":
        from datagen.engine.backends.hf import HFBackend

        return HFBackend(model, endpoint=endpoint(backend, model, None, args), **args)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
