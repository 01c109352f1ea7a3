"""The loopback Mistral stand-in, driven through the real mistralai SDK over real HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import httpx2
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.models import ChatCompletionRequest, ChatCompletionResponse
from mistralai.client.utils import BackoffStrategy, RetryConfig
from mistralai.extra.batch import BatchClient, BatchInput, BatchRequestError

from conftest import REPO
from loopback_server import FAULTS, LoopbackServer, Reply, break_json

MODEL = "mistral-small-latest"


def ask(client: Mistral, text: str, **kw):
    return client.chat.complete(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def content(resp) -> str:
    return resp.choices[0].message.content


def test_sync_chat_echo_usage_and_keep_alive():
    with LoopbackServer() as srv:
        client = Mistral(api_key="sk-test", server_url=srv.url)
        for i in range(5):
            resp = ask(client, f"hello {i}", temperature=0.0, max_tokens=64, random_seed=1)
            assert json.loads(content(resp)) == {"echo": f"hello {i}"}
        assert resp.model == MODEL and resp.choices[0].finish_reason == "stop"
        assert resp.usage.prompt_tokens == len("hello 4") // 4 + 1
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        stats = srv.stats()
        assert stats["requests"] == 5 and stats["by_status"] == {200: 5} and stats["keys_seen"] == 5
        assert stats["connections"] == 1  # one keep-alive connection served all five
        assert srv.auth_headers == {"Bearer sk-test"}


def test_async_chat_concurrent():
    # Each reply waits until 64 requests are inside the server at once: passes only if the server
    # serves them concurrently (and sleeps the latency outside any lock), with no timing assertion.
    barrier = threading.Barrier(64, timeout=20)

    def responder(body):
        barrier.wait()
        return json.dumps({"echo": body["messages"][-1]["content"]})

    with LoopbackServer(responder=responder, latency=0.2) as srv:
        client = Mistral(api_key="k", server_url=srv.url)

        async def many(n):
            return await asyncio.gather(*(client.chat.complete_async(
                model=MODEL, messages=[{"role": "user", "content": f"q{i}"}]) for i in range(n)))

        replies = asyncio.run(many(64))
        assert [json.loads(content(r))["echo"] for r in replies] == [f"q{i}" for i in range(64)]
        assert srv.stats()["max_in_flight"] == 64


def test_429_has_retry_after_and_the_retry_succeeds():
    with LoopbackServer(faults={"429": 1.0}, retry_after=0.2) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        with pytest.raises(SDKError) as err:
            ask(client, "rate me")
        assert err.value.status_code == 429 and err.value.headers["retry-after"] == "0.2"
        assert json.loads(err.value.body)["type"] == "rate_limited"
        assert json.loads(content(ask(client, "rate me"))) == {"echo": "rate me"}  # attempt 2 is clean
        assert srv.attempts("rate me") == 2
        assert srv.stats()["by_status"] == {429: 1, 200: 1} and srv.stats()["faults"] == {"429": 1}


def test_sdk_retry_config_honours_retry_after():
    with LoopbackServer(faults={"429": 1.0}, retry_after=0.1) as srv:
        retries = RetryConfig("backoff", BackoffStrategy(50, 500, 1.5, 5000), False)
        client = Mistral(api_key="k", server_url=srv.url, retry_config=retries)
        assert json.loads(content(ask(client, "x"))) == {"echo": "x"}
        assert srv.stats()["by_status"] == {429: 1, 200: 1}


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(status):
    with LoopbackServer(faults={str(status): 1.0}) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        with pytest.raises(SDKError) as err:
            ask(client, "boom")
        assert err.value.status_code == status
        ask(client, "boom")


def test_markers_fault_every_attempt():
    with LoopbackServer() as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        for _ in range(3):
            with pytest.raises(SDKError) as err:
                ask(client, "ALWAYS_500 please")
            assert err.value.status_code == 500
            with pytest.raises(SDKError) as err:
                ask(client, "ALWAYS_400 please")
            assert err.value.status_code == 400
            with pytest.raises(json.JSONDecodeError):
                json.loads(content(ask(client, "ALWAYS_BROKEN please")))


def test_slow_reply_times_out_the_client():
    with LoopbackServer(faults={"slow": 1.0}, slow_seconds=2.0) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        with pytest.raises(httpx2.TimeoutException):
            ask(client, "slowly", timeout_ms=300)
        assert json.loads(content(ask(client, "slowly", timeout_ms=5000))) == {"echo": "slowly"}


def test_content_faults_and_reprompt_keeps_the_key():
    with LoopbackServer(faults={"broken_json": 1.0}) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        first = [{"role": "user", "content": "give json"}]
        bad = content(client.chat.complete(model=MODEL, messages=first))
        with pytest.raises(json.JSONDecodeError):
            json.loads(bad)
        # A re-prompt appends to the conversation; the first user message (the key) is unchanged.
        again = first + [{"role": "assistant", "content": bad}, {"role": "user", "content": "fix it"}]
        assert json.loads(content(client.chat.complete(model=MODEL, messages=again))) == {"echo": "fix it"}
        assert srv.attempts("give json") == 2
    with LoopbackServer(faults={"wrong_schema": 1.0}) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        assert json.loads(content(ask(client, "q"))) == {"answer": "I think so"}
        assert json.loads(content(ask(client, "q"))) == {"echo": "q"}


def post(conn: http.client.HTTPConnection, text: str) -> int:
    """A bare chat request (the SDK spends ~10 ms of CPU per call; this sweep needs hundreds)."""
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": MODEL, "messages": [
        {"role": "user", "content": text}]}), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def test_faults_are_deterministic_and_follow_the_probabilities():
    texts = [f"item {i}" for i in range(300)]

    def sweep(fault_attempts, passes):
        """Status of every text on each pass over them, against a fresh server."""
        with LoopbackServer(faults={"429": 0.3, "500": 0.2}, fault_attempts=fault_attempts) as srv:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port)
            return [{t: post(conn, t) for t in texts} for _ in range(passes)], srv.stats()

    (first, retry), stats = sweep(1, 2)
    codes = list(first.values())
    assert 50 < codes.count(429) < 130 and 25 < codes.count(500) < 100 and codes.count(200) > 100
    assert stats["faults"] == {"429": codes.count(429), "500": codes.count(500)}
    assert retry == dict.fromkeys(texts, 200)  # attempt 2 never faults
    assert sweep(1, 1)[0] == [first]  # same keys, same faults, on a fresh server
    assert sweep(2, 3)[0] == [first, first, retry]  # fault_attempts=2: attempts 1 and 2 fault alike
    assert sweep(0, 1)[0] == [retry]  # fault_attempts=0: nothing faults
    assert set(FAULTS) == {"429", "500", "503", "slow", "broken_json", "wrong_schema"}
    with pytest.raises(ValueError):
        LoopbackServer(faults={"timeout_then_ok": 1.0})


def test_break_json_never_parses():
    for text in ['{"a": "b"}', '{"a": {"b": [1, 2]}}', "42", '"s"', "plain text", "{}"]:
        with pytest.raises(ValueError):
            json.loads(break_json(text))


def test_responder_and_reply():
    def responder(body):
        if "teapot" in body["messages"][-1]["content"]:
            raise Reply(418, {"object": "error", "message": "short and stout"}, {"X-Why": "tea"})
        return f"{body['model']}|{body.get('temperature')}|{body['response_format']['type']}"

    with LoopbackServer(responder=responder) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        resp = ask(client, "hi", temperature=0.5, response_format={"type": "json_object"})
        assert content(resp) == f"{MODEL}|0.5|json_object"
        with pytest.raises(SDKError) as err:
            ask(client, "teapot", response_format={"type": "text"})
        assert err.value.status_code == 418 and err.value.headers["x-why"] == "tea"


def wait_status(client: Mistral, job_id: str, status: str):
    """Poll (bounded) until the job reaches status; returns the job either way, for the caller to check."""
    for _ in range(250):
        job = client.batch.jobs.get(job_id=job_id)
        if job.status == status:
            break
        time.sleep(0.02)
    return job


def _lines(payload: dict[str, str]) -> BatchInput:
    return BatchInput.from_payload({
        cid: ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": text}])
        for cid, text in payload.items()})


def chat_batch(client: Mistral) -> BatchClient:
    return BatchClient(client, endpoint="/v1/chat/completions", response_body_type=ChatCompletionResponse)


def test_batch_lifecycle_with_per_line_failures():
    payload = {"ok": "fine", "five": "ALWAYS_500", "four": "ALWAYS_400", "broken": "ALWAYS_BROKEN x"}
    with LoopbackServer(batch_step_seconds=0.01, hold_batches=True) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        batch = chat_batch(client)

        async def run():
            source = await batch.upload(_lines(payload))
            handle = await batch.create(source, model=MODEL, metadata={"run": "t1"})
            assert handle.status == "QUEUED" and handle.job.total_requests == 4
            assert (await asyncio.to_thread(wait_status, client, handle.id, "RUNNING")).status == "RUNNING"
            for _ in range(5):  # held: stays RUNNING and does not progress
                await asyncio.sleep(0.05)
                handle = await batch.get(handle.id)
                assert handle.status == "RUNNING" and handle.job.completed_requests == 0
            srv.hold_batches.clear()
            handle = await batch.wait(handle, poll_interval_seconds=0.05)
            return handle, await batch.output(handle), await batch.error_output(handle)

        handle, output, errors = asyncio.run(run())
        job = handle.job
        assert (job.status, job.total_requests, job.completed_requests) == ("SUCCESS", 4, 4)
        assert (job.succeeded_requests, job.failed_requests) == (2, 2)
        assert set(output.responses) == {"ok", "broken"} and not output.request_errors
        assert json.loads(content(output.responses["ok"])) == {"echo": "fine"}
        with pytest.raises(json.JSONDecodeError):
            json.loads(content(output.responses["broken"]))
        failed = {e.custom_id: e for e in errors.request_errors}
        assert {cid: e.status_code for cid, e in failed.items()} == {"five": 500, "four": 400}
        assert all(isinstance(e, BatchRequestError) and e.error["message"] for e in failed.values())
        assert client.batch.jobs.list(metadata={"run": "t1"}).total == 1
        assert client.batch.jobs.list(metadata={"run": "other"}).total == 0
        assert client.files.retrieve(file_id=job.output_file).num_lines == 2
        assert client.files.delete(file_id=job.output_file).deleted
        stats = srv.stats()
        assert stats["batch_jobs_created"] == 1 and stats["files_uploaded"] == 1 and stats["batch_lines"] == 4
        assert stats["requests"] == 0  # batch lines are not live chat requests


def test_batch_inline_faults_and_cancel():
    with LoopbackServer(faults={"429": 1.0}) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        batch = chat_batch(client)

        async def run():
            first = await batch.create(_lines({"a": "one", "b": "two"}))
            first = await batch.output(first, poll_interval_seconds=0.05)
            second = await batch.output(await batch.create(_lines({"a": "one"})), poll_interval_seconds=0.05)
            return first, second

        first, second = asyncio.run(run())
        assert not first.responses  # attempt 1 of each key faults; its error lines are in the error file
        assert set(second.responses) == {"a"}  # resubmitting a failed line is attempt 2: clean
        srv.hold_batches.set()
        line = {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "c"}]}}
        job = client.batch.jobs.create(endpoint="/v1/chat/completions", model=MODEL, requests=[line])
        assert client.batch.jobs.cancel(job_id=job.id).status == "CANCELLATION_REQUESTED"
        job = wait_status(client, job.id, "CANCELLED")
        assert job.status == "CANCELLED" and job.completed_requests == 0


def test_stats_endpoint_and_reset():
    with LoopbackServer(faults={"500": 1.0}) as srv:
        client = Mistral(api_key="k", server_url=srv.url)
        with pytest.raises(SDKError):
            ask(client, "s")
        stats = json.load(urllib.request.urlopen(f"{srv.url}/stats"))
        assert stats["requests"] == 1 and stats["by_status"] == {"500": 1} and stats["faults"] == {"500": 1}
        srv.reset_stats()
        assert srv.stats()["requests"] == 0 and srv.attempts("s") == 0


def test_subprocess_mode(tmp_path):
    # The responder module is found on PYTHONPATH here; tests/ itself is put on sys.path by the server.
    shouty = ("from loopback_server import Reply\n\n\ndef respond(body):\n"
              "    if body['messages'][-1]['content'] == 'teapot':\n        raise Reply(418)\n"
              "    return body['messages'][-1]['content'].upper()\n")
    (tmp_path / "shouty.py").write_text(shouty)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "loopback_server.py"), "--port", "0",
                             "--faults", '{"503": 1.0}', "--responder", "shouty:respond", "--hold-batches"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        word, port = proc.stdout.readline().split()
        assert word == "PORT"
        client = Mistral(api_key="k", server_url=f"http://127.0.0.1:{port}")
        with pytest.raises(SDKError) as err:
            ask(client, "hey")
        assert err.value.status_code == 503
        assert content(ask(client, "hey")) == "HEY"
        with pytest.raises(SDKError):  # attempt 1 is the 503 fault; attempt 2 reaches the responder
            ask(client, "teapot")
        with pytest.raises(SDKError) as err:
            ask(client, "teapot")
        assert err.value.status_code == 418  # the responder's Reply is the server's Reply class
        base = f"http://127.0.0.1:{port}"
        stats = json.load(urllib.request.urlopen(f"{base}/stats"))
        assert stats["by_status"] == {"503": 2, "200": 1, "418": 1}
        assert json.load(urllib.request.urlopen(f"{base}/attempts?text=hey")) == {"attempts": 2}
        # --hold-batches: a job stays RUNNING until POST /control/release.
        line = {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "b"}]}}
        job = client.batch.jobs.create(endpoint="/v1/chat/completions", model=MODEL, requests=[line])
        assert wait_status(client, job.id, "RUNNING").status == "RUNNING"
        time.sleep(0.1)
        assert client.batch.jobs.get(job_id=job.id).completed_requests == 0
        urllib.request.urlopen(urllib.request.Request(f"{base}/control/release", method="POST"))
        job = wait_status(client, job.id, "SUCCESS")
        assert job.status == "SUCCESS" and job.failed_requests == 1  # its 503 fault became a failed line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
