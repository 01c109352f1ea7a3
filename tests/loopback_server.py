"""A stand-in for the Mistral API on 127.0.0.1, with deterministic fault injection.

The real ``mistralai`` SDK talks to it over real HTTP (``Mistral(server_url=srv.url)``), so client code
(retries, timeouts, JSON repair, the batch lifecycle) is exercised end to end without the network.
Tests use it in-process (``with LoopbackServer(...) as srv``); the benchmark and the kill/resume tests
run it as a subprocess (``python tests/loopback_server.py``, which prints ``PORT <n>``).

Serves: POST /v1/chat/completions; POST /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content;
POST/GET /v1/batch/jobs, GET /v1/batch/jobs/{id}, POST /v1/batch/jobs/{id}/cancel. For tests driving a
subprocess: GET /stats, GET /attempts?text=<first user message>, POST /control/{hold,release,reset}
(hold/release batch progress, reset the stats).

Faults are keyed on sha256(first user message) and that key's attempt number, so they are the same on
every run and a client's retry (or a re-prompt that appends messages) of a faulted request succeeds.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FAULTS = ("429", "500", "503", "slow", "broken_json", "wrong_schema")  # fixed order of the cumulative draw
# First-user-message markers that fault every attempt (requests that can never succeed).
MARKERS = {"ALWAYS_BROKEN": "broken_json", "ALWAYS_500": "500", "ALWAYS_400": "400"}
ERRORS = {
    400: ("Invalid request", "invalid_request_error", "3000"),
    404: ("Not found", "invalid_request_error", "3001"),
    429: ("Requests rate limit exceeded", "rate_limited", "1300"),
    500: ("Internal server error", "internal_error", "5000"),
    503: ("Service unavailable", "service_unavailable", "5030"),
    504: ("Request timed out", "timeout", "5040"),
}
IN_FLIGHT = ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED")  # the statuses a cancel applies to
LIST_PARAMS = {"page", "page_size", "model", "agent_id", "metadata", "created_after", "created_by_me",
               "status", "order_by"}


class Reply(Exception):
    """Raised by a responder to send this HTTP reply (status, JSON body, headers) instead of a completion."""

    def __init__(self, status: int, body: dict | None = None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.headers = status, headers or {}
        self.body = body if body is not None else error_body(status)


def error_body(status: int) -> dict:
    message, kind, code = ERRORS.get(status, ("Error", "error", str(status)))
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def first_user(messages: list) -> str:
    return next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")


def default_responder(body: dict) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return json.dumps({"echo": users[-1].get("content") if users else None})


def break_json(text: str) -> str:
    """Damage JSON the way a model does: drop a quote and the final brace. Never valid JSON."""
    i = text.find('"', text.find(":") + 1) if ":" in text else -1
    broken = text[:i] + text[i + 1:] if i >= 0 else text
    j = broken.rfind("}")
    broken = broken[:j] + broken[j + 1:] if j >= 0 else broken
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return broken + "}"  # still parsed (e.g. a bare number): trailing junk always breaks it


class LoopbackServer:
    """The server; ``with LoopbackServer(...) as srv`` serves on ``srv.url`` from a daemon thread.

    ``responder(body) -> str`` gives the assistant content (or raises ``Reply``). ``stats()`` counts live chat
    ``requests`` and their HTTP ``by_status``; ``faults`` fired (live and batch); ``batch_lines`` answered;
    ``max_in_flight`` live chat requests; TCP ``connections`` accepted; ``keys_seen`` (live and batch).
    """

    def __init__(self, responder=None, latency: float = 0.0, faults: dict | None = None,
                 retry_after: float = 0.2, slow_seconds: float = 2.0, batch_step_seconds: float = 0.0,
                 fault_attempts: int = 1, hold_batches: bool = False, port: int = 0):
        self.responder = responder or default_responder
        self.latency, self.retry_after, self.slow_seconds = latency, retry_after, slow_seconds
        self.batch_step_seconds, self.fault_attempts = batch_step_seconds, fault_attempts
        self.faults = {name: float(p) for name, p in (faults or {}).items()}
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.hold_batches = threading.Event()  # while set (or assigned True), batch jobs sit in RUNNING
        if hold_batches:
            self.hold_batches.set()
        self._closed = False
        self.auth_headers: set[str] = set()
        self.files: dict[str, dict] = {}  # id -> {"meta": file object, "data": bytes}
        self.jobs: dict[str, dict] = {}
        self._ids = itertools.count(1)  # completion ids; next() on a count is atomic under the GIL
        self._lock = threading.Lock()  # guards counters and the two dicts above; never held while sleeping
        self.reset_stats()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.app = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closed = True  # lets held batch workers exit
        if self._thread is not None:  # shutdown() waits for serve_forever, so only if it ever ran
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- stats --
    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"requests": 0, "by_status": Counter(), "faults": Counter(), "in_flight": 0,
                           "max_in_flight": 0, "connections": 0, "batch_jobs_created": 0, "batch_lines": 0,
                           "files_uploaded": 0}
            self._attempts: Counter = Counter()

    def stats(self) -> dict:
        with self._lock:
            s = self._stats
            return dict(s, by_status=dict(s["by_status"]), faults=dict(s["faults"]),
                        keys_seen=len(self._attempts))

    def attempts(self, first_user_text: str) -> int:
        with self._lock:
            return self._attempts[hashlib.sha256(first_user_text.encode()).hexdigest()]

    # -- chat --
    def _fault_for(self, text: str) -> str | None:
        """Count this attempt for the text's key and return the fault it gets (None: answer normally)."""
        key = hashlib.sha256(text.encode()).hexdigest()
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
        for marker, fault in MARKERS.items():
            if marker in text:
                return fault
        if attempt > self.fault_attempts:
            return None
        # One draw per key (not per attempt), so which fault a key gets never depends on request order.
        draw, edge = random.Random(key).random(), 0.0
        for name in FAULTS:
            edge += self.faults.get(name, 0.0)
            if draw < edge:
                return name
        return None

    def answer(self, body: dict, live: bool = True) -> tuple[int, dict, dict]:
        """One chat completion -> (status, JSON body, extra headers); for live requests and batch lines."""
        messages = body.get("messages") or []
        fault = self._fault_for(first_user(messages))
        if fault:
            with self._lock:
                self._stats["faults"][fault] += 1
        if fault in ("400", "429", "500", "503"):
            headers = {"Retry-After": str(self.retry_after)} if fault == "429" else {}
            return int(fault), error_body(int(fault)), headers
        if fault == "slow":
            if not live:  # a batch line has no client to time out: report it as a timed-out request
                return 504, error_body(504), {}
            time.sleep(self.slow_seconds)
        try:
            text = self.responder(body)
        except Reply as r:
            return r.status, r.body, r.headers
        except Exception as e:  # a responder bug must show up as a 500, not hang a batch job
            traceback.print_exc()
            return 500, dict(error_body(500), message=f"responder failed: {e!r}"), {}
        text = text if isinstance(text, str) else json.dumps(text)  # a responder may return a dict
        if fault == "broken_json":
            text = break_json(text)
        elif fault == "wrong_schema":
            text = json.dumps({"answer": "I think so"})
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        completion = len(text) // 4 + 1
        message = {"role": "assistant", "content": text}
        return 200, {
            "id": f"cmpl-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "loopback",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }, {}

    # -- files --
    def add_file(self, data: bytes, filename: str, purpose: str = "batch", sample_type: str = "batch_request",
                 source: str = "upload") -> dict:
        meta = {"id": str(uuid.uuid4()), "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "sample_type": sample_type, "source": source,
                "num_lines": sum(1 for ln in data.splitlines() if ln.strip()),
                "mimetype": "application/jsonl"}
        with self._lock:
            self.files[meta["id"]] = {"meta": meta, "data": data}
        return meta

    # -- batch --
    def create_job(self, req: dict) -> dict:
        if req.get("endpoint") != "/v1/chat/completions":
            raise Reply(400, dict(error_body(400), message=f"unsupported endpoint {req.get('endpoint')!r}"))
        lines = [dict(r) for r in req.get("requests") or []]
        for fid in req.get("input_files") or []:
            if fid not in self.files:
                raise Reply(404, dict(error_body(404), message=f"no file {fid}"))
            lines += [json.loads(ln) for ln in self.files[fid]["data"].splitlines() if ln.strip()]
        job = {"id": str(uuid.uuid4()), "object": "batch", "input_files": list(req.get("input_files") or []),
               "endpoint": req["endpoint"], "model": req.get("model"), "metadata": req.get("metadata"),
               "errors": [], "status": "QUEUED", "created_at": int(time.time()), "started_at": None,
               "completed_at": None, "output_file": None, "error_file": None, "total_requests": len(lines),
               "completed_requests": 0, "succeeded_requests": 0, "failed_requests": 0}
        with self._lock:
            self.jobs[job["id"]] = job
            self._stats["batch_jobs_created"] += 1
            created = dict(job)  # the reply says QUEUED even if the worker starts at once
        threading.Thread(target=self._run_job, args=(job, lines), name=f"batch-{job['id'][:8]}",
                         daemon=True).start()
        return created

    def _wait_while_held(self, job: dict) -> None:
        held = self.hold_batches
        while (held.is_set() if isinstance(held, threading.Event) else held) and job["status"] == "RUNNING" \
                and not self._closed:
            time.sleep(0.02)
            held = self.hold_batches

    def _run_job(self, job: dict, lines: list[dict]) -> None:
        ok, failed = [], []
        with self._lock:
            if job["status"] == "QUEUED":  # not if a cancel came first
                job.update(status="RUNNING", started_at=int(time.time()))
        for i, line in enumerate(lines):
            self._wait_while_held(job)
            if job["status"] != "RUNNING":  # cancellation requested
                break
            time.sleep(self.batch_step_seconds)
            body = dict(line.get("body") or {})
            body.setdefault("model", job["model"])
            status, reply, _ = self.answer(body, live=False)
            error = None if status == 200 else {"message": reply.get("message"), "code": reply.get("code")}
            out = {"id": f"batch-{job['id'][:8]}-{i}", "custom_id": line.get("custom_id"),
                   "response": {"status_code": status, "body": None if error else reply}, "error": error}
            (ok if status == 200 else failed).append(json.dumps(out) + "\n")
            with self._lock:
                self._stats["batch_lines"] += 1
                job["completed_requests"] += 1
                job["succeeded_requests" if status == 200 else "failed_requests"] += 1
        self._wait_while_held(job)
        # Failed lines go to the error file only: BatchClient asserts a custom_id is in one file, not both.
        out_id = self.add_file("".join(ok).encode(), "output.jsonl", "batch", "batch_result", "mistral")["id"]
        err_id = self.add_file("".join(failed).encode(), "error.jsonl", "batch", "batch_error",
                               "mistral")["id"] if failed else None
        with self._lock:  # files first, then the status: a client that sees SUCCESS can download at once
            job.update(output_file=out_id, error_file=err_id, completed_at=int(time.time()),
                       status="SUCCESS" if job["status"] == "RUNNING" else "CANCELLED")

    def list_jobs(self, query: dict[str, list[str]]) -> dict:
        with self._lock:
            jobs = [dict(j) for j in reversed(self.jobs.values())]  # newest first, like order_by=-created
        if "model" in query:
            jobs = [j for j in jobs if j["model"] == query["model"][0]]
        if "status" in query:
            jobs = [j for j in jobs if j["status"] in query["status"]]
        # The SDK sends a metadata filter as bare key=value params; a raw client may send metadata=<JSON>.
        want = {k: v[0] for k, v in query.items() if k not in LIST_PARAMS}
        want.update(json.loads(query["metadata"][0]) if "metadata" in query else {})
        jobs = [j for j in jobs if all(str((j["metadata"] or {}).get(k)) == str(v) for k, v in want.items())]
        page, size = int(query.get("page", ["0"])[0]), int(query.get("page_size", ["100"])[0])
        return {"object": "list", "total": len(jobs), "data": jobs[page * size:(page + 1) * size]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a sleeping "slow" handler must not block shutdown
    request_queue_size = 512  # a burst of >= 64 concurrent connections must not be refused
    block_on_close = False
    app: LoopbackServer

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # client timeouts hang up mid-reply: expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the SDK's connection pool reuses connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, 40 ms delayed ACKs
    server: _Server

    def log_message(self, format, *args):  # quiet: tests and the benchmark read stdout
        pass

    def setup(self):
        super().setup()
        with self.server.app._lock:  # one per TCP connection: shows whether clients reuse connections
            self.server.app._stats["connections"] += 1

    def do_GET(self):
        self._dispatch(self.command)

    do_POST = do_DELETE = do_GET

    def _send(self, status: int, body, headers: dict | None = None, content_type: str = "application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # always drain: keep-alive
        if self.headers.get("Authorization"):
            with app._lock:
                app.auth_headers.add(self.headers["Authorization"])
        url = urlsplit(self.path)
        parts, query = [p for p in url.path.split("/") if p], parse_qs(url.query)
        try:
            if method == "POST" and url.path == "/v1/chat/completions":
                return self._chat(json.loads(raw))
            if method == "GET" and url.path == "/stats":
                return self._send(200, app.stats())
            if method == "GET" and url.path == "/attempts":
                return self._send(200, {"attempts": app.attempts(query.get("text", [""])[0])})
            controls = {"/control/hold": app.hold_batches.set, "/control/release": app.hold_batches.clear,
                        "/control/reset": app.reset_stats}
            if method == "POST" and url.path in controls:
                controls[url.path]()
                return self._send(200, {"ok": True})
            if method == "POST" and url.path == "/v1/files":
                return self._send(200, self._upload(raw))
            if parts[:2] == ["v1", "files"] and len(parts) >= 3:
                return self._file(method, parts[2], parts[3:])
            if parts[:3] == ["v1", "batch", "jobs"]:
                return self._jobs(method, parts[3:], raw, query)
            raise Reply(404)
        except Reply as r:
            self._send(r.status, r.body, r.headers)
        except ValueError as e:  # unparseable JSON body
            self._send(400, dict(error_body(400), message=f"bad request body: {e}"))
        except ConnectionError:
            raise
        except Exception as e:  # answer rather than drop the connection, so the client sees the bug
            traceback.print_exc()
            self._send(500, dict(error_body(500), message=f"loopback server bug: {e!r}"))

    def _chat(self, body: dict) -> None:
        app = self.server.app
        with app._lock:
            s = app._stats
            s["requests"] += 1
            s["in_flight"] += 1
            s["max_in_flight"] = max(s["max_in_flight"], s["in_flight"])
        try:
            time.sleep(app.latency)  # outside the lock: concurrent requests overlap like a real API
            status, reply, headers = app.answer(body)
        finally:
            with app._lock:
                s["in_flight"] -= 1
        with app._lock:
            s["by_status"][status] += 1
        self._send(status, reply, headers)

    def _upload(self, raw: bytes) -> dict:
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        form = BytesParser(policy=HTTP).parsebytes(head + raw)
        fields = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
        if "file" not in fields:
            raise Reply(400, dict(error_body(400), message="multipart field 'file' is required"))
        purpose = fields["purpose"].get_content().strip() if "purpose" in fields else "batch"
        meta = self.server.app.add_file(fields["file"].get_payload(decode=True) or b"",
                                        fields["file"].get_filename() or "upload.jsonl", purpose)
        with self.server.app._lock:
            self.server.app._stats["files_uploaded"] += 1
        return meta

    def _file(self, method: str, file_id: str, rest: list[str]) -> None:
        app = self.server.app
        f = app.files.get(file_id)
        if f is None:
            raise Reply(404, dict(error_body(404), message=f"no file {file_id}"))
        if method == "GET" and rest == ["content"]:
            return self._send(200, f["data"], content_type="application/octet-stream")
        if method == "GET" and not rest:
            return self._send(200, dict(f["meta"], deleted=False))
        if method == "DELETE" and not rest:
            with app._lock:
                app.files.pop(file_id, None)
            return self._send(200, {"id": file_id, "object": "file", "deleted": True})
        raise Reply(404)

    def _jobs(self, method: str, rest: list[str], raw: bytes, query: dict) -> None:
        app = self.server.app
        if method == "POST" and not rest:
            return self._send(200, app.create_job(json.loads(raw)))
        if method == "GET" and not rest:
            return self._send(200, app.list_jobs(query))
        job = app.jobs.get(rest[0]) if rest else None
        if job is None:
            raise Reply(404, dict(error_body(404), message="no such batch job"))
        if method == "POST" and rest[1:] == ["cancel"]:
            with app._lock:
                if job["status"] in IN_FLIGHT:
                    job["status"] = "CANCELLATION_REQUESTED"
            return self._send(200, dict(job))
        if method == "GET" and len(rest) == 1:
            return self._send(200, dict(job))
        raise Reply(404)


def _load_responder(spec: str):
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # responder modules live next to this file
    # Run as a script this module is __main__; a responder's `from loopback_server import Reply` must get
    # this very class, or its Reply would not be caught as one.
    sys.modules.setdefault("loopback_server", sys.modules[__name__])
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "respond")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--faults", type=json.loads, default=None, help="""JSON: '{"429": 0.1, "slow": 0.05}'""")
    p.add_argument("--retry-after", type=float, default=0.2)
    p.add_argument("--slow-seconds", type=float, default=2.0)
    p.add_argument("--fault-attempts", type=int, default=1)
    p.add_argument("--batch-step-seconds", type=float, default=0.0)
    p.add_argument("--hold-batches", action="store_true", help="start held; POST /control/release to go on")
    p.add_argument("--responder", default=None, help="module:function, imported with tests/ on sys.path")
    a = p.parse_args(argv)
    srv = LoopbackServer(_load_responder(a.responder) if a.responder else None, latency=a.latency,
                         faults=a.faults, retry_after=a.retry_after, slow_seconds=a.slow_seconds,
                         fault_attempts=a.fault_attempts, batch_step_seconds=a.batch_step_seconds,
                         hold_batches=a.hold_batches, port=a.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with srv:
        print(f"PORT {srv.port}", flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
