"""The Mistral Batch API: half the live price, answers within hours, and a run that can be killed.

Each round writes the pending requests as JSONL (``custom_id`` = row id), uploads them, creates one
job and records it in ``<out>.batch.json`` (first a token that the job carries in its metadata, then
its id), polls it and merges the answers into the same output rows the live backend writes. A killed
run finds its unmerged jobs in that file and re-attaches to them (``BatchClient.get``; by the token
when the kill came before the id was saved) instead of paying again. Invalid answers are re-prompted
and failed requests retried in the next round, each with only the rows that need it: re-running a
whole job would bill every request again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from datagen.engine.answers import InvalidAnswer
from datagen.engine.backends.base import BackendError, ChatRequest, FatalBackendError
from datagen.engine.backends.mistral import classify, client, close, completion_of
from datagen.engine.runner import Budget, BudgetExhausted, Item, Recorder, console, new_turns
from datagen.engine.store import row_key, sidecar
from harness_tasks.manifest import write_atomic
from harness_tasks.secrets import api_key, redact

CHAT_ENDPOINT = "/v1/chat/completions"
RUNNING = {"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"}


def state_path(out: Path) -> Path:
    return sidecar(out, "batch")


class BatchState:
    """``<out>.batch.json``: the jobs of this output and the conversations still open (rows that need
    a re-prompt or a retry), written atomically after every change."""

    def __init__(self, path: Path, stage: str):
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.jobs: list[dict] = data.get("jobs", [])
        self.open: dict[str, dict] = data.get("open", {})
        self.stage = data.get("stage", stage)

    def save(self) -> None:
        write_atomic(self.path, json.dumps({"stage": self.stage, "jobs": self.jobs, "open": self.open}, indent=1))

    def unmerged(self) -> list[dict]:
        return [j for j in self.jobs if not j.get("merged")]


async def run_batch(cfg, items: list[Item], recorder: Recorder, budget: Budget) -> None:
    from mistralai.client.models import ChatCompletionResponse
    from mistralai.extra.batch import BatchClient

    key = api_key(required=cfg.server_url is None)
    sdk = client(key, cfg.server_url, cfg.timeout)
    batches = BatchClient(sdk, endpoint=CHAT_ENDPOINT, response_body_type=ChatCompletionResponse)
    state = BatchState(state_path(cfg.out), cfg.stage)
    by_id = {row_key(i.row): i for i in items}
    options, tally = cfg.options, recorder.tally
    poll = float(cfg.backend_args.get("poll_interval", 30.0))
    finished: set[str] = set()
    try:
        for job in state.unmerged():  # a killed run's jobs: collect them, never submit them again
            if job["id"] is None and not await _find(sdk, job, state):
                continue
            console.print(f"re-attaching to batch job {job['id']} (round {job['round']})")
            await _collect(batches, job, state, by_id, finished, recorder, budget, options, poll)
        while tally.stopped is None:
            todo = [i for rid, i in by_id.items() if rid not in finished]
            if not todo:
                break
            job = await _submit(batches, cfg.model, todo, state, budget, tally)
            if job is None:
                break
            await _collect(batches, job, state, by_id, finished, recorder, budget, options, poll)
    except asyncio.CancelledError:
        pending = [j["id"] for j in state.unmerged() if j["id"]]
        if pending:
            console.print(f"[yellow]batch job(s) {', '.join(pending)} keep running on the server; rerun the same "
                          "command to collect them (they are not submitted again)")
        raise
    finally:
        await close(sdk)


def _request(item: Item, conversation: dict | None) -> ChatRequest:
    if not conversation:
        return item.request
    r = item.request
    return ChatRequest(r.model, tuple(conversation["messages"]), r.response_format, r.params)


async def _submit(batches, model: str, todo: list[Item], state: BatchState, budget: Budget, tally) -> dict | None:
    """Upload the pending requests that fit the budget as one job; recorded before anything else."""
    from mistralai.extra.batch import BatchInput

    lines, hashes, reserved = [], {}, 0.0
    for item in todo:
        rid = row_key(item.row)
        request = _request(item, state.open.get(rid))
        try:
            reserved += budget.reserve(request)
        except BudgetExhausted as err:
            tally.stopped = str(err)
            break
        body = {k: v for k, v in request.body().items() if k != "model"}  # the model is the job's
        lines.append(json.dumps({"custom_id": rid, "body": body}, ensure_ascii=False))
        hashes[rid] = item.hash
    if not lines:
        return None
    round_no = 1 + max((j["round"] for j in state.jobs), default=0)
    # Recorded before the job exists, with a token the job carries in its metadata: a run killed
    # between creating the job and saving its id finds it again by that token (see _find).
    job = {"id": None, "token": uuid.uuid4().hex, "round": round_no, "requests": hashes,
           "reserved_amount": reserved, "merged": False, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    state.jobs.append(job)
    state.save()
    try:
        uploaded = await batches.upload(BatchInput.from_jsonl_str("\n".join(lines)),
                                        file_name=f"{state.stage}-round{round_no}.jsonl")
        handle = await batches.create(uploaded, model=model, metadata={
            "cotharness_stage": state.stage, "round": str(round_no), "cotharness_token": job["token"]})
    except Exception as err:  # noqa: BLE001 - classified: fatal (key, model) or a transient failure
        raise _as_fatal(classify(err, model)) from None
    job["id"] = handle.id
    state.save()
    job["reserved"] = True  # in memory only: a re-attaching process holds no reservation for it
    console.print(f"batch job {handle.id}: {len(lines)} requests (round {round_no}); recorded in {state.path}")
    return job


async def _find(sdk, job: dict, state: BatchState) -> bool:
    """Find a job whose creation was not recorded (killed in between); forget it if it never began."""
    try:
        found = await sdk.batch.jobs.list_async(metadata={"cotharness_token": job["token"]})
    except Exception as err:  # noqa: BLE001
        raise _as_fatal(classify(err, "")) from None
    match = [j for j in found.data or [] if (j.metadata or {}).get("cotharness_token") == job["token"]]
    if match:
        job["id"] = match[0].id
    else:  # never created: its rows go into the next job
        state.jobs.remove(job)
    state.save()
    return bool(match)


async def _collect(batches, job: dict, state: BatchState, by_id: dict[str, Item], finished: set[str],
                   recorder: Recorder, budget: Budget, options, poll: float) -> None:
    """Wait for ``job``, then merge every answer into the output; rows to redo stay open."""
    handle = await _wait(batches, job, poll)
    outcomes = {}
    if handle.job.output_file:
        outcomes.update((await batches.output(handle)).results())
    errors = await batches.error_output(handle)
    if errors is not None:
        outcomes.update(errors.results())
    if job.pop("reserved", None) is not None:  # reserved by this process (a re-attached job's never was)
        budget.release(job["reserved_amount"])
    for rid, sent_hash in job["requests"].items():
        item = by_id.get(rid)
        if item is None or rid in finished or item.hash != sent_hash:
            continue  # finished before a kill, or its request has changed since: not this job's to merge
        conversation = state.open.setdefault(rid, {"messages": list(item.request.messages), "turns": new_turns(),
                                                   "failures": 0})
        conversation["turns"]["batch_job"] = job["id"]
        _merge(rid, item, outcomes.get(rid), handle.status, conversation, recorder, options, finished)
        if rid in finished:
            state.open.pop(rid, None)
    job["merged"], job["status"] = True, handle.status
    state.save()


def _merge(rid, item, outcome, status, conversation, recorder, options, finished) -> None:
    turns = conversation["turns"]
    if outcome is None or not hasattr(outcome, "choices"):  # a failed request, or none at all
        why = redact(str(getattr(outcome, "error", None) or f"no answer (job {status})"))[:300]
        code = getattr(outcome, "status_code", None)
        conversation["failures"] += 1
        if (code is not None and 400 <= code < 500 and code != 429) or conversation["failures"] > options.max_retries:
            recorder.failed(item, f"batch request failed {conversation['failures']} time(s): {why}", turns)
            finished.add(rid)
        else:
            recorder.tally.retries += 1
        return
    completion = completion_of(outcome)
    recorder.answered(turns, completion)  # its cost is in the tally, where the budget reads what was spent
    try:
        answer, repaired = recorder.answer(item, completion.text)
    except InvalidAnswer as err:
        request = recorder.invalid(item, _request(item, conversation), completion, err, turns, options.max_reprompts)
        if request is None:
            finished.add(rid)
        else:
            conversation["messages"] = list(request.messages)
        return
    recorder.ok(item, answer, turns, completion.model, repaired)
    finished.add(rid)


async def _wait(batches, job: dict, poll: float):
    """Poll until the job is done, showing its progress; a lost connection is retried, not fatal."""
    last = None
    while True:
        try:
            handle = await batches.get(job["id"])
        except Exception as err:  # noqa: BLE001
            failure = classify(err, "")
            if not getattr(failure, "retryable", False):
                raise _as_fatal(failure) from None
            await asyncio.sleep(poll)
            continue
        j = handle.job
        seen = (j.status, j.completed_requests)
        if seen != last:
            console.print(f"batch job {job['id']}: {j.status}, {j.completed_requests}/{j.total_requests} answered")
            last = seen
        if j.status not in RUNNING:
            return handle
        await asyncio.sleep(poll)


def _as_fatal(err: Exception) -> Exception:
    if isinstance(err, BackendError):
        return FatalBackendError(f"batch API: {err}")
    return err

