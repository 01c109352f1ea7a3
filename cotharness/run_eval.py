"""``cotharness eval``: lm-eval's own CLI with this project's tasks and 4-bit loading preset.

Differences from plain ``lm_eval`` (everything else is passed through untouched):
- ``harness_tasks/`` is always on the task search path (in addition to any ``--include_path``);
- before the model loads, every argument a user can get wrong is checked (``cotharness/eval_inputs.py``):
  the options, the task names, the ``--model_args`` keys and paths, the ``--metadata`` keys (a typo
  is an error with a did-you-mean), and each task's data is loaded once, so a bad file fails in seconds;
- ``--model gguf --model_args path=FILE`` evaluates a GGUF file with llama.cpp, through a server started
  for the run (``cotharness/gguf_server.py``);
- ``--model hf`` (lm-eval's default) becomes ``hf-cot`` (``harness_tasks/hf_model.py``): ``load_in_4bit=True``
  and ``bnb_4bit_*`` work on transformers 5, an adapter is merged into an unquantized base, and the
  batch size defaults to ``auto``, sized for generation from the prompts and free memory;
- with ``--output_path``, samples are logged and each CoT task's predictions are also written as
  ``predictions_<task>_<timestamp>.csv`` (id, predicted label, how it was parsed, gold if known), and
  for labelled documents per-class precision/recall/F1 and the confusion matrix are printed and
  written as ``per_class_<task>_<timestamp>.json`` (any label set: NLI classes, puzzle verdicts, tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness_tasks.cot_json import filtered_answer
from harness_tasks.errors import WorkFailed
from harness_tasks.manifest import write_atomic, write_csv_atomic
from harness_tasks.tasks import TASKS_DIR, schema_for

HF_ALIASES = {"hf", "hf-auto", "huggingface"}
USAGE = "cotharness eval --tasks <task>[,<task>] --model_args pretrained=<dir or hub id>[,peft=<adapter>,...] [options]"
HELP = """\
cotharness eval: lm-eval's `run`, with this project's tasks and its inputs checked before a model loads.
What cotharness adds to lm-eval (every lm-eval option below works as in `lm_eval run`):

  --tasks        this project's tasks (harness_tasks/) are always found, besides any --include_path;
                 a name neither knows is an error with a did-you-mean
  --model hf     (lm-eval's default) runs as hf-cot: load_in_4bit=True / load_in_8bit=True and
                 bnb_4bit_* work on transformers 5 (NF4, double quantisation, bf16 compute);
                 peft=ADAPTER is merged into an unquantized base (merge_peft=False keeps it apart)
  --model_args   each key is checked (did-you-mean); pretrained=, peft=, tokenizer= given as a path
                 must exist, and a hub id not in the cache is looked up once, not retried for 30 s
  --model gguf   path=FILE.gguf (a file `cotharness export gguf` wrote; also n_ctx=, n_threads=, n_batch=,
                 seed=): llama.cpp evaluates it through llama-cpp-python's OpenAI-compatible server,
                 started on a loopback port for the run and stopped after it (lm-eval's
                 local-completions model asks it; prompts go as text, greedy, the task's stop strings)
  --batch_size   default here: auto, sized for generation from the prompts, max_gen_toks and free
                 memory (lm-eval's own default is 1)
  --limit        above 0: a number of documents, or a fraction of them below 1
  --metadata     JSON of a task's data settings, checked (with the data) before the model loads:
{metadata}
  --output_path  samples are logged (--log_samples is implied), and each CoT task also gets
                 predictions_<task>_<time>.csv (id, predicted label, how it was parsed, gold label)
                 and per_class_<task>_<time>.json (per-class precision/recall/F1 and confusion
                 matrix, also printed)
  --debug        show the traceback of an error too (or COTHARNESS_DEBUG=1)

lm-eval's own options:
"""


def main(argv: list[str]) -> int:
    """``cotharness eval ARGS``; 0 when lm-eval ran. A mistake in the arguments raises EvalInputError
    (or the data file's DataFileError) before any model loads."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from cotharness import eval_inputs, gguf_server
    from harness_tasks import hf_model
    from harness_tasks.judge import JudgeError

    argv = list(argv)
    if not argv or argv[0] not in ("run", "ls", "validate"):
        argv = ["run", *argv]  # like lm_eval's legacy form
    setup_logging()
    cli = HarnessCLI()
    # lm-eval 0.4.13 keeps its argparse parsers private; they are reached to make their errors one line
    parsers = cli._subparsers.choices
    eval_inputs.raise_usage_errors([cli._parser, *parsers.values()], parsers["run"])
    if argv[0] == "run" and (argv == ["run"] or "-h" in argv or "--help" in argv):
        print_help(parsers["run"])
        return 0
    eval_inputs.check_json(argv, parsers["run"])
    sys.argv = ["lm_eval", *argv]  # HarnessCLI reads sys.argv
    try:
        args = cli.parse_args()
    except eval_inputs.EvalInputError:
        raise
    except ValueError as err:  # an lm-eval action's own reading of a value
        raise eval_inputs.EvalInputError(f"{err} {eval_inputs.HELP_HINT}") from None
    args.include_path = [p for p in (getattr(args, "include_path", None), str(TASKS_DIR)) if p]
    if args.command != "run":
        cli.execute(args)
        return 0
    if args.model in HF_ALIASES or (args.model is None and not getattr(args, "config", None)):
        args.model = hf_model.NAME  # lm-eval's default model is hf
    if args.model == hf_model.NAME and getattr(args, "batch_size", None) is None:
        args.batch_size = "auto"  # lm-eval's default is 1; hf-cot sizes generation batches to the memory
    try:
        check_inputs(args)
    except JudgeError as err:  # the judge's settings or server, said in one line
        raise eval_inputs.EvalInputError(str(err)) from None
    if args.output_path:
        args.log_samples = True
    before = _samples(args.output_path)
    ours = bool(args.tasks) and eval_inputs.all_ours(args.tasks)
    only_ours = eval_inputs.without_lm_evals_own_tasks if ours else contextlib.nullcontext
    try:
        if args.model in gguf_server.NAMES:
            settings = args.model_args  # checked by check_inputs
            with gguf_server.serving(settings) as url, only_ours():
                args.model, args.model_args = "local-completions", gguf_server.lm_eval_args(url, settings)
                cli.execute(args)
        else:
            with only_ours():
                cli.execute(args)
    except JudgeError as err:
        raise eval_inputs.EvalInputError(str(err)) from None
    if os.environ.get("RANK", "0") != "0":
        return 0  # under accelerate/torchrun only rank 0 saves samples, so only it writes predictions
    for samples in sorted(_samples(args.output_path) - before):
        rows = read_predictions(samples)
        if rows is None:
            continue
        print(f"predictions: {write_predictions(samples, rows)}")
        report = write_per_class(samples, rows)
        if report:
            print(f"per class: {report}")
    return 0


@dataclass(kw_only=True)
class EvalRun:
    """One ``cotharness eval`` run as settings: lm-eval's options by their names (``None``: left out, as
    lm-eval's default); any other option of ``lm-eval run`` goes into ``extra_args`` as on the command line."""

    model: str = "hf"
    model_args: dict = field(default_factory=dict)
    tasks: list[str]
    output_path: Path
    limit: float | None = None
    batch_size: int | str | None = "auto"
    device: str | None = None
    gen_kwargs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    log_samples: bool = True  # always on here with an output_path (main says why); kept for lm-eval's name
    seed: int | str | None = None  # lm-eval's --seed: one number or "python,numpy,torch[,fewshot]"
    num_fewshot: int | None = None
    apply_chat_template: bool | str = False
    include_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        """The ``cotharness eval`` arguments of this run (dicts as JSON, which lm-eval reads as given)."""
        argv = ["run", "--model", self.model, "--tasks", ",".join(self.tasks), "--output_path", str(self.output_path)]
        options = {"--model_args": self.model_args, "--gen_kwargs": self.gen_kwargs, "--metadata": self.metadata}
        for option, value in options.items():
            if value:
                argv += [option, json.dumps(value, default=str)]
        for option, value in {"--limit": self.limit, "--batch_size": self.batch_size, "--device": self.device,
                              "--seed": self.seed, "--num_fewshot": self.num_fewshot,
                              "--include_path": self.include_path}.items():
            if value is not None:
                argv += [option, f"{value:g}" if isinstance(value, float) else str(value)]
        if self.log_samples:
            argv.append("--log_samples")
        if self.apply_chat_template:
            argv += ["--apply_chat_template", *([self.apply_chat_template] if isinstance(self.apply_chat_template, str)
                                                else [])]
        return [*argv, *self.extra_args]


@dataclass(frozen=True)
class EvalResult:
    """What one run wrote, in the model's folder under the output path; per task (CoT tasks only for
    ``predictions`` and, with labelled documents, ``per_class``)."""

    output_dir: Path
    results_file: Path
    samples: dict[str, Path]
    predictions: dict[str, Path]
    per_class: dict[str, Path]


class NoResults(WorkFailed):
    """lm-eval ran and wrote no results file (e.g. on a process other than rank 0 under a launcher)."""


def evaluate(cfg: EvalRun) -> EvalResult:
    """The step function of ``cotharness eval``: ``main(cfg.argv())`` in this process, then the files this
    run wrote: the newest ``results_*.json`` under ``output_path`` that was not there before, and its
    samples, predictions and per-class reports. A mistake in ``cfg`` raises EvalInputError (a UserError)."""
    from cotharness.eval_inputs import EvalInputError

    root = Path(cfg.output_path)
    if root.suffix == ".json":
        raise EvalInputError(f"output_path {root}: give a folder; lm-eval names a results file itself")
    before = set(root.rglob("results_*.json"))
    argv = sys.argv
    try:
        if main(cfg.argv()) != 0:
            raise WorkFailed(f"lm-eval failed on {', '.join(cfg.tasks)}")
    finally:
        sys.argv = argv  # main hands lm-eval its arguments through sys.argv
    new = [p for p in root.rglob("results_*.json") if p not in before]
    if not new:
        raise NoResults(f"lm-eval wrote no results file under {root}")
    results = max(new, key=lambda p: p.stat().st_mtime)
    stamp = results.stem.removeprefix("results_")
    samples = {task_of(p): p for p in sorted(results.parent.glob(f"samples_*_{stamp}.jsonl"))}

    def beside(prefix: str, suffix: str) -> dict[str, Path]:
        found = {task: _beside(path, prefix, suffix) for task, path in samples.items()}
        return {task: path for task, path in found.items() if path.is_file()}

    return EvalResult(results.parent, results, samples, beside("predictions_", ".csv"), beside("per_class_", ".json"))


def print_help(run_parser) -> None:
    """What cotharness adds, then lm-eval's ``run`` help with its usage and defaults as they are here."""
    from cotharness.eval_inputs import metadata_help

    run_parser.usage = USAGE
    run_parser.description = None
    run_parser.epilog = None  # its examples are for `lm-eval run`
    for action in run_parser._actions:
        if action.dest == "batch_size":
            action.help = "Batch size: 'auto' (the default here for --model hf), 'auto:N', or an integer"
        elif action.dest == "model":
            action.help = "Model name (default: hf, which runs as hf-cot here)"
        if action.metavar == "<bool>":  # a value, unlike a flag's; said so that it does not read as a flag
            action.metavar = "true|false"
    print(HELP.format(metadata=metadata_help()))
    run_parser.print_help()


def check_inputs(args) -> None:
    """Before any model loads: the options, the task names, the model's arguments and paths, the
    ``--metadata`` keys (a typo would silently score the bundled sample) and each task's data. Raises
    EvalInputError (or the data file's DataFileError); warnings (keys passed on to a task not of this
    project) are printed."""
    from cotharness import eval_inputs, gguf_server
    from harness_tasks import hf_model

    eval_inputs.check_run_options(args)
    if args.tasks:  # else from a --config file: lm-eval checks them
        eval_inputs.check_tasks(args.tasks, args.include_path)
    model_args = args.model_args if isinstance(args.model_args, dict) else {}
    if args.model in gguf_server.NAMES:
        args.model_args = gguf_server.check_args(model_args)
    else:
        eval_inputs.check_model_paths(model_args)
    if args.model == hf_model.NAME:
        eval_inputs.check_model_args(model_args)
    if args.tasks:
        for warning in eval_inputs.check_metadata_keys_and_data(args.metadata or {}, args.tasks):
            print(f"warning: {warning}", file=sys.stderr)


def _samples(output_path: str | None) -> set[Path]:
    return set(Path(output_path).rglob("samples_*.jsonl")) if output_path else set()


def read_predictions(samples: Path) -> list[dict] | None:
    """One task's predictions from lm-eval's samples file (id, predicted label, how it was parsed, gold
    if known); None if not a CoT-JSON task."""
    if schema_for(task_of(samples)) is None:
        return None  # a free-text task (e.g. judge-scored instruction following): no label to predict
    rows = []
    with samples.open(encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            resp = (sample.get("filtered_resps") or [None])[0]
            try:
                answer = filtered_answer(resp)
            except (TypeError, ValueError):
                return None  # not produced by our CoT filter (e.g. a log-likelihood task)
            doc = sample["doc"]
            rows.append({"id": doc.get("id", sample["doc_id"]), "predicted_label": answer["label"],
                         "parse_method": answer["method"], "label": doc.get("label")})
    return rows


def _beside(samples: Path, prefix: str, suffix: str) -> Path:
    return samples.with_name(samples.name.replace("samples_", prefix, 1)).with_suffix(suffix)


def write_predictions(samples: Path, rows: list[dict]) -> Path:
    """``predictions_<task>_<timestamp>.csv`` beside the samples file."""
    return write_csv_atomic(_beside(samples, "predictions_", ".csv"), rows,
                            ["id", "predicted_label", "parse_method", "label"])


def task_of(path: Path) -> str:
    """The task in lm-eval's ``samples_<task>_<timestamp>.jsonl`` name."""
    match = re.match(r"samples_(.+)_\d{4}-\d{2}-\d{2}T", path.name)
    return match.group(1) if match else path.stem


def write_per_class(samples: Path, rows: list[dict]) -> Path | None:
    """Per-class scores and confusion of the labelled predictions, printed and written as
    ``per_class_<task>_<timestamp>.json`` beside the samples file; None without labelled rows."""
    from rich.console import Console

    from cotharness.per_class import report, tables

    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return None
    task = task_of(samples)
    schema = schema_for(task)
    names = {str(k): v for k, v in schema.labels.items()} if schema else {}
    gold = [names.get(str(r["label"]), str(r["label"])) for r in labelled]
    pred = [None if r["predicted_label"] is None else names.get(str(r["predicted_label"]), str(r["predicted_label"]))
            for r in labelled]
    rep = {"task": task, **report(gold, pred, order=list(names.values()))}
    console = Console()
    for table in tables(task, rep):
        console.print(table)
    out = _beside(samples, "per_class_", ".json")
    write_atomic(out, json.dumps(rep, indent=2))
    return out
