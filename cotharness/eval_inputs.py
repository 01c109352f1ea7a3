"""What ``cotharness eval`` checks before it loads a model: the ``--metadata`` keys and the data.

lm-eval hands every task's ``custom_dataset`` function the whole metadata (with the model args), so
a loader takes ``**kwargs`` and a misspelt key (``test_flie``) would be ignored: the bundled sample
scored instead of the user's file, exit 0. Here each key is checked against the keyword parameters
of the selected tasks' loaders (each task YAML names its loader), then each loader is called with
the user's metadata, so a bad file fails in seconds rather than after a 7B model load.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from functools import cache

import yaml

from harness_tasks.tasks import TASKS_DIR


class _TaskYaml(yaml.SafeLoader):
    """Reads lm-eval task YAML: ``!function module.name`` becomes the dotted name."""


_TaskYaml.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


@cache
def _index() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Our lm-eval tasks -> their loader's dotted name, and tags -> their tasks."""
    loaders, tags = {}, {}
    for path in sorted(TASKS_DIR.glob("*/*.yaml")):
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYaml)  # noqa: S506 - a SafeLoader
        if not isinstance(config, dict) or "task" not in config or "custom_dataset" not in config:
            continue  # e.g. tools.yaml, which is data
        loaders[config["task"]] = config["custom_dataset"]
        tag = config.get("tag") or []
        for name in [tag] if isinstance(tag, str) else tag:
            tags.setdefault(name, []).append(config["task"])
    return loaders, tags


def _function(dotted: str) -> Callable:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def select(tasks: list[str]) -> tuple[dict[str, Callable], list[str]]:
    """The selected tasks of this project with their loaders, and the selected names that are not ours
    (lm-eval's own tasks, groups, a task from another --include_path)."""
    loaders, tags = _index()
    ours, others = {}, []
    for name in (t for entry in tasks for t in entry.split(",") if t):
        names = tags.get(name) or ([name] if name in loaders else [])
        if not names:
            others.append(name)
        ours.update({n: _function(loaders[n]) for n in names})
    return ours, others


def metadata_keys(loader: Callable) -> set[str]:
    """The keys a loader reads: its keyword parameters, and those it declares it reads from ``**kwargs``
    (``loader.metadata_keys()``: e.g. instruct_judged's ``judge_*``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    keys = {p.name for p in inspect.signature(loader).parameters.values() if p.kind in kinds}
    more = getattr(loader, "metadata_keys", None)
    return keys | set(more() if more else ())


def check_keys(metadata: dict, ours: dict[str, Callable], others: list[str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for keys no selected task of ours reads: errors when every selected task is
    ours, warnings when another task is selected too (it may read them: lm-eval's RULER reads some)."""
    if not ours:
        return [], []  # lm-eval's own tasks only: their metadata is theirs to check
    known = {task: metadata_keys(loader) for task, loader in ours.items()}
    every = set().union(*known.values())
    problems = []
    for key in sorted(set(metadata) - every):
        close = difflib.get_close_matches(key, sorted(every), n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        problems.append(f"--metadata key {key!r}:{hint} no selected task ({', '.join(known)}) reads it; they read "
                        f"{', '.join(sorted(every))}")
    if others:
        return [], [f"{p}; passed on in case {', '.join(others)} reads it" for p in problems]
    return problems, []


def check_data(metadata: dict, ours: dict[str, Callable]) -> None:
    """Load each selected task's data as lm-eval will (one call per loader): a bad file or setting
    raises here, the caller's one ``error:`` line. instruct_judged's loader also checks the judge
    with a free request (the server's model list); no judgement is asked for."""
    called = set()
    for loader in ours.values():
        if loader not in called:
            called.add(loader)
            loader(**metadata)
