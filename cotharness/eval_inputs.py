"""What ``cotharness eval`` checks before it loads a model, each mistake one ``EvalInputError``.

- the command line: lm-eval's argparse errors (with a did-you-mean for an unknown option), JSON given
  to ``--metadata``/``--model_args``/..., ``--limit`` above 0, ``--log_samples`` with ``--output_path``;
- ``--tasks``: each name is a task of this project or of lm-eval's index (did-you-mean from both);
- ``--model_args``: each key is one the ``hf-cot`` model, ``from_pretrained`` or the model's config
  reads, and ``pretrained``/``peft``/``tokenizer`` exist, locally or on the Hub (below);
- ``--metadata`` keys and each task's data (below).

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
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import yaml

from harness_tasks.errors import UserError
from harness_tasks.model_paths import HUB_ID, looks_local
from harness_tasks.tasks import TASKS_DIR

HELP_HINT = "(see cotharness eval --help)"


class EvalInputError(UserError, ValueError):
    """A ``cotharness eval`` argument that cannot work; found before any model loads."""


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


def names_of(tasks: list[str]) -> list[str]:
    """The task names in ``--tasks`` entries (each may list several, comma-separated)."""
    return [t for entry in tasks for t in entry.split(",") if t]


def select(tasks: list[str]) -> tuple[dict[str, Callable], list[str]]:
    """The selected tasks of this project with their loaders, and the selected names that are not ours
    (lm-eval's own tasks, groups, a task from another --include_path)."""
    loaders, tags = _index()
    ours, others = {}, []
    for name in names_of(tasks):
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


def check_metadata_keys_and_data(metadata: dict, tasks: list[str]) -> list[str]:
    """The ``--metadata`` keys, then each selected task's data; returns warnings (keys passed on to a
    task not of this project, which may read them)."""
    ours, others = select(tasks)
    errors, warnings = check_keys(metadata, ours, others)
    if errors:
        raise EvalInputError(errors[0])
    check_data(metadata, ours)
    return warnings


def metadata_help() -> str:
    """``--metadata`` keys per task of this project, for ``cotharness eval --help``."""
    import textwrap

    loaders, _ = _index()
    return "\n".join(textwrap.fill(", ".join(sorted(metadata_keys(_function(dotted)))), width=100,
                                   initial_indent=f"    {task}: ", subsequent_indent=" " * 8)
                     for task, dotted in loaders.items())


# --- the command line -------------------------------------------------------------------------------

def raise_usage_errors(parsers: list, run_parser) -> None:
    """lm-eval's argparse errors (printed as usage + a line, exit 2) become one EvalInputError, an
    unknown option with the closest of ``run``'s options."""
    options = sorted({s for a in run_parser._actions for s in a.option_strings if s.startswith("--")})

    def error(message: str):
        raise EvalInputError(usage_message(message, options))

    for parser in parsers:
        parser.error = error


def usage_message(message: str, options: list[str]) -> str:
    if not message.startswith("unrecognized arguments: "):
        return f"{message} {HELP_HINT}"
    extra = message.split(": ", 1)[1].split()
    option = next((a.split("=", 1)[0] for a in extra if a.startswith("-")), None)
    if option is None:  # a second value where an option takes one
        return f"unexpected argument {extra[0]!r}: each option takes one value here; quote a value with spaces {HELP_HINT}"
    close = difflib.get_close_matches(option, options, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown option {option}{hint} {HELP_HINT}"


def check_json(argv: list[str], run_parser) -> None:
    """A value of a JSON-taking option (``--metadata``, ``--model_args``, ``--gen_kwargs``, ...) that
    starts like JSON parses as JSON: lm-eval's own message names neither the option nor the place."""
    from lm_eval._cli.utils import MergeDictAction, try_parse_json

    takes_json = {s for a in run_parser._actions if isinstance(a, MergeDictAction) or a.type is try_parse_json
                  for s in a.option_strings}
    option = None
    for arg in argv:
        if arg.startswith("-"):
            option, _, value = arg.partition("=")
            if not value:
                continue
        else:
            value = arg
        if option in takes_json and value.lstrip().startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as err:
                raise EvalInputError(f"{option} {value}: not valid JSON ({err.msg} at character {err.pos + 1}); "
                                     "quote the whole object in single quotes so the shell keeps its double "
                                     "quotes, e.g. '{\"test_file\": \"data.csv\"}'") from None


def check_run_options(args) -> None:
    limit = getattr(args, "limit", None)
    if limit is not None and limit <= 0:
        raise EvalInputError(f"--limit {limit:g}: give a number of documents (1 or more) or a fraction "
                             "between 0 and 1; leave it out to evaluate every document")
    if (getattr(args, "log_samples", False) or getattr(args, "predict_only", False)) and not args.output_path:
        raise EvalInputError("--log_samples needs --output_path DIR: the folder the samples (and here the "
                             "predictions CSV and per-class report) are written to")


def all_ours(tasks: list[str]) -> bool:
    """Whether every ``--tasks`` name is a task or tag of this project."""
    loaders, tags = _index()
    names = names_of(tasks)
    return bool(names) and all(n in loaders or n in tags for n in names)


@contextmanager
def without_lm_evals_own_tasks():
    """lm-eval's TaskManager without its built-in tasks while a run needs none of them: it reads all of
    their ~14,000 YAML files at every start to find the few asked for (about 7 s of a 14-18 s tiny-model
    command on a 2-core machine). The include paths (this project's tasks, any the user gives) are read
    as before."""
    import lm_eval.tasks as tasks_module

    original = tasks_module.TaskManager

    class OursOnly(original):
        def __init__(self, *args, include_defaults: bool = False, **kwargs):
            super().__init__(*args, include_defaults=include_defaults, **kwargs)

    tasks_module.TaskManager = OursOnly
    try:
        yield
    finally:
        tasks_module.TaskManager = original


def check_tasks(tasks: list[str], include_path: list[str]) -> None:
    """Each ``--tasks`` name is a task, group or tag of this project or of lm-eval's index (which
    takes a few seconds to build, so it is read only for a name that is not ours)."""
    loaders, tags = _index()
    ours = sorted({*loaders, *tags})
    names = names_of(tasks)
    # a YAML file or a folder of them is lm-eval's to read
    unknown = [n for n in names if n not in ours and not n.endswith(".yaml") and not Path(n).is_dir()]
    if not unknown:
        return
    from lm_eval.tasks import TaskManager

    index = TaskManager(include_path=include_path)
    for name in unknown:
        if index.match_tasks([name]):
            continue
        close = difflib.get_close_matches(name, ours, n=1) or difflib.get_close_matches(name, index.all_tasks, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise EvalInputError(f"--tasks {name}: no such task; {hint}this project's tasks: {', '.join(loaders)} "
                             "(`cotharness eval ls tasks` lists lm-eval's)")


# --- the model's arguments --------------------------------------------------------------------------

MODEL_PATHS = {"pretrained": "config.json", "peft": "adapter_config.json", "tokenizer": "tokenizer_config.json"}
# a hub id: `name` or `owner/name`; anything else given for a model, adapter or tokenizer is a local path


@cache
def hf_model_keys() -> frozenset[str]:
    """The ``--model_args`` keys ``hf-cot`` takes: its and lm-eval's HFLM's parameters, and what
    ``from_pretrained`` reads (its parameters and the names it takes from its ``**kwargs``)."""
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedConfig, PreTrainedModel

    from harness_tasks.hf_model import QUANT_ARGS, QuantizedHFLM

    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    keys = set(QUANT_ARGS)
    for fn in (QuantizedHFLM.__init__, QuantizedHFLM._create_model, HFLM.__init__, HFLM._create_model,
               PreTrainedModel.from_pretrained, PreTrainedConfig.__init__):
        keys |= {p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds}
    source = inspect.getsource(PreTrainedModel.from_pretrained)
    keys |= set(re.findall(r'kwargs\.(?:pop|get)\(\s*"(\w+)"', source))
    return frozenset(keys - {"self", "pretrained_model_name_or_path"})


def _config_keys(pretrained) -> set[str]:
    """The keys of the model's own config.json (``from_pretrained`` takes them as overrides), where it
    is on this machine."""
    if not isinstance(pretrained, str):
        return set()
    path = Path(pretrained).expanduser() / "config.json"
    if not path.is_file() and HUB_ID.fullmatch(pretrained):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(pretrained, "config.json")
        path = Path(cached) if isinstance(cached, str) else path
    try:
        return set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def check_model_args(model_args: dict) -> None:
    """Each key is one ``hf-cot`` reads (a typo would reach ``from_pretrained`` and fail after minutes,
    or be ignored)."""
    known = hf_model_keys()
    for key in model_args:
        if key in known or key in _config_keys(model_args.get("pretrained")):
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise EvalInputError(f"--model_args key {key!r}: {hint}neither the hf model, from_pretrained nor the "
                             "model's config.json reads it")


def check_model_paths(model_args: dict) -> None:
    """``pretrained``/``peft``/``tokenizer`` exist: a local path here; a hub id in the Hugging Face
    cache or, online, on the Hub (one request with a short timeout; transformers would retry for half
    a minute before saying that a model is not there)."""
    for key, marker in MODEL_PATHS.items():
        value = model_args.get(key)
        if not isinstance(value, str) or not value:
            continue  # e.g. a model object from Python
        where = f"--model_args {key}={value}"
        path = Path(value).expanduser()
        if path.is_dir():
            if key != "tokenizer" and not (path / marker).is_file() and not model_args.get("gguf_file"):
                what = "a PEFT adapter" if key == "peft" else "a model"
                hint = ("; it holds an adapter: give its base model as pretrained= and this folder as peft="
                        if key == "pretrained" and (path / MODEL_PATHS["peft"]).is_file() else "")
                raise EvalInputError(f"{where}: not {what} folder (no {marker} in it){hint}")
        elif path.exists():
            continue  # a file: lm-eval's to read (e.g. a GGUF model)
        elif looks_local(value):
            raise EvalInputError(f"{where}: no such folder")
        else:
            _check_hub(where, value)


def _check_hub(where: str, repo: str) -> None:
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in MODEL_PATHS.values()):
        return
    if constants.HF_HUB_OFFLINE:
        raise EvalInputError(f"{where}: no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set, "
                             "so nothing is downloaded)")
    try:
        HfApi().model_info(repo, timeout=10)
    except GatedRepoError:
        return  # there; whether this user may read it is the hub's to say when it loads
    except RepositoryNotFoundError:
        raise EvalInputError(f"{where}: no such folder, and no model {repo} on the Hugging Face Hub (a private "
                             "one needs `hf auth login`)") from None
    except Exception as err:  # noqa: BLE001 - any failure to reach the hub: loading would fail the same way
        raise EvalInputError(f"{where}: no such folder, and the Hugging Face Hub cannot be reached "
                             f"({type(err).__name__}: {err}); give a local folder") from None
