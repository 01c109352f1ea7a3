"""Run a stage over its rows: resumable, rate-limited, retried, re-prompted, budgeted.

1. ``plan``: every input row gets its rendered request and that request's hash. Rows already in the
   output with the same hash are skipped (failed ones too, unless ``retry_failed``); rows made by a
   different request (the prompt, model, parameters or server changed) stop the run unless
   ``redo_changed``, so two recipes are never mixed in one file.
2. ``run_live``: ``concurrency`` workers send requests through the backend; tenacity retries 429s
   (honouring Retry-After), 5xx, timeouts and lost connections with jittered exponential backoff;
   aiolimiter keeps requests and tokens per minute under the limits. An answer that is not valid
   JSON for the stage's schema (or that a free-text stage's reader refuses) is re-prompted with what
   was wrong, or re-asked (``Stage.resample``), up to ``max_reprompts`` times; then the row is
   recorded as failed, with the reason and the last reply. Persistent 429s, refused keys and
   unreachable servers stop the run instead of failing every row.
3. Every finished row is appended to the output at once; ``max_cost`` reserves each request's
   worst case before sending it, so the run stops before spending more than allowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from datagen.answers import InvalidAnswer, validate
from datagen.backends.base import Backend, BackendError, ChatRequest, FatalBackendError, request_hash
from datagen.pricing import Price, estimate_tokens
from datagen.stages import Stage
from datagen.store import JsonlStore, row_key
from harness_tasks.secrets import redact

console = Console(stderr=True)
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped (and counted as one more retry)
REPROMPT = "Your reply could not be used: {error}. Reply again with only the corrected JSON object."
MAX_KEPT_REPLY = 4000  # characters of a failed row's last reply kept in its meta


@dataclass
class Options:
    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    max_reprompts: int = 2
    max_retries: int = 6
    max_cost: float | None = None
    retry_failed: bool = False
    redo_changed: bool = False
    backoff_max: float = 30.0


@dataclass
class Item:
    row: dict
    request: ChatRequest
    hash: str


@dataclass
class Tally:
    """What this invocation did; the closing summary and the manifest are made from it."""
    rows: int = 0
    not_selected: int = 0
    done_before: int = 0
    failed_before: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0
    reprompts: int = 0
    retries: int = 0
    repaired: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None

    @property
    def not_run(self) -> int:
        return self.pending - self.done - self.failed


class ChangedRequestsError(Exception):
    pass


class BudgetExhausted(Exception):
    pass


def plan(stage: Stage, rows: list[dict], store: JsonlStore, endpoint: str, model: str,
         response_format: dict | None, params: dict, options: Options, tally: Tally) -> list[Item]:
    """The rows that still need a request, in input order; counts the others in ``tally``."""
    pending, changed = [], []
    tally.rows = len(rows)
    for row in rows:
        if not stage.wanted(row):
            tally.not_selected += 1
            continue
        request = ChatRequest(model, stage.messages(row), response_format, params)
        h = request_hash(request, endpoint)
        previous = (store.rows.get(row_key(row)) or {}).get("meta", {}).get(stage.name)
        if previous and previous.get("request_hash") != h:
            changed.append(row_key(row))
            if not options.redo_changed:
                continue
        elif previous and previous.get("status") == "ok":
            tally.done_before += 1
            continue
        elif previous and not options.retry_failed:
            tally.failed_before += 1
            continue
        pending.append(Item(row, request, h))
    if changed and not options.redo_changed:
        raise ChangedRequestsError(
            f"{store.path}: {len(changed)} row(s) were made by a different request (the prompt, model, "
            f"parameters or server changed), e.g. id {changed[0]!r}; write to a new --out, or pass "
            "--redo-changed to replace them")
    tally.pending = len(pending)
    return pending


class Recorder:
    """Turns answers and failures into output rows, appends them and counts them."""

    def __init__(self, stage: Stage, store: JsonlStore, backend_name: str, tally: Tally, price: Price | None,
                 on_row: Callable[[], None] = lambda: None):
        self.stage, self.store, self.backend_name, self.tally, self.price = stage, store, backend_name, tally, price
        self.on_row = on_row

    def answer(self, item: Item, text: str):
        """The validated answer in ``text`` for ``item``'s row; raises InvalidAnswer."""
        if self.stage.read is not None:  # a free-text reply, e.g. a judge's reasoning ending in "Score: N"
            answer, repaired = self.stage.read(text), False
        else:
            answer, repaired = validate(text, self.stage.answer_model)
        self.stage.check(item.row, answer)
        return answer, repaired

    def answered(self, turns: dict, completion) -> float:
        """Count an answer in the row's ``turns`` and in the tally; returns what it cost."""
        turns["attempts"] += 1
        turns["tokens_in"] += completion.tokens_in
        turns["tokens_out"] += completion.tokens_out
        self.tally.tokens_in += completion.tokens_in
        self.tally.tokens_out += completion.tokens_out
        cost = self.price.cost(completion.tokens_in, completion.tokens_out) if self.price else 0.0
        self.tally.cost += cost
        return cost

    def invalid(self, item: Item, request: ChatRequest, completion, error: InvalidAnswer, turns: dict,
                max_reprompts: int) -> ChatRequest | None:
        """The re-prompt after an invalid answer, or None once the row is recorded as failed."""
        if turns["reprompts"] >= max_reprompts:
            self.failed(item, f"no valid answer in {turns['attempts']} tries; last: {error}", turns, completion.model,
                        reply=completion.text)
            return None
        turns["reprompts"] += 1
        self.tally.reprompts += 1
        if self.stage.resample:  # the first prompt again; a new seed, or a seeded sampler repeats its answer
            seed = item.request.params.get("random_seed")
            params = item.request.params if seed is None else {**item.request.params,
                                                                "random_seed": seed + turns["reprompts"]}
            return ChatRequest(item.request.model, item.request.messages, item.request.response_format, params)
        return request.reprompt(completion.text, (self.stage.reprompt or REPROMPT).format(error=error))

    def ok(self, item: Item, answer, turns: dict, model: str | None, repaired: bool) -> None:
        self.tally.done += 1
        self.tally.repaired += repaired
        self._write(item, self.stage.result(item.row, answer), "ok", None, turns, model, repaired)

    def failed(self, item: Item, error: str, turns: dict, model: str | None = None, reply: str | None = None) -> None:
        """Record the row as failed; ``reply``: the last invalid answer, kept for inspection."""
        error = redact(error)
        self.tally.failed += 1
        self.tally.failures.append((row_key(item.row), error))
        extra = {} if reply is None else {"last_reply": redact(reply)[:MAX_KEPT_REPLY]}
        self._write(item, self.stage.empty, "failed", error, turns, model, False, extra)

    def _write(self, item: Item, fields: dict, status: str, error: str | None, turns: dict, model: str | None,
               repaired: bool, extra: dict | None = None) -> None:
        """The input row, the stage's fields, and how they were made under ``meta.<stage>``."""
        meta = {"status": status, "error": error, "model": model or item.request.model, "backend": self.backend_name,
                "request_hash": item.hash, **turns, "repaired": repaired, **(extra or {})}
        row = {k: v for k, v in item.row.items() if k != "meta"}
        self.store.append({**row, **fields, "meta": {**item.row.get("meta", {}), self.stage.name: meta}})
        self.on_row()


def new_turns() -> dict:
    return {"attempts": 0, "reprompts": 0, "tokens_in": 0, "tokens_out": 0}


class Budget:
    """Reserve a request's worst-case cost before sending it; settle with the real cost after."""

    def __init__(self, limit: float | None, price: Price | None, spent: float = 0.0):
        self.limit, self.price, self.spent, self.reserved = limit, price, spent, 0.0

    def worst_case(self, request: ChatRequest) -> float:
        if self.price is None:
            return 0.0
        text = "".join(str(m["content"]) for m in request.messages)
        return self.price.cost(estimate_tokens(text), int(request.params.get("max_tokens") or 4096))

    def reserve(self, request: ChatRequest) -> float:
        amount = self.worst_case(request)
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            raise BudgetExhausted(f"--max-cost ${self.limit:g} reached (spent ${self.spent:.4f}; the next "
                                  f"request could cost up to ${amount:.4f})")
        self.reserved += amount
        return amount

    def settle(self, reserved: float, cost: float) -> None:
        self.reserved -= reserved
        self.spent += cost


async def run_live(items: list[Item], backend: Backend, recorder: Recorder, options: Options,
                   budget: Budget) -> None:
    tally = recorder.tally
    rpm = AsyncLimiter(options.rpm, 60) if options.rpm else None
    tpm = AsyncLimiter(options.tpm, 60) if options.tpm else None
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    def count_retry(state) -> None:
        tally.retries += 1

    def wait(state) -> float:
        after = getattr(state.outcome.exception(), "retry_after", None)
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
        return wait_random_exponential(multiplier=0.5, max=options.backoff_max)(state)

    async def call(request: ChatRequest):
        tokens = estimate_tokens("".join(str(m["content"]) for m in request.messages))
        tokens = min(options.tpm or 0, tokens + int(request.params.get("max_tokens") or 0))
        async for attempt in AsyncRetrying(
                stop=stop_after_attempt(options.max_retries + 1), wait=wait, before_sleep=count_retry,
                retry=retry_if_exception(lambda e: isinstance(e, BackendError) and e.retryable), reraise=True):
            with attempt:
                if rpm:  # every attempt is a request the server counts
                    await rpm.acquire()
                if tpm:
                    await tpm.acquire(tokens)
                return await backend.complete(request)

    async def one(item: Item) -> None:
        turns, request, model = new_turns(), item.request, None
        while request is not None:
            try:
                reserved = budget.reserve(request)
            except BudgetExhausted as err:  # the row is left for a later run with a larger budget
                tally.stopped = str(err)
                return
            try:
                completion = await call(request)
            except BackendError as err:
                budget.settle(reserved, 0.0)
                if err.retryable and (err.status == 429 or err.status is None):
                    raise FatalBackendError(
                        f"{err} (still failing after {options.max_retries} retries): "
                        + ("the server keeps rate-limiting; lower --concurrency or set --rpm/--tpm"
                           if err.status == 429 else f"is the server at {backend.endpoint} up?")) from None
                recorder.failed(item, f"{err}" + (f" after {options.max_retries} retries" if err.retryable else ""),
                                turns, model)
                return
            budget.settle(reserved, recorder.answered(turns, completion))
            model = completion.model
            try:
                answer, repaired = recorder.answer(item, completion.text)
            except InvalidAnswer as err:
                request = recorder.invalid(item, request, completion, err, turns, options.max_reprompts)
                continue
            recorder.ok(item, answer, turns, model, repaired)
            return

    fatal: list[FatalBackendError] = []

    async def worker() -> None:
        # After a stop (budget reached, or an error no request can survive) the rows in flight
        # finish and are saved; no new row starts.
        while not queue.empty() and tally.stopped is None and not fatal:
            try:
                await one(queue.get_nowait())
            except FatalBackendError as err:
                fatal.append(err)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(options.concurrency, len(items))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if fatal:
        raise fatal[0]


def progress_bar(stage: str, total: int) -> tuple[Progress, Callable[[Tally], None]]:
    progress = Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        console=console, transient=False)
    task = progress.add_task(stage, total=total, info="")

    def update(tally: Tally) -> None:
        info = f"failed {tally.failed} · re-prompts {tally.reprompts} · retries {tally.retries}"
        progress.update(task, completed=tally.done + tally.failed, info=info + f" · ${tally.cost:.4f}")

    return progress, update


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 2)
