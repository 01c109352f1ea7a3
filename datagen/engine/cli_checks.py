"""What every ``cotharness datagen`` command checks before it reads a row, sends a request or loads a
model, and the one-line form of every mistake.

A mistake is one ``error:`` line on stderr: exit 2 for a user's mistake (an option, a path, a name, an
existing output, a missing key), 1 for work that ran and failed, 3 for a run stopped by ``--max-cost``,
130 for Ctrl-C with a line that says what was kept. The checks live here, below the commands, so that
the teacher stages, the backtranslation commands and the data generators say the same thing in the
same words. Mistakes in the options themselves (a value out of range, a misspelt option) are made one
line by the ``cotharness`` command's own error path (``cotharness/cli.py``), for every command alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import typer

from datagen.engine.backends import BACKENDS
from harness_tasks.errors import UserError, traceback_if_debugging
from harness_tasks.model_paths import looks_local

DEFAULT_CONCURRENCY, DEFAULT_BATCH_SIZE = 8, 8
RESUME = "finished rows are saved; rerun the same command to continue"


class UsageError(UserError):
    """A setting that cannot work; the message says what to change."""


@contextmanager
def one_line(interrupted: str = RESUME) -> Iterator[None]:
    """Run a command body: a :class:`UserError` (and the few outside errors that are a user's to fix:
    a path that is not there, a server that refuses every request) ends in one ``error:`` line with
    its exit status; Ctrl-C in one line that says what was kept. Any other exception is a bug and keeps
    its traceback."""
    from datagen.engine.backends.base import FatalBackendError
    from harness_tasks.secrets import redact

    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {interrupted}", err=True)
        raise typer.Exit(130) from None
    except UserError as err:
        traceback_if_debugging()
        typer.echo(f"error: {redact(str(err))}", err=True)
        raise typer.Exit(err.exit_code) from None
    except (FatalBackendError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        traceback_if_debugging()
        typer.echo(f"error: {redact(str(err))}", err=True)
        raise typer.Exit(2) from None


def choice(option: str, value: str, known: Iterable[str]) -> str:
    """``value`` if it is one of ``known``, else a UsageError naming the closest."""
    known = list(known)
    if value in known:
        return value
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"{option} {value!r} is not one of {', '.join(known)}{hint}")


def task_spec(name: str):
    """The TaskSpec of ``--task``, or a UsageError with the closest task's name."""
    from harness_tasks.tasks import get_task, task_names

    try:
        return get_task(name)
    except KeyError:
        choice("--task", name, task_names())
        raise  # not reached: choice raises for a name get_task does not know


def server_url(url: str | None) -> None:
    """The shape of ``--server-url``, checked before any request: without it the SDK retries a URL it
    cannot use for half a minute before it says so."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number from 0 to 65535
    except ValueError:
        raise UsageError(f"--server-url {url!r}: the port is not a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = f"http://{url}" if "://" not in url else "http://localhost:8000"
        raise UsageError(f"--server-url {url!r}: give the scheme and host of the server, e.g. {example}")


def local_dir(option: str, path: Path | str | None, what: str) -> None:
    """A local-looking path that is not a folder, said before anything loads; a hub id (``owner/name``)
    is left to transformers."""
    if path is not None and looks_local(str(path)) and not Path(path).expanduser().is_dir():
        state = "is not a directory" if Path(path).exists() else "does not exist"
        raise UsageError(f"{option} {path}: {state}; {what}")


def backend_settings(backend: str, model: str | None, server: str | None, *, concurrency: int | None,
                     batch_size: int | None, adapter: Path | None, load_in_4bit: bool, device: str | None,
                     poll_interval: float | None = None, use_chat_template: bool | None = None,
                     default_concurrency: int = DEFAULT_CONCURRENCY,
                     default_batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[int, dict]:
    """The one grammar of who answers, checked: (requests in flight, the backend's settings).

    ``--concurrency`` is the number of requests in flight to a server; ``--batch-size`` the prompts of
    one generate call of a local model (``--backend hf --model DIR [--adapter DIR]``), which also keeps
    that many requests in flight so that a batch fills. Each is an error where it means nothing, rather
    than silently ignored."""
    choice("--backend", backend, BACKENDS)
    server_url(server)
    if backend == "hf":
        if server is not None:
            raise UsageError("--server-url goes with --backend mistral or mistral-batch; --backend hf runs the "
                             "model in this process")
        if concurrency is not None:
            raise UsageError("--concurrency is the number of requests in flight to a server; a local model "
                             "(--backend hf) takes --batch-size")
        local_dir("--model", model, "with --backend hf, --model is a local model directory or a hub id")
        local_dir("--adapter", adapter, "--adapter is a PEFT adapter directory (a `cotharness train` run)")
        size = batch_size or default_batch_size
        args = {"adapter": adapter, "load_in_4bit": load_in_4bit, "device": device, "batch_size": size}
        if use_chat_template is not None:
            args["use_chat_template"] = use_chat_template
        return size, args
    given = [name for name, value in (("--adapter", adapter), ("--load-in-4bit", load_in_4bit),
                                      ("--device", device), ("--batch-size", batch_size)) if value]
    if given:
        raise UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with a local model: "
                         f"--backend hf --model DIR [--adapter DIR]")
    return concurrency or default_concurrency, (
        {"poll_interval": poll_interval} if backend == "mistral-batch" and poll_interval is not None else {})


def api_key_for(backend: str, server: str | None, dry_run: bool) -> None:
    """A missing ``MISTRAL_API_KEY`` is said before any input is read (a dry run sends nothing)."""
    if backend != "hf" and server is None and not dry_run:
        from harness_tasks.secrets import api_key

        api_key(required=True)


def existing(out: Path, names: Iterable[str], force: bool, what: str = "an earlier run's files") -> list[Path]:
    """The files of ``names`` already in the folder ``out``; a UsageError unless ``force``.

    Every command that writes a folder refuses to replace another run's files silently (a 10-row run
    over a 2,000-row train.jsonl); ``--force`` replaces them, and the caller removes any of them the
    new run does not write, so that nothing stale sits beside a manifest that does not name it."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; this command writes a folder (--out DIR)")
    if out.suffix in (".jsonl", ".json", ".csv"):
        raise UsageError(f"--out {out}: this command writes a folder of files; name the folder, e.g. "
                         f"--out {out.with_suffix('')}")
    found = [out / name for name in names if (out / name).exists()]
    if found and not force:
        shown = ", ".join(p.name if p.parent == out else str(p.relative_to(out)) for p in found[:4])
        more = f" and {len(found) - 4} more" if len(found) > 4 else ""
        raise UsageError(f"--out {out}: holds {what} ({shown}{more}); pass --force to replace them, or "
                         "choose another --out")
    return found


def finish(tally) -> None:
    """The exit after a run that has written everything: 3 if it stopped early, else 1 if rows it was
    asked to do are failed, so that a script or a Makefile notices. Failed rows get one closing line."""
    if tally.failed_rows:
        earlier = f", {tally.failed_before} of them in an earlier run" if tally.failed_before else ""
        typer.echo(f"{tally.failed_rows} row(s) failed{earlier}: rerun with --retry-failed to try them again",
                   err=True)
    if tally.stopped:
        raise typer.Exit(3)
    if tally.failed_rows:
        raise typer.Exit(1)
