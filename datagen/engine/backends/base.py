"""What every teacher backend speaks: a chat request in, a completion (text + token counts) out.

A request is hashed (model, messages, response format, sampling parameters and the endpoint that
answers it), and every output row records that hash: a rerun recognises finished rows, and a
changed prompt, model or server is noticed instead of being mixed into the same file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

from harness_tasks.errors import UserError


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[dict, ...]
    response_format: dict | None = None
    params: dict = field(default_factory=dict)
    """temperature, top_p, max_tokens, random_seed: whatever the backend passes on"""

    def body(self) -> dict:
        """The chat-completions request body (the shape the Mistral and OpenAI APIs take)."""
        body = {"model": self.model, "messages": [dict(m) for m in self.messages], **self.params}
        if self.response_format is not None:
            body["response_format"] = self.response_format
        return body

    def reprompt(self, answer: str, message: str) -> ChatRequest:
        """The same conversation, continued: the model's invalid answer, then what was wrong with it."""
        return ChatRequest(self.model, (*self.messages, {"role": "assistant", "content": answer},
                                        {"role": "user", "content": message}), self.response_format, self.params)


def request_hash(request: ChatRequest, endpoint: str) -> str:
    """sha256 of what decides the answer: the request body and who answers it."""
    payload = json.dumps({"endpoint": endpoint, **request.body()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    model: str | None = None
    """the model that answered, as the server names it"""


class BackendError(Exception):
    """A request that failed. ``retryable``: worth trying again (429, 5xx, timeouts, lost connections)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after


class FatalBackendError(UserError):
    """No request can succeed (bad key, unknown model, unreachable server): the run stops, rows are kept.
    A UserError: whoever runs the stage (a datagen command, a study) says it in one line."""


class Backend(Protocol):
    name: str
    endpoint: str
    """who answers (server URL, or the local model and adapter): part of every request hash"""

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...
