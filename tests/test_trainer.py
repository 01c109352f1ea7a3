"""QLoRA training on the tiny model with real TRL, PEFT and bitsandbytes 4-bit, on the CPU."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness_tasks.data_files import DataFileError
from harness_tasks.errors import UserError
from trainer.config import load_config
from trainer.train import prepare, train

from conftest import REPO, write_jsonl

BIN = Path(sys.executable).parent
DEMO = REPO / "configs/train/demo.yaml"


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    from datagen.synthetic.nli import generate

    d = tmp_path_factory.mktemp("sft")
    return write_jsonl(d / "train.jsonl", generate("train", 48)), write_jsonl(d / "dev.jsonl", generate("dev", 16))


# The path users run: 4-bit NF4 QLoRA on q,k,v,o (demo.yaml trains fp32 LoRA for the CPU time budget).
QLORA = {"model": {"quantization": "nf4"},
         "lora": {"dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
         "training": {"per_device_train_batch_size": 8, "max_steps": -1, "num_train_epochs": 1,
                      "learning_rate": 2e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.03,
                      "weight_decay": 0.01, "train_sampling_strategy": "group_by_length"}}


def config(tiny_model, sft_files, out, **training):
    train_file, eval_file = sft_files
    return load_config(DEMO, {
        "output_dir": str(out), "model": {**QLORA["model"], "base_model": str(tiny_model)}, "lora": QLORA["lora"],
        "data": {"train_file": str(train_file), "eval_file": str(eval_file)},
        "training": {**QLORA["training"], "eval_steps": 4, "save_steps": 4, "logging_steps": 1, **training}})


@pytest.fixture(scope="module")
def trained_run(tiny_model, sft_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "qlora"
    os.environ["WANDB_API_KEY"] = "sk-test-secret-value"  # must never reach an artefact
    try:
        train(config(tiny_model, sft_files, out, max_steps=16, learning_rate=2e-2))
    finally:
        del os.environ["WANDB_API_KEY"]
    return out


def test_collated_batch_keeps_eos_and_masks_prompt(tiny_model, sft_files, tmp_path):
    run = prepare(config(tiny_model, sft_files, tmp_path / "run"))
    tok = run.trainer.processing_class
    assert tok.pad_token_id != tok.eos_token_id
    batch = next(iter(run.trainer.get_train_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        real = ids[mask.bool()].tolist()
        trained = labels[labels != -100].tolist()
        assert trained[-1] == tok.eos_token_id  # the model is taught to stop
        assert real[-1] == tok.eos_token_id and real.count(tok.eos_token_id) == 1
        prompt_end = real.index(tok.convert_tokens_to_ids("[/INST]"))
        # loss only on the answer: nothing up to and including [/INST] has a label
        assert (labels[mask.bool()][: prompt_end + 1] == -100).all()
        assert trained == real[prompt_end + 1:]
        assert tok.decode(trained).startswith('{"thought_process": "Step 1:')
    # the 4-bit base is really 4-bit, with LoRA on q,k,v,o only
    import bitsandbytes as bnb

    model = run.trainer.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trainable = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_training_prompt_tokens_are_lm_evals(tiny_model, sft_files, tmp_path):
    """Token for token, the training prompt is the context lm-eval feeds the model."""
    from lm_eval.models.huggingface import HFLM

    from harness_tasks.nli_cot.utils import doc_to_text

    run = prepare(config(tiny_model, sft_files, tmp_path / "run"))
    lm = HFLM(pretrained=str(tiny_model), device="cpu", dtype="float32")
    rows = [json.loads(line) for line in sft_files[0].read_text().splitlines()]
    for row, example in zip(rows[:8], run.trainer.train_dataset, strict=False):
        n_prompt = next(i for i, label in enumerate(example["labels"]) if label != -100)
        assert example["input_ids"][:n_prompt] == lm.tok_encode(doc_to_text(row))


def test_loss_falls_and_run_dir_is_complete(trained_run, tiny_model):
    state = json.loads((trained_run / "checkpoint-16" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 16 and sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "run.json", "README.md"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    record = json.loads((trained_run / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 16 and record["world_size"] == 1
    assert record["quantization"] == "nf4" and record["seed"] == 42
    assert record["versions"]["trl"] and record["versions"]["bitsandbytes"] and "commit" in record["git"]
    assert len(record["prompt_template"]["sha256"]) == 64
    assert all(len(d["sha256"]) == 64 for d in record["data"].values())
    assert record["config"]["lora"]["r"] == 16
    # demo.yaml sets checkpointing off; Liger is inherited as "auto": off on a CPU, recorded as chosen
    assert record["config"]["training"]["use_liger_kernel"] == "auto"
    assert record["resolved"] == {"use_liger_kernel": False, "activation_checkpointing": False}
    assert record["train_seconds"] == record["segments"][0]["seconds"] and len(record["segments"]) == 1
    from huggingface_hub import ModelCard

    data = ModelCard.load(trained_run / "README.md").data  # ours, not TRL's draft
    assert (data.base_model, data.library_name) == (str(tiny_model), "peft") and "qlora" in data.tags
    card = (trained_run / "README.md").read_text()
    assert "fine-tuned version of" not in card
    assert "| `use_liger_kernel` | `auto` (chose `False`) |" in card
    assert f"peft={trained_run},load_in_4bit=True" in card and "cotharness eval --tasks nli_cot" in card
    for path in trained_run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jinja"):
            assert "sk-test-secret-value" not in path.read_text(errors="ignore"), path


def test_lm_eval_loads_the_adapter(trained_run, tmp_path):
    record = json.loads((trained_run / "run.json").read_text())
    from trainer.model_card import eval_model_args

    out = tmp_path / "eval"
    proc = subprocess.run([BIN / "cotharness", "eval", "--tasks", "nli_cot", "--model_args", eval_model_args(record),
                           "--device", "cpu", "--batch_size", "4", "--limit", "4",
                           "--gen_kwargs", "max_gen_toks=8", "--output_path", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    args = json.loads(results.read_text())["config"]["model_args"]
    assert args["peft"] == str(trained_run) and args["load_in_4bit"] is True


def test_existing_run_needs_resume(trained_run, tiny_model, sft_files):
    with pytest.raises(FileExistsError, match="--resume"):
        prepare(config(tiny_model, sft_files, trained_run))


def test_overlong_rows_are_dropped_or_refused(tiny_model, sft_files, tmp_path):
    cfg = config(tiny_model, sft_files, tmp_path / "a")
    cfg.data.max_length = 193  # the synthetic rows are 186-199 tokens long
    run = prepare(cfg)
    kept, total = len(run.trainer.train_dataset), 48
    assert 0 < kept < total and run.reports[0].summary()["over_max_length"] == total - kept
    assert max(len(x["input_ids"]) for x in run.trainer.train_dataset) <= 193
    cfg.data.overlong, cfg.output_dir = "fail", str(tmp_path / "b")
    with pytest.raises(DataFileError, match=r"train.jsonl: \d+ of 48 rows exceed data.max_length=193"):
        prepare(cfg)
    cfg.data.overlong, cfg.data.max_length, cfg.output_dir = "drop", 100, str(tmp_path / "c")
    with pytest.raises(DataFileError, match=r"train.jsonl: every row \(48\) exceeds data.max_length=100 tokens"):
        prepare(cfg)


def test_bad_training_rows(tiny_model, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"premise": "A", "hypothesis": "B", "thought_process": "t", "label": 1},
        {"premise": "A", "hypothesis": "B", "thought_process": "t", "label": "yes"}])
    cfg = load_config(DEMO, {"output_dir": str(tmp_path / "r"), "model": {"base_model": str(tiny_model)},
                             "data": {"train_file": str(bad), "eval_file": None}})
    with pytest.raises(DataFileError, match=r"bad.jsonl:2: label='yes' is not one of \[1, 0\]"):
        prepare(cfg)


def test_empty_labels_are_refused_or_skipped_by_the_config(tiny_model, tmp_path):
    rows = [{"premise": f"A{i}", "hypothesis": "B", "thought_process": "t", "label": i % 2} for i in range(4)]
    rows[1]["label"] = ""
    data = write_jsonl(tmp_path / "holes.jsonl", rows)
    overrides = {"output_dir": str(tmp_path / "r"), "model": {"base_model": str(tiny_model)},
                 "data": {"train_file": str(data), "eval_file": None}}
    with pytest.raises(DataFileError, match=r"holes.jsonl: 1 of 4 rows have an empty 'label' \(first on line 2\)"):
        prepare(load_config(DEMO, overrides))
    overrides["data"]["empty_labels"] = "skip"
    run = prepare(load_config(DEMO, overrides))
    assert len(run.trainer.train_dataset) == 3


def _train_cmd(tiny_model, sft_files, out, *extra, launcher=(BIN / "cotharness", "train")):
    return [*map(str, launcher), "--config", str(DEMO), "--base-model", str(tiny_model),
            "--train-file", str(sft_files[0]), "--eval-file", str(sft_files[1]), "--output-dir", str(out),
            "--set", "model.quantization=nf4", "--set", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
            "--set", "training.per_device_train_batch_size=8", *extra]


def test_kill_and_resume(tiny_model, sft_files, tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd(tiny_model, sft_files, out, "--max-steps", "60", "--set", "training.save_steps=3",
                     "--set", "training.eval_steps=3", "--set", "training.save_total_limit=2",
                     "--set", "early_stopping_patience=null")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("checkpoint-*/trainer_state.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed mid-run
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 60
    assert record["resumed_from"] and "checkpoint-" in record["resumed_from"]


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_there(tiny_model, sft_files, tmp_path):
    """SIGINT (Ctrl-C) mid-run: the Trainer saves checkpoint-<step> and stops, run.json and the card say
    "interrupted" with the command that resumes, one line says it, exit 130; that command finishes the run."""
    from huggingface_hub import ModelCard

    out = tmp_path / "run"
    # no checkpoint but the interrupt's; fp32 LoRA: the steps are quick and the signal lands mid-run
    cmd = _train_cmd(tiny_model, sft_files, out, "--max-steps", "400", "--set", "training.save_steps=1000",
                     "--set", "training.eval_steps=1000", "--set", "model.quantization=none",
                     "--set", "training.logging_steps=1")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("logs/**/events.out.tfevents.*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # TensorBoard's file appears as the training loop begins
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends Ctrl-C: to the whole process group
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    step = record["global_step"]
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT" and 0 < step < 400
    assert record["checkpoint"] == str(out / f"checkpoint-{step}")
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    resume = shlex.split(record["resume_command"])  # the same options, then --resume
    assert resume[:2] == ["cotharness", "train"] and resume[-1] == "--resume"
    assert sorted(resume[2:-1]) == sorted(map(str, cmd[2:]))
    last = stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: stopped by SIGINT at step {step}; checkpoint saved in {out}/checkpoint-{step}; "
                    f"continue with: {record['resume_command']}")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "fine-tuned version of" not in card.text
    assert f"**Interrupted** (SIGINT) at step {step}" in card.text

    resumed = [str(BIN / "cotharness"), *shlex.split(record["resume_command"])[1:]]
    resumed[resumed.index("--max-steps") + 1] = str(step + 3)  # a few more steps are enough to show it continues
    done = subprocess.run(resumed, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == step + 3
    assert record["resumed_from"] == str(out / f"checkpoint-{step}")
    first, second = record["segments"]
    assert (first["status"], first["to_step"], second["from_step"]) == ("interrupted", step, step)
    assert record["train_seconds"] == pytest.approx(first["seconds"] + second["seconds"], abs=0.1)
    assert "over 2 segments (resumed)" in (out / "README.md").read_text()


def test_two_processes_data_parallel(tiny_model, sft_files, tmp_path):
    """The `accelerate launch` path: two processes (torchrun, gloo on CPU), each with a 4-bit copy."""
    out = tmp_path / "ddp"
    cmd = _train_cmd(tiny_model, sft_files, out, "--max-steps", "3", "--set", "training.eval_steps=3",
                     "--set", "training.save_steps=3",
                     launcher=(BIN / "torchrun", "--nproc_per_node", "2", "-m", "trainer"))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["world_size"] == 2
    # 48 rows / (8 per device x 2 processes) = 3 steps per epoch: 3 steps are one full epoch
    assert record["train_metrics"]["epoch"] == pytest.approx(1.0)


def test_merge(trained_run, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.merge import merge

    out = merge(trained_run, tmp_path / "merged", base_model=str(tiny_model), dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(out)
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), trained_run)
    ids = torch.tensor([[1, 4, 50, 60, 70, 5]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, unmerged(ids).logits, atol=1e-4, rtol=1e-4)
    assert json.loads((out / "merge.json").read_text())["adapter_trained_on"] == "nf4"
    with pytest.raises(UserError, match="exists; choose a new --out"):
        merge(trained_run, out, base_model=str(tiny_model))


def test_merge_refuses_4bit_weights(trained_run, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from harness_tasks.quant import bnb_config
    from trainer.merge import merge

    quantized = tmp_path / "tiny-4bit"
    AutoModelForCausalLM.from_pretrained(tiny_model, quantization_config=bnb_config(bnb_4bit_compute_dtype="float32"),
                                         device_map="cpu").save_pretrained(quantized)
    with pytest.raises(ValueError, match="stored quantized"):
        merge(trained_run, tmp_path / "merged", base_model=str(quantized))
    assert not (tmp_path / "merged").exists()


def test_padding_free_batches_match_padded_ones(tiny_model, sft_files, tmp_path):
    """training.padding_free=true: the same rows concatenated without pad tokens (TRL needs max_length=None,
    safe because overlong rows are dropped before), and the same loss as the padded batch."""
    import torch

    def batch(out, **training):
        cfg = config(tiny_model, sft_files, tmp_path / out, **training)
        cfg.model.quantization = "none"  # fp32: the two layouts must agree to rounding
        run = prepare(cfg)
        return run, next(iter(run.trainer.get_train_dataloader()))

    padded_run, padded = batch("padded")
    free_run, free = batch("free", padding_free=True)
    assert free_run.trainer.args.max_length is None and padded_run.trainer.args.max_length is not None
    assert free["input_ids"].shape[0] == 1 and "attention_mask" not in free
    rows = [ids[m.bool()].tolist() for ids, m in zip(padded["input_ids"], padded["attention_mask"], strict=True)]
    assert free["input_ids"][0].tolist() == sum(rows, [])  # same rows, same order, nothing added
    assert (free["position_ids"][0] == 0).sum() == len(rows)  # positions restart at each row
    model = padded_run.trainer.model
    with torch.no_grad():
        loss_padded = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                            labels=padded["labels"]).loss
        loss_free = model(input_ids=free["input_ids"], position_ids=free["position_ids"], labels=free["labels"]).loss
    torch.testing.assert_close(loss_free, loss_padded, rtol=1e-4, atol=1e-4)
