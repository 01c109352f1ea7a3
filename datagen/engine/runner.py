"""Run a stage over its rows: resumable, rate-limited, retried, re-prompted, budgeted.

1. ``plan``: every input row gets its rendered request and that request's hash. Rows already in the
   output with the same hash are not asked again (failed ones too, unless ``retry_failed``), but are
   refreshed from the input when a field outside the request changed (a corrected gold label, a new
   column), with the stage's derived fields (thoughts' ``correct``) worked out again; rows made by a
   different request (the prompt, model, parameters or server changed) stop the run unless
   ``redo_changed``, so two recipes are never mixed in one file. A finished row the stage no longer
   wants (reflect, once a gold fix made the teacher right) is dropped from the output, and named.
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
import json
import signal
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

from datagen.engine.answers import InvalidAnswer, validate
from datagen.engine.backends.base import Backend, BackendError, ChatRequest, FatalBackendError, request_hash
from datagen.engine.pricing import Price, estimate_tokens
from datagen.engine.stage import Stage
from datagen.engine.store import JsonlStore, row_key
from harness_tasks.errors import UserError
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
    refreshed: int = 0
    """of those done or failed before: rows rewritten from their changed input, with no request"""
    dropped: list[str] = field(default_factory=list)
    """ids of finished rows the stage no longer wants, taken out of the output"""
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

    @property
    def failed_rows(self) -> int:
        """Rows of this input the stage wants that are failed in the output now (this run's and earlier)."""
        return self.failed + self.failed_before


class ChangedRequestsError(UserError):
    pass


class BudgetExhausted(Exception):
    pass


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    """rows to ask about, in input order"""
    refreshed: list[dict] = field(default_factory=list)
    """finished rows rebuilt from their changed input; written without a request"""
    dropped: list[str] = field(default_factory=list)
    """ids of finished rows the stage no longer wants"""


def plan(stage: Stage, rows: list[dict], store: JsonlStore, endpoint: str, model: str,
         response_format: dict | None, params: dict, options: Options, tally: Tally) -> Plan:
    """What each input row needs: a request, a refresh from its input, nothing, or to be dropped."""
    out, changed = Plan(), []
    tally.rows = len(rows)
    for row in rows:
        stored = store.rows.get(row_key(row))
        previous = (stored or {}).get("meta", {}).get(stage.name)
        if not stage.wanted(row):
            tally.not_selected += 1
            if previous:  # its answer was to a question this input no longer asks
                out.dropped.append(row_key(row))
            continue
        request = ChatRequest(model, stage.messages(row), response_format, params)
        h = request_hash(request, endpoint)
        if previous and previous.get("request_hash") != h:
            changed.append(row_key(row))
            if not options.redo_changed:
                continue
        elif previous and (previous.get("status") == "ok" or not options.retry_failed):
            if previous.get("status") == "ok":
                tally.done_before += 1
            else:
                tally.failed_before += 1
            current = refreshed(stage, row, stored)
            if current is not None:
                out.refreshed.append(current)
            continue
        out.items.append(Item(row, request, h))
    if changed and not options.redo_changed:
        raise ChangedRequestsError(
            f"{store.path}: {len(changed)} row(s) were made by a different request (the prompt, model, "
            f"parameters or server changed), e.g. id {changed[0]!r}; write to a new --out, or pass "
            "--redo-changed to replace them")
    tally.pending, tally.refreshed, tally.dropped = len(out.items), len(out.refreshed), list(out.dropped)
    return out


def output_row(stage: Stage, row: dict, fields: dict, meta: dict) -> dict:
    """The input row, the stage's fields and those derived from both, and how they were made under
    ``meta.<stage>``."""
    plain = {k: v for k, v in row.items() if k != "meta"}
    fields = {**fields, **stage.derived({**plain, **fields})}
    return {**plain, **fields, "meta": {**row.get("meta", {}), stage.name: meta}}


def refreshed(stage: Stage, row: dict, stored: dict) -> dict | None:
    """``stored`` as the input ``row`` makes it now, or None when that is what it already is.

    The request is unchanged, so the answer (the fields ``stage.empty`` names) and how it was made
    stand; everything else is the input's now, and the derived fields are worked out again."""
    current = output_row(stage, row, {k: stored.get(k) for k in stage.empty}, stored["meta"][stage.name])
    return None if _canonical(current) == _canonical(stored) else current


def _canonical(row: dict) -> str:
    """One text per content: the stored row went through JSON (tuples are lists, key order may differ)."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


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
        """Count an answer in the row's ``turns`` and in the tally (whose ``cost`` the budget reads)."""
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
        self.store.append(output_row(self.stage, item.row, fields, meta))
        self.on_row()


def new_turns() -> dict:
    return {"attempts": 0, "reprompts": 0, "tokens_in": 0, "tokens_out": 0}


class Budget:
    """Reserve a request's worst-case cost before sending it; release the reservation once it is answered.

    What was spent is the tally's ``cost`` (each answer's, added by the recorder): the one figure the
    summary, the manifest and the stop message give."""

    def __init__(self, limit: float | None, price: Price | None, tally: Tally):
        self.limit, self.price, self.tally, self.reserved = limit, price, tally, 0.0
        self.refused: tuple[float, float] | None = None
        """the first refused request's worst case, and what requests in flight held then"""

    def worst_case(self, request: ChatRequest) -> float:
        if self.price is None:
            return 0.0
        text = "".join(str(m["content"]) for m in request.messages)
        return self.price.cost(estimate_tokens(text), int(request.params.get("max_tokens") or 4096))

    def reserve(self, request: ChatRequest) -> float:
        amount = self.worst_case(request)
        if self.limit is not None and self.tally.cost + self.reserved + amount > self.limit:
            self.refused = self.refused or (amount, self.reserved)
            raise BudgetExhausted(self.reason())
        self.reserved += amount
        return amount

    def release(self, reserved: float) -> None:
        self.reserved -= reserved

    def reason(self) -> str:
        """Why the run stopped. Formed again when the run has ended: the requests in flight at the
        refusal are paid for after it, and the message must give what the summary gives."""
        amount, held = self.refused
        held = f", on top of ${held:.4f} reserved for the requests then in flight" if held else ""
        return (f"--max-cost ${self.limit:g} reached (spent ${self.tally.cost:.4f}; the next request could "
                f"have cost up to ${amount:.4f}{held})")


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
                budget.release(reserved)
                if err.retryable and (err.status == 429 or err.status is None):
                    raise FatalBackendError(
                        f"{err} (still failing after {options.max_retries} retries): "
                        + ("the server keeps rate-limiting; lower --concurrency or set --rpm/--tpm"
                           if err.status == 429 else f"is the server at {backend.endpoint} up?")) from None
                recorder.failed(item, f"{err}" + (f" after {options.max_retries} retries" if err.retryable else ""),
                                turns, model)
                return
            recorder.answered(turns, completion)
            budget.release(reserved)
            model = completion.model
            try:
                answer, repaired = recorder.answer(item, completion.text)
            except InvalidAnswer as err:
                request = recorder.invalid(item, request, completion, err, turns, options.max_reprompts)
                continue
            recorder.ok(item, answer, turns, model, repaired)
            return

    fatal: list[FatalBackendError] = []
    interrupts: list[int] = []

    async def worker() -> None:
        # After a stop (budget reached, Ctrl-C, or an error no request can survive) the rows in flight
        # finish and are saved; no new row starts.
        while not queue.empty() and tally.stopped is None and not fatal and not interrupts:
            try:
                await one(queue.get_nowait())
            except FatalBackendError as err:
                fatal.append(err)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(options.concurrency, len(items))))]

    def interrupt() -> None:
        # The first Ctrl-C lets the requests already sent finish and be saved: cancelling them would
        # pay for them again on the rerun. A second one stops at once.
        interrupts.append(1)
        if len(interrupts) == 1:
            console.print("stopping: the requests in flight finish and are saved (Ctrl-C again to stop at once)")
        else:
            for w in workers:
                w.cancel()

    handled = _on_sigint(interrupt)
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        if len(interrupts) > 1:
            raise KeyboardInterrupt from None
        raise
    finally:
        if handled:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if fatal:
        raise fatal[0]
    if interrupts:
        raise KeyboardInterrupt


def _on_sigint(handler: Callable[[], None]) -> bool:
    """``handler`` on SIGINT while the loop runs, where the platform allows it (the main thread of a
    Unix process); elsewhere Ctrl-C keeps Python's KeyboardInterrupt."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


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
