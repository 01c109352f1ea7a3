"""The catalogue of user mistakes for the app on top: ``eval``, ``compare``, ``demo``, ``tiny-model`` and
option mistakes of any command (tests/catalogue.py says what each row promises); and the command's own
``--version``, ``--debug`` and help."""

import importlib.metadata
import os
import signal
import subprocess
import time

import pytest
import typer
from typer.testing import CliRunner

import catalogue
from catalogue import COTHARNESS, Case

AREA = "Evaluation, comparison, the demo, studies, and any command's options"
EVAL = ["eval", "--tasks", "nli_cot", "--device", "cpu"]
TINY = "pretrained={tiny}"
ONLINE = {"HF_HUB_OFFLINE": ""}  # the hub allowed: a missing model must still fail in seconds, not after retries

SMALL_STUDY = ("name: x\ntask: nli_cot\ndata: {test_file: data.csv, sft: {a: {train: data.csv, dev: data.csv}}}\n"
               "ablations: [a]\n")

CASES = [
    Case("eval-unknown-task", ["eval", "--tasks", "nli_cott", "--model_args", TINY], 2,
         "--tasks nli_cott: no such task; did you mean nli_cot?", "Use a task the message lists (`cotharness eval ls tasks` lists lm-eval's)."),
    Case("eval-unknown-lm-eval-task", ["eval", "--tasks", "nli_cot,hellaswg", "--model_args", TINY], 2,
         "--tasks hellaswg: no such task; did you mean hellaswag", "Use a task the message lists (`cotharness eval ls tasks` lists lm-eval's)."),
    Case("eval-model-args-key", [*EVAL, "--model_args", f"{TINY},batchsize=3"], 2,
         "--model_args key 'batchsize': did you mean 'batch_size'?", "Spell the key as the message suggests."),
    Case("eval-pretrained-path", [*EVAL, "--model_args", "pretrained=/typo/path"], 2,
         "--model_args pretrained=/typo/path: no such folder", "Give the model's folder or hub id."),
    Case("eval-pretrained-not-a-model", [*EVAL, "--model_args", "pretrained={tmp}"], 2,
         "not a model folder (no config.json in it)", "Give the folder that holds the model's config.json."),
    Case("eval-adapter-as-pretrained", [*EVAL, "--model_args", "pretrained={adapter}"], 2,
         "it holds an adapter: give its base model as pretrained= and this folder as peft=",
         "Give the base model as pretrained= and the adapter as peft=."),
    Case("eval-peft-path", [*EVAL, "--model_args", f"{TINY},peft=runs/nope"], 2,
         "--model_args peft=runs/nope: no such folder", "Give the adapter's folder (the one with adapter_config.json).",
         files={"runs/lora/adapter_config.json": "{}"}, env=ONLINE, timeout=60),
    Case("eval-hub-id-unknown", [*EVAL, "--model_args", "pretrained=nobody-cotharness/no-such-model"], 2,
         "--model_args pretrained=nobody-cotharness/no-such-model: no such folder",
         "Give a local folder, or a hub id that exists (logged in, for a private one).", env=ONLINE, timeout=60),
    Case("eval-limit-zero", [*EVAL, "--model_args", TINY, "--limit", "0"], 2,
         "--limit 0: give a number of documents", "Give 1 or more documents, a fraction below 1, or leave --limit out for all."),
    Case("eval-limit-value", [*EVAL, "--model_args", TINY, "--limit", "all"], 2,
         "argument --limit/-L: invalid float value: 'all'", "Give a number."),
    Case("eval-log-samples", [*EVAL, "--model_args", TINY, "--log_samples"], 2,
         "--log_samples needs --output_path DIR", "Add --output_path DIR."),
    Case("eval-metadata-key", [*EVAL, "--model_args", TINY, "--metadata", '{"tset_file": "{data}"}'], 2,
         "--metadata key 'tset_file': did you mean 'test_file'?", "Spell the key as the message suggests."),
    Case("eval-metadata-json", [*EVAL, "--model_args", TINY, "--metadata", '{"test_file": {data}}'], 2,
         "not valid JSON", "Quote the JSON object in single quotes and its strings in double quotes."),
    Case("eval-metadata-missing-file", [*EVAL, "--model_args", TINY, "--metadata", '{"test_file": "missing.csv"}'],
         2, "missing.csv: no such file", "Check the data file's path."),
    Case("eval-unknown-option", [*EVAL, "--mdoel_args", TINY], 2,
         "unknown option --mdoel_args; did you mean --model_args?", "Spell the option as the message suggests."),
    Case("compare-missing-folder", ["compare", "{tmp}/nope", "--out", "report"], 2,
         "nope: no such folder or file", "Give the folder lm-eval wrote with --output_path."),
    Case("compare-names-count", ["compare", "a", "b", "--out", "report", "--names", "base"], 2,
         "--names gives 1 name(s) for 2 runs", "Give one name per run, comma-separated."),
    Case("compare-option-typo", ["compare", "a", "--out", "report", "--nmes", "x"], 2,
         "No such option: --nmes; did you mean --names?", "Spell the option as the message suggests."),
    Case("compare-missing-out", ["compare", "a"], 2, "Missing option '--out'", "Give the option."),
    Case("demo-missing-config", ["demo", "--config", "nope.yaml"], 2, "nope.yaml: no such config file",
         "Give an existing training config, or leave --config out for the project's own."),
    Case("study-missing-config", ["study", "plan", "nope.yaml"], 2, "nope.yaml: no such config file",
         "Give the study's YAML (configs/study/ has examples)."),
    Case("study-key-typo", ["study", "run", "s.yaml"], 2, "s.yaml: unknown key 'ablashuns'; did you mean 'ablations'?",
         "Fix the key the line names.",
         files={"s.yaml": "name: x\ntask: nli_cot\ndata: {test_file: data.csv}\nablashuns: [a]\n"}),
    Case("study-slurm-without-sbatch", ["study", "run", "s.yaml", "--executor", "slurm"], 2,
         "--executor slurm: sbatch is not on PATH; run it from a SLURM login node",
         "Run the study on the cluster's login node, or use --executor local here.",
         files={"s.yaml": SMALL_STUDY}),
    Case("study-bad-gpus", ["study", "run", "s.yaml", "--gpus", "a,b"], 2,
         "--gpus 'a,b': GPU indices separated by commas", "Give GPU numbers, e.g. --gpus 0,1.",
         files={"s.yaml": SMALL_STUDY}),
    Case("study-executor-typo", ["study", "run", "s.yaml", "--executor", "slrum"], 2,
         "Invalid value for '--executor'", "Give one of auto, inline, local, slurm.",
         files={"s.yaml": SMALL_STUDY}),
    Case("demo-bad-limit", ["demo", "--limit", "-1"], 2, "Invalid value for '--limit'", "Give 0 (all documents) or more."),
    Case("tiny-model-bad-value", ["tiny-model", "--out", "m", "--layers", "two"], 2,
         "Invalid value for '--layers'", "Give a whole number."),
    Case("unknown-command", ["evl"], 2, "No such command 'evl'. Did you mean 'eval'?", "Correct the command's name (`cotharness --help` lists them)."),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mistake(case, tmp_path, tiny_model, lora_adapter):
    catalogue.check(case, tmp_path / "case", tiny_model, lora_adapter)


def run(*args, env=None, cwd=None):
    return subprocess.run([str(COTHARNESS), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "COTHARNESS_DEBUG": "", **(env or {})})


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"cotharness {importlib.metadata.version('cotharness')}"


@pytest.mark.parametrize("how", [["--debug"], []], ids=["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path, how):
    proc = run("compare", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *how,
               env={} if how else {"COTHARNESS_DEBUG": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" in proc.stderr and "MissingRunError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("argv", [["datagen", "synthetic", "--out", "{tmp}/data.csv"],
                                  ["train", "--config", "{tmp}/nope.yaml"]], ids=["datagen", "train"])
def test_debug_reaches_the_commands_that_say_their_own_errors(tmp_path, argv):
    (tmp_path / "data.csv").write_text("x\n")
    proc = run(*(a.replace("{tmp}", str(tmp_path)) for a in argv), "--debug")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")


def _commands(command, path=()):
    """Every command path, through click's own listing (the trainer's, datagen's and the study's commands
    are loaded when asked for)."""
    yield path
    if hasattr(command, "list_commands"):
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


def test_no_help_shows_a_flag_taking_a_value():
    """typer 0.29 shows ``--help <bool>``; a flag takes no value (cotharness/cli.py)."""
    from cotharness.cli import app

    paths = [p for p in _commands(typer.main.get_command(app)) if p != ("eval",)]
    assert ("datagen", "synthetic") in paths and ("compare",) in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output and "<bool>" not in result.output, (path, result.output)
    proc = run("eval", "--help", env={"HF_HUB_OFFLINE": "1"})  # lm-eval's argparse help, after ours
    assert proc.returncode == 0 and "<bool>" not in proc.stdout
    assert proc.stdout.startswith("cotharness eval: ") and "lm-eval's own options:" in proc.stdout
    assert "(default: 1)" not in proc.stdout  # lm-eval's batch size default is not ours


def test_demo_config_is_found_from_any_folder(tmp_path, monkeypatch):
    from cotharness.demo import STUDY
    from cotharness.study.config import load_study
    from cotharness.study.graph import build

    monkeypatch.chdir(tmp_path)
    assert STUDY.is_absolute() and STUDY.is_file()
    train = next(s for s in build(load_study(STUDY), tmp_path / "studies", STUDY) if s.kind == "train")
    assert train.config["model"]["base_model"] == str(tmp_path / "studies" / "demo" / "tiny-base")


def test_ctrl_c_in_the_demo_says_what_was_kept(tmp_path):
    proc = subprocess.Popen([str(COTHARNESS), "demo", "--root", "s"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "COTHARNESS_DEBUG": ""},
                            # a child started from a background job would inherit SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if line.startswith("tiny_base: running"):
                break
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, rest
    finally:
        proc.kill()
    assert "Traceback" not in rest
    said = " ".join(rest.split())
    assert "interrupted: study demo: stopped in tiny_base" in said, rest
    assert "finished this run: none" in said and "`cotharness demo --root s` continues" in said, rest
