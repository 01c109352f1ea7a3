"""Quiet by default: the ``cotharness`` command shows no library noise a user cannot act on
(``harness_tasks/quiet.py``), while warnings about the user's own settings still show."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from harness_tasks import quiet as q

from conftest import REPO

COTHARNESS = Path(sys.executable).parent / "cotharness"
NOISE = (
    "Failed to load CPU gemm_4bit_forward",
    "kernels-community",
    "fatal: not a git repository",
    "Custom kwargs can be passed to `--metadata`",
    "`is_gradient_checkpointing` is deprecated",
)


@pytest.fixture
def filters():
    """quiet()'s logger filters and warning filters, removed again after the test."""
    saved = warnings.filters[:]
    yield
    warnings.filters[:] = saved
    warnings._filters_mutated()
    for name, _ in q.LOG_LINES + q.LOG_PARTS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, q._Drop)]:
            logger.removeFilter(f)


def _logged(name: str, message: str, *args) -> bool:
    """Whether a WARNING record of logger ``name`` gets past the logger's filters."""
    logger = logging.getLogger(name)
    return bool(logger.filter(logger.makeRecord(name, logging.WARNING, __file__, 1, message, args, None)))


def test_the_library_lines_are_dropped_and_nothing_else(filters, monkeypatch):
    monkeypatch.delenv("COTHARNESS_DEBUG", raising=False)
    bnb = "bitsandbytes.backends.cpu.ops"
    bnb_line = ("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                "`pip install kernels` and the kernels >= 0.11.1")
    task_line = ("nli_cot: Custom kwargs can be passed to `--metadata` in console (as json string) or to the "
                 "TaskManager.\nFor example --metadata='{\"max_seq_lengths\":[4096, 8192]}'.")
    assert _logged(bnb, bnb_line, "No module named 'kernels'") and _logged("lm_eval.api.task", task_line)
    q.quiet()
    q.quiet()  # idempotent: one filter per logger
    assert sum(isinstance(f, q._Drop) for f in logging.getLogger(bnb).filters) == 1
    assert not _logged(bnb, bnb_line, "No module named 'kernels'")
    assert not _logged("lm_eval.api.task", task_line)
    # the same loggers' other lines, and the same text from another logger, still show
    assert _logged(bnb, "something else went wrong in the CPU backend")
    assert _logged("lm_eval.api.task", "nli_cot: the dataset has no test split")
    assert _logged("lm_eval.config.evaluate_config", "--limit SHOULD ONLY BE USED FOR TESTING.")
    assert _logged("bitsandbytes", bnb_line, "x")


def test_the_peft_deprecation_is_ignored_but_not_other_future_warnings(filters, monkeypatch):
    monkeypatch.delenv("COTHARNESS_DEBUG", raising=False)
    q.quiet()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        q.quiet()  # its filters go in front of "default"
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated and will be removed in v6.",
                               FutureWarning, "modeling_utils.py", 3303, module="transformers.modeling_utils")
        warnings.warn_explicit("`gradient_checkpointing` is deprecated and will be removed in v6.",
                               FutureWarning, "training_args.py", 1541, module="transformers.training_args")
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "mine.py", 1,
                               module="mine")
    assert [str(w.message) for w in seen] == ["`gradient_checkpointing` is deprecated and will be removed in v6.",
                                              "`is_gradient_checkpointing` is deprecated"]


def test_debug_turns_it_off(filters, monkeypatch):
    monkeypatch.setenv("COTHARNESS_DEBUG", "1")
    q.quiet()
    assert _logged("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community")


def test_lm_eval_git_hash_is_the_same_and_silent(tmp_path, monkeypatch, capfd):
    expected = subprocess.run(["git", "describe", "--always"], cwd=REPO, capture_output=True, text=True)
    monkeypatch.chdir(REPO)
    assert q._quiet_git_commit_hash() == (expected.stdout.strip() if expected.returncode == 0 else None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert q._quiet_git_commit_hash() is None
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_the_hook_replaces_lm_evals_function_when_it_is_imported():
    code = ("from harness_tasks.quiet import quiet, _quiet_git_commit_hash as mine; quiet(); "
            "import lm_eval.evaluator as e, lm_eval.loggers.utils as u; "
            "assert e.get_git_commit_hash is mine and u.get_git_commit_hash is mine; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COTHARNESS_DEBUG": ""}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COTHARNESS_DEBUG": "",
           "GIT_CEILING_DIRECTORIES": str(cwd.parent)}  # no checkout above the working directory
    proc = subprocess.run([str(COTHARNESS), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_commands_outside_a_checkout_show_no_library_noise(tmp_path):
    """The commands a user runs first, from a directory that is not a git checkout, 4-bit included."""
    work = tmp_path / "work"
    work.mkdir()
    err = {}
    err["tiny-model"] = _run(["tiny-model", "--out", "tiny"], work).stderr
    err["datagen"] = _run(["datagen", "synthetic", "--out", "data", "--train", "5", "--dev", "2", "--test", "2"],
                          work).stderr
    err["train"] = _run(["train", "--config", str(REPO / "configs/train/demo.yaml"), "--base-model", "tiny",
                         "--train-file", "data/train.jsonl", "--eval-file", "data/dev.jsonl", "--output-dir", "run",
                         "--max-steps", "1"], work).stderr
    proc = _run(["eval", "--tasks", "nli_cot", "--model_args", "pretrained=tiny,load_in_4bit=True", "--device", "cpu",
                 "--batch_size", "2", "--limit", "2", "--gen_kwargs", "max_gen_toks=4", "--output_path", "out"], work)
    err["eval"] = proc.stderr
    assert "--limit SHOULD ONLY BE USED FOR TESTING" in proc.stderr  # lm-eval's warning about the user's flag stays
    found = {cmd: [line for line in text.splitlines() if any(n in line for n in NOISE)] for cmd, text in err.items()}
    assert not any(found.values()), found
