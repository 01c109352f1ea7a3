"""The Mistral API (or any server with the same chat-completions shape: vLLM, llama.cpp) through
the ``mistralai`` SDK, asynchronously. Retries are the runner's job (tenacity); this module only
says which failures are worth retrying."""

from __future__ import annotations

from datagen.engine.backends.base import BackendError, ChatRequest, Completion, FatalBackendError
from harness_tasks.secrets import redact

DEFAULT_URL = "https://api.mistral.ai"
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL = {401: "the server refused the API key (401): check MISTRAL_API_KEY",
         403: "the API key may not use this model or endpoint (403)"}


def client(api_key: str | None, server_url: str | None, timeout_s: float, connections: int = 8):
    """A Mistral SDK client with a connection pool for ``connections`` requests in flight."""
    import httpx2  # the HTTP client mistralai 3.x is built on
    from mistralai.client import Mistral
    from mistralai.client.utils.logger import NoOpLogger

    _cache_sdk_models()
    # httpx keeps only 20 idle connections by default: at higher concurrency every request beyond
    # them would open a new connection.
    pool = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=connections,
                                                   max_keepalive_connections=connections), follow_redirects=True)
    # The SDK's debug logger (MISTRAL_DEBUG=1) prints whole requests; httpx masks the Authorization
    # header today, but request logging is not ours to audit: keep it off.
    sdk = Mistral(api_key=api_key, server_url=server_url or DEFAULT_URL, timeout_ms=int(timeout_s * 1000),
                  async_client=pool, debug_logger=NoOpLogger())
    sdk.cotharness_pool = pool  # ours to close: the SDK leaves a client it was given open
    return sdk


async def close(sdk) -> None:
    await sdk.cotharness_pool.aclose()


def _cache_sdk_models() -> None:
    """The SDK builds a new pydantic model class for every value it (un)marshals, ~8 per request and
    ~14 ms of CPU in all, which caps one process near 70 requests/s. The classes depend only on
    their name, type and config, so build each once (bench/results/datagen_throughput.json)."""
    from mistralai.client.utils import serializers

    original = serializers.create_model
    if getattr(original, "cotharness_cached", False):
        return
    cache: dict = {}

    def create_model(name, /, *, __config__=None, **fields):
        try:
            key = (name, tuple(sorted((__config__ or {}).items())), tuple(fields.items()))
            model = cache.get(key)
        except TypeError:  # an unhashable type: build it as the SDK would
            return original(name, __config__=__config__, **fields)
        if model is None:
            model = cache[key] = original(name, __config__=__config__, **fields)
        return model

    create_model.cotharness_cached = True
    serializers.create_model = create_model


def endpoint_of(server_url: str | None) -> str:
    """The server identity that goes into request hashes (the batch and live APIs answer alike)."""
    return (server_url or DEFAULT_URL).rstrip("/")


class MistralBackend:
    name = "mistral"

    def __init__(self, api_key: str | None, server_url: str | None = None, timeout_s: float = 120.0,
                 connections: int = 8):
        self.client = client(api_key, server_url, timeout_s, connections)
        self.endpoint = endpoint_of(server_url)

    async def complete(self, request: ChatRequest) -> Completion:
        body = sdk_body(request)
        try:
            response = await self.client.chat.complete_async(**body)
        except Exception as err:  # noqa: BLE001 - classified below, never swallowed
            raise classify(err, body["model"]) from None
        return completion_of(response)

    async def aclose(self) -> None:
        await close(self.client)


def sdk_body(request: ChatRequest) -> dict:
    """The request with SDK model objects in place of dicts: the SDK validates plain dicts again on
    every call (a quarter of its CPU per request), objects it takes as they are."""
    from mistralai.client import models

    kinds = {"system": models.SystemMessage, "user": models.UserMessage, "assistant": models.AssistantMessage}
    body = request.body()
    body["messages"] = [kinds[m["role"]](content=m["content"]) for m in body["messages"]]
    if body.get("response_format") is not None:
        body["response_format"] = models.ResponseFormat.model_validate(body["response_format"])
    return body


def completion_of(response) -> Completion:
    """Text and token counts of the SDK's chat completion."""
    if not response.choices:
        raise BackendError("the server returned no choices", retryable=True)
    content = response.choices[0].message.content
    if isinstance(content, list):  # content chunks (e.g. thinking + text): keep the text
        content = "".join(getattr(c, "text", "") or "" for c in content)
    usage = response.usage
    return Completion(content or "", int(getattr(usage, "prompt_tokens", 0) or 0),
                      int(getattr(usage, "completion_tokens", 0) or 0), response.model)


def classify(err: Exception, model: str) -> Exception:
    """An SDK or transport exception as a BackendError (retry or fail the row) or a FatalBackendError."""
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        body = redact(str(getattr(err, "body", "") or "")[:300])
        if status in FATAL:
            return FatalBackendError(FATAL[status])
        if status == 404:
            return FatalBackendError(f"the server does not know model {model!r} or this endpoint (404): {body}")
        headers = getattr(err, "headers", None) or {}
        return BackendError(f"HTTP {status}: {body}", retryable=status in RETRYABLE, status=status,
                            retry_after=retry_after(headers))
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"TimeoutException", "ReadTimeout", "ConnectTimeout", "TimeoutError"}:
        return BackendError(f"timed out ({type(err).__name__})", retryable=True)
    if names & {"ConnectError", "NetworkError", "RemoteProtocolError", "NoResponseError", "TransportError"}:
        return BackendError(f"connection failed: {redact(str(err))[:200]}", retryable=True)
    return err  # not an HTTP failure: a bug, let it surface


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After`` in seconds)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass  # an HTTP date: fall back to exponential backoff
    return None
