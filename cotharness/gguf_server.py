"""``cotharness eval --model gguf --model_args path=FILE``: the GGUF evaluated by llama.cpp itself.

llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) is started on a free
loopback port, lm-eval's ``local-completions`` model asks it for completions, and the server is stopped
afterwards (also on a failure or Ctrl-C). ``local-completions`` rather than lm-eval's ``gguf`` model:
that one sends no ``max_tokens``, so the server's default of 16 tokens would cut every chain of
thought; ``local-completions`` sends the task's ``max_gen_toks``, stop strings and temperature 0.
Prompts go as text (``tokenized_requests=False``): llama.cpp tokenizes them with the GGUF's tokenizer,
BOS included, as the HF model's tokenizer does.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness_tasks.errors import UserError, WorkFailed

NAMES = {"gguf", "ggml"}
# --model_args keys of --model gguf: the file and the server's own settings
KEYS = {"path": None, "n_ctx": 2048, "n_threads": None, "n_batch": None, "seed": 0}
START_TIMEOUT = 120.0


class GGUFInputError(UserError, ValueError):
    pass


def check_args(model_args: dict) -> dict:
    """``--model_args`` of ``--model gguf``, with defaults; a typo or a missing file is an error."""
    for key in model_args:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (keys: {', '.join(KEYS)})"
            raise GGUFInputError(f"--model_args {key}: not a key of --model gguf{hint}")
    path = model_args.get("path")
    if not path:
        raise GGUFInputError("--model gguf needs --model_args path=FILE.gguf (a file `cotharness export gguf` wrote)")
    if not Path(str(path)).is_file():
        raise GGUFInputError(f"--model_args path={path}: no such file")
    with Path(str(path)).open("rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFInputError(f"--model_args path={path}: not a GGUF file")
    from trainer.export.quantize import llama_cpp_missing

    missing = llama_cpp_missing()
    if missing:
        raise GGUFInputError(missing)
    return {**KEYS, **model_args}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serving(settings: dict) -> Iterator[str]:
    """The server's base URL while it runs; stopped when the block ends, however it ends."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(settings["path"]), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(settings["n_ctx"]), "--seed", str(settings["seed"])]
    for key in ("n_threads", "n_batch"):
        if settings[key] is not None:
            command += [f"--{key}", str(settings[key])]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as log:
        # its own session: Ctrl-C at the terminal reaches this process, which stops the server itself
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    last = [line for line in log.read().splitlines() if line.strip()][-1:] or ["(no output)"]
                    raise WorkFailed(f"llama_cpp.server did not start on {settings['path']}: {last[0]}")
                time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def lm_eval_args(url: str, settings: dict) -> dict:
    """``--model_args`` of lm-eval's ``local-completions`` against the server."""
    return {"base_url": f"{url}/v1/completions", "model": Path(str(settings["path"])).stem,
            "tokenizer_backend": "none", "tokenized_requests": False, "max_length": int(settings["n_ctx"]),
            "num_concurrent": 1, "max_retries": 3, "timeout": 600}


def describe(settings: dict) -> str:
    return json.dumps({k: v for k, v in settings.items() if v is not None})
