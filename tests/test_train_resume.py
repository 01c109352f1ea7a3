"""`train --resume` of a finished run trains nothing; a raised --max-steps continues from its last checkpoint.

LoRA on the tiny model's fp32 weights: step counting and checkpoints do not depend on the weights' format
(test_trainer.py resumes a killed 4-bit run), and fp32 steps are fast on a CPU.
"""

import json

import pytest
from typer.testing import CliRunner

from conftest import REPO, write_jsonl


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    from datagen.synthetic.nli import generate

    d = tmp_path_factory.mktemp("sft")
    return write_jsonl(d / "train.jsonl", generate("train", 48)), write_jsonl(d / "dev.jsonl", generate("dev", 16))


def _train(tiny_model, sft_files, out, *extra):
    from cotharness.cli import app

    # 48 rows / 8 a step = 6 steps an epoch: 5 steps end mid-epoch, where the Trainer took a 6th on resume
    result = CliRunner().invoke(app, [
        "train", "--config", str(REPO / "configs/train/demo.yaml"), "--base-model", str(tiny_model),
        "--train-file", str(sft_files[0]), "--eval-file", str(sft_files[1]), "--output-dir", str(out),
        "--set", "model.quantization=none", "--set", "training.per_device_train_batch_size=8",
        "--set", "training.logging_steps=1", *extra])
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def _files(out):
    return {name: (out / name).read_bytes() for name in ("run.json", "README.md", "adapter_model.safetensors")}


def _steps_logged(checkpoint):
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [e["step"] for e in state["log_history"] if "loss" in e]


def test_resume_trains_a_finished_run_only_to_a_raised_limit(tiny_model, sft_files, tmp_path):
    out = tmp_path / "run"
    _train(tiny_model, sft_files, out, "--max-steps", "5")
    before = _files(out)

    said = _train(tiny_model, sft_files, out, "--max-steps", "5", "--resume")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5"]  # no 6th step
    assert _files(out) == before  # run.json, card and adapter untouched
    assert f"{out} is complete at step 5 of 5; nothing to train" in said

    _train(tiny_model, sft_files, out, "--max-steps", "8", "--resume")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 8 and record["max_steps"] == 8
    assert record["resumed_from"] == str(out / "checkpoint-5")
    assert "- steps: 8," in (out / "README.md").read_text()
    assert _steps_logged(out / "checkpoint-8") == list(range(1, 9))  # each step trained once

    # killed after the final checkpoint, before run.json said complete: finished without another step
    (out / "run.json").write_text(json.dumps({**record, "status": "running"}))
    (out / "README.md").unlink()
    (out / "adapter_model.safetensors").unlink()
    said = _train(tiny_model, sft_files, out, "--max-steps", "8", "--resume")
    assert "checkpoint-8 is at step 8 of 8; finishing the run without training" in said
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 8
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-8"]
    assert "- steps: 8," in (out / "README.md").read_text()
    from safetensors.torch import load_file

    saved, kept = load_file(out / "adapter_model.safetensors"), load_file(out / "checkpoint-8/adapter_model.safetensors")
    assert saved.keys() == kept.keys() and all((saved[k] == kept[k]).all() for k in saved)


def _run_dir(path, record, checkpoint_step=None, **state):
    path.mkdir()
    (path / "run.json").write_text(json.dumps(record))
    if checkpoint_step is None:
        return None
    checkpoint = path / f"checkpoint-{checkpoint_step}"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": checkpoint_step, **state}))
    return checkpoint


def test_what_counts_as_finished(tmp_path):
    from trainer.model_card import _steps
    from trainer.train import _nothing_to_train

    # stopped by early stopping at 40 of 300: finished unless the limit goes above 300
    early = {"status": "complete", "global_step": 40, "max_steps": 300}
    ckpt = _run_dir(tmp_path / "early", early, 40)
    assert "complete (stopped early at step 40 of 300); nothing to train" in _nothing_to_train(
        early, tmp_path / "early", ckpt, 300)
    assert _nothing_to_train(early, tmp_path / "early", ckpt, 400) is None
    assert _steps(early) == "40 of 300 (stopped early)"
    # a run.json written before max_steps was recorded: the checkpoint's trainer state says what it trained to
    old = {"status": "complete", "global_step": 40}
    ckpt = _run_dir(tmp_path / "old", old, 40, max_steps=300)
    assert "stopped early at step 40 of 300" in _nothing_to_train(old, tmp_path / "old", ckpt, 300)
    # complete with no checkpoint kept (save_strategy "no"): nothing to continue from
    done = {"status": "complete", "global_step": 5, "max_steps": 5}
    _run_dir(tmp_path / "bare", done)
    assert "complete at step 5 of 5" in _nothing_to_train(done, tmp_path / "bare", None, 5)
    with pytest.raises(FileNotFoundError, match="kept no checkpoint"):
        _nothing_to_train(done, tmp_path / "bare", None, 8)
    # an interrupted run is not finished, whatever its checkpoint says (train() checks the step itself)
    assert _nothing_to_train({"status": "running"}, tmp_path / "early", ckpt, 300) is None


def test_only_a_folder_with_something_to_lose_needs_resume(tmp_path):
    """A run that crashed or was stopped before its first checkpoint starts again without --resume; a
    checkpoint or a finished adapter is never overwritten without it."""
    from trainer.train import RunExists, _check_output_dir

    _run_dir(tmp_path / "crashed", {"status": "failed"})
    assert _check_output_dir(tmp_path / "crashed", resume=False) is None
    _run_dir(tmp_path / "saved", {"status": "interrupted"}, 4)
    with pytest.raises(RunExists, match=r"saved already holds a run \(checkpoint-4\); pass --resume"):
        _check_output_dir(tmp_path / "saved", resume=False)
    assert _check_output_dir(tmp_path / "saved", resume=True) == tmp_path / "saved" / "checkpoint-4"
    _run_dir(tmp_path / "adapter", {"status": "complete"})
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(RunExists, match=r"\(adapter_config.json\)"):
        _check_output_dir(tmp_path / "adapter", resume=False)
