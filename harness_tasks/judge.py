"""A judge model rates (instruction, answer) pairs from 1 to 5: the judge-scored evaluation.

Any server with the Mistral / OpenAI chat-completions shape (the Mistral API, vLLM, llama.cpp) is
called through the ``mistralai`` SDK, with the project's one rubric (``prompts/rate_pair_*.j2``) read
by :func:`harness_tasks.judge_score.parse_score`. :func:`judge_pairs` judges a whole evaluation at
once, ``concurrency`` requests in flight (the lm-eval filter of ``instruct_judged`` hands it every
answer of a task together).

- Retries: 429 (honouring Retry-After), 5xx, timeouts and lost connections, with jittered
  exponential backoff (tenacity), up to ``max_retries`` times per request.
- A reply without a readable score is re-asked (the conversation continued with a reminder) up to
  ``REASKS`` times; then the pair is *unscored*, never given a default score.
- Cache: SQLite, keyed by the judge (server, model), the rubric's hash, the instruction and the
  answer. Evaluating the same answers again (another run of the same model, a second model that
  gives some of the same answers) never pays the judge twice. Unscored verdicts are cached too
  (the judge was paid and, at temperature 0, would answer the same); failed requests are not.
- Errors no request can survive (no key, a refused key, an unknown model, an unreachable server)
  raise one :class:`JudgeError` for the whole evaluation, with the key redacted.
- The key comes from ``MISTRAL_API_KEY`` (or ``judge_key_env``), else ``./.env``; it is only sent as
  the request header and never written to a document, the cache or a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

import prompts
from harness_tasks import secrets
from harness_tasks.judge_score import parse_score

DEFAULT_MODEL = "mistral-large-latest"
DEFAULT_URL = "https://api.mistral.ai"
PASS_SCORE = 4  # the curation threshold: pairs scored 4 or 5 are the ones fine-tuned on
SYSTEM, USER = "rate_pair_system", "rate_pair_user"
REASKS = 2
# Like datagen's re-prompt: the conversation goes on, so the judge keeps its reasoning and only adds the line.
REASK = ("Your reply did not end with a score I can read. Reply with only the final line, exactly in "
         "this form:\nScore: <1 to 5>")
PARAMS = {"temperature": 0.0, "max_tokens": 1024}  # a few sentences and the score line; 0: reproducible
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 120.0
# lm-eval's logger, so the summary line shows with lm-eval's own output
log = logging.getLogger("lm_eval.cotharness.judge")


class JudgeError(RuntimeError):
    """No judgement can succeed (missing or refused key, unknown model, unreachable server)."""


class _Retry(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status


@dataclass(frozen=True)
class JudgeConfig:
    """The judge as ``--metadata`` sets it (keys ``judge_<field>``); copied into every document,
    since the documents are what lm-eval hands the filter. Never holds the key itself."""

    model: str = DEFAULT_MODEL
    url: str = DEFAULT_URL
    cache: str = ""
    """SQLite file; "" = the user's cache dir (``$XDG_CACHE_HOME/cotharness``), "off" = no cache"""
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 6
    key_env: str = "MISTRAL_API_KEY"

    @classmethod
    def from_metadata(cls, metadata: dict) -> JudgeConfig:
        given = {k.removeprefix("judge_"): v for k, v in metadata.items() if k.startswith("judge_")}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise JudgeError(f"unknown judge option(s) {['judge_' + k for k in unknown]}; known: "
                             f"{['judge_' + k for k in known]}")
        values = {}
        for name, value in given.items():
            kind = type(known[name].default)
            if name == "cache" and value in (None, False):
                value = "off" if value is False else ""
            try:
                values[name] = kind(value)
            except (TypeError, ValueError):
                raise JudgeError(f"judge_{name}={value!r}: expected {kind.__name__}") from None
        config = cls(**values)
        bad = [f"judge_{name}={getattr(config, name)!r} must be {rule}" for name, rule, ok in (
            ("concurrency", ">= 1", config.concurrency >= 1), ("max_retries", ">= 0", config.max_retries >= 0),
            ("timeout", "> 0", config.timeout > 0)) if not ok]
        if bad:
            raise JudgeError("; ".join(bad))
        return config

    def doc_fields(self) -> dict:
        return {f"judge_{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_doc(cls, doc: dict) -> JudgeConfig:
        return cls(**{f.name: doc[f"judge_{f.name}"] for f in fields(cls)})

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/")

    def cache_path(self) -> Path | None:
        if self.cache == "off":
            return None
        if self.cache:
            return Path(self.cache).expanduser()
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(root) / "cotharness" / "judge.sqlite"


# --- the key: read from the environment, kept out of every message ---------------------------------

def api_key(config: JudgeConfig, env_file: str | Path = ".env") -> str | None:
    """The key from ``config.key_env`` or ``env_file``; required by the Mistral API, optional elsewhere
    (a local vLLM or llama.cpp server needs none)."""
    key = secrets.api_key(env_file, required=False, env_var=config.key_env)
    if key is None and urlsplit(config.endpoint).hostname == urlsplit(DEFAULT_URL).hostname:
        raise JudgeError(f"the judge {config.model} at {config.endpoint} needs an API key: set {config.key_env} "
                         f"(environment or {env_file}), or point judge_url at a server that needs none")
    return key


redact = secrets.redact


# --- the rubric and the cache ------------------------------------------------------------------------

def rubric_messages(instruction: str, answer: str) -> list[dict]:
    return [{"role": "system", "content": prompts.render(SYSTEM)},
            {"role": "user", "content": prompts.render(USER, instruction=instruction, response=answer)}]


def rubric_hash() -> str:
    """What decides a verdict besides the judge and the pair: both templates, the re-ask, the sampling."""
    parts = [prompts.template_path(n).read_text(encoding="utf-8") for n in (SYSTEM, USER)]
    return hashlib.sha256(json.dumps([*parts, REASK, PARAMS], sort_keys=True).encode()).hexdigest()


def cache_key(config: JudgeConfig, rubric: str, instruction: str, answer: str) -> str:
    payload = [config.endpoint, config.model, rubric, instruction, answer]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class Verdict:
    score: int | None
    """1-5, or None: unscored"""
    reply: str
    source: str
    """judge (asked now), cache (asked before) or empty (an empty answer: 1 by the rubric, no call)"""
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


class Cache:
    """Verdicts in SQLite: safe for several processes (data-parallel ranks) sharing one file."""

    def __init__(self, path: Path | None):
        self.db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread off: judge_pairs may run the requests in a helper thread (never two at once)
            self.db = sqlite3.connect(path, timeout=60, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, score INTEGER, "
                            "reply TEXT, attempts INTEGER, tokens_in INTEGER, tokens_out INTEGER, "
                            "model TEXT, created REAL)")

    def get(self, key: str) -> Verdict | None:
        if self.db is None:
            return None
        row = self.db.execute("SELECT score, reply, attempts FROM verdicts WHERE key = ?", (key,)).fetchone()
        return Verdict(row[0], row[1], "cache", row[2]) if row else None

    def put(self, key: str, verdict: Verdict, model: str) -> None:
        if self.db is not None:  # at once: a later failure keeps what was paid for
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (key, verdict.score, verdict.reply, verdict.attempts, verdict.tokens_in,
                                 verdict.tokens_out, model, time.time()))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


# --- the client --------------------------------------------------------------------------------------

def _sdk(config: JudgeConfig, key: str | None):
    import httpx2  # the HTTP client mistralai 3.x is built on
    from mistralai.client import Mistral
    from mistralai.client.utils.logger import NoOpLogger

    # one connection per request in flight (httpx keeps 20 by default); the SDK's debug logger prints
    # whole requests, so it stays off
    pool = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=config.concurrency,
                                                   max_keepalive_connections=config.concurrency))
    sdk = Mistral(api_key=key, server_url=config.endpoint, timeout_ms=int(config.timeout * 1000),
                  async_client=pool, debug_logger=NoOpLogger())
    return sdk, pool


def _classify(err: Exception, config: JudgeConfig) -> Exception:
    """An SDK or transport failure as _Retry (worth another try) or JudgeError (none can succeed)."""
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        body = redact(str(getattr(err, "body", "") or "")[:300])
        if status in RETRYABLE:
            headers = getattr(err, "headers", None) or {}
            return _Retry(f"HTTP {status}: {body}", _retry_after(headers), status)
        if status == 401:
            return JudgeError(f"the judge server {config.endpoint} refused the API key (401): check {config.key_env}")
        if status == 404:
            return JudgeError(f"the judge server {config.endpoint} does not know model {config.model!r} (404): {body}")
        return JudgeError(f"the judge server {config.endpoint} refused the request (HTTP {status}): {body}")
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"TimeoutException", "TimeoutError", "ConnectError", "NetworkError", "RemoteProtocolError",
                "NoResponseError", "TransportError"}:
        return _Retry(f"{type(err).__name__}: {redact(str(err))[:200]}")
    return err  # not an HTTP failure: a bug, let it surface


def _retry_after(headers) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(MAX_RETRY_AFTER, max(0.0, float(headers[name]) * scale)) if headers.get(name) else None
        except ValueError:
            continue  # an HTTP date: exponential backoff instead
    return None


def preflight(config: JudgeConfig) -> None:
    """Before any model generates: the key is there and the server answers (``GET /v1/models``, free),
    so a wrong setup fails in one line rather than after hours of generation."""
    from mistralai.client import Mistral
    from mistralai.client.utils.logger import NoOpLogger

    key = api_key(config)
    try:
        with Mistral(api_key=key, server_url=config.endpoint, timeout_ms=10_000, debug_logger=NoOpLogger()) as sdk:
            listed = sdk.models.list()
    except Exception as err:  # noqa: BLE001 - classified: a refused key or no server is fatal, others are fine
        status = getattr(err, "status_code", None)
        if status in (401, 403) or (status is None and isinstance(_classify(err, config), _Retry)):
            why = f"HTTP {status}" if status else f"{type(err).__name__}: {redact(str(err))[:200]}"
            raise JudgeError(f"the judge server {config.endpoint} cannot be used ({why})"
                             + (f": check {config.key_env}" if status else ": is it running?")) from None
        return  # e.g. a server without /v1/models (404): reachable, the first judgement will tell
    names = {n for m in getattr(listed, "data", None) or [] for n in [m.id, *(getattr(m, "aliases", None) or [])]}
    if names and config.model not in names:  # a warning only: llama.cpp serves any model name
        log.warning("judge model %r is not among the models %s lists: %s", config.model, config.endpoint,
                    sorted(names)[:20])


async def _complete(sdk, config: JudgeConfig, messages: list[dict], tally: Counter):
    from mistralai.client import models
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    kinds = {"system": models.SystemMessage, "user": models.UserMessage, "assistant": models.AssistantMessage}
    body = [kinds[m["role"]](content=m["content"]) for m in messages]

    def wait(state) -> float:
        after = getattr(state.outcome.exception(), "retry_after", None)
        return after if after is not None else wait_random_exponential(multiplier=0.5, max=30)(state)

    def count(state) -> None:
        tally["retries"] += 1

    try:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(config.max_retries + 1), wait=wait,
                                           retry=retry_if_exception_type(_Retry), before_sleep=count, reraise=True):
            with attempt:
                tally["requests"] += 1
                try:
                    return await sdk.chat.complete_async(model=config.model, messages=body, **PARAMS)
                except Exception as err:  # noqa: BLE001 - classified, never swallowed
                    raise _classify(err, config) from None
    except _Retry as err:
        hint = "lower judge_concurrency" if err.status == 429 else "is it up?"
        raise JudgeError(f"the judge server {config.endpoint} still fails after {config.max_retries} retries "
                         f"({err}); {hint}") from None


def _text(response) -> tuple[str, int, int]:
    content = response.choices[0].message.content if response.choices else ""
    if isinstance(content, list):  # content chunks (e.g. thinking + text): keep the text
        content = "".join(getattr(c, "text", "") or "" for c in content)
    usage = response.usage
    return (content or "", int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0))


async def _judge_one(sdk, config: JudgeConfig, instruction: str, answer: str, tally: Counter) -> Verdict:
    messages = rubric_messages(instruction, answer)
    verdict, replies = Verdict(None, "", "judge"), []
    while True:
        text, tokens_in, tokens_out = _text(await _complete(sdk, config, messages, tally))
        replies.append(text)
        verdict.attempts += 1
        verdict.tokens_in += tokens_in
        verdict.tokens_out += tokens_out
        verdict.score = parse_score(text)
        if verdict.score is not None or verdict.attempts > REASKS:
            break
        tally["reasks"] += 1
        messages = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": REASK}]
    verdict.reply = "\n\n[asked again]\n".join(replies)  # the judge's reasoning is in the first reply: keep it
    return verdict


async def _judge_all(config: JudgeConfig, key: str | None, todo: dict[str, tuple[str, str]], cache: Cache,
                     tally: Counter, done: dict[str, Verdict]) -> None:
    from tqdm import tqdm

    sdk, pool = _sdk(config, key)
    gate = asyncio.Semaphore(config.concurrency)
    bar = tqdm(total=len(todo), desc=f"judge {config.model}", unit="answer", disable=not todo)

    async def one(k: str, instruction: str, answer: str) -> None:
        async with gate:
            verdict = await _judge_one(sdk, config, instruction, answer, tally)
        cache.put(k, verdict, config.model)
        done[k] = verdict
        bar.update()

    tasks = [asyncio.ensure_future(one(k, *pair)) for k, pair in todo.items()]
    try:
        if tasks:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t.exception() for t in finished if t.exception()), None)
            if failed is not None:
                raise failed  # one error for the whole evaluation; the others are cancelled below
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()
        await pool.aclose()


def judge_pairs(pairs: list[tuple[str, str]], config: JudgeConfig) -> list[Verdict]:
    """A verdict per (instruction, answer), in order: from the cache, by rule (empty answers), or asked."""
    rubric, tally = rubric_hash(), Counter()
    keys = [cache_key(config, rubric, i, a) for i, a in pairs]
    cache = Cache(config.cache_path())
    try:
        done: dict[str, Verdict] = {}
        todo: dict[str, tuple[str, str]] = {}
        for k, (instruction, answer) in zip(keys, pairs, strict=True):
            if not answer.strip():
                done[k] = Verdict(1, "", "empty")  # the rubric's 1 for an empty answer, without paying for it
            elif k not in done and k not in todo:
                cached = cache.get(k)
                if cached is not None:
                    done[k] = cached
                else:
                    todo[k] = (instruction, answer)
        if todo:
            key = api_key(config)
            _run(_judge_all(config, key, todo, cache, tally, done))
    finally:
        cache.close()
    verdicts = [done[k] for k in keys]
    sources = Counter(v.source for v in verdicts)
    log.info("judge %s at %s: %d answers (%d asked, %d from the cache, %d empty); %d requests, %d re-asks, "
             "%d retries; %d unscored; %d tokens in, %d out", config.model, config.endpoint, len(pairs),
             sources["judge"], sources["cache"], sources["empty"], tally["requests"], tally["reasks"],
             tally["retries"], sum(v.score is None for v in verdicts),
             sum(v.tokens_in for v in done.values() if v.source == "judge"),
             sum(v.tokens_out for v in done.values() if v.source == "judge"))
    return verdicts


def _run(coro) -> None:
    """``asyncio.run``, also from code that already runs an event loop (e.g. a notebook): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    errors: list[BaseException] = []

    def target():
        try:
            asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)

    thread = threading.Thread(target=target, name="judge")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
