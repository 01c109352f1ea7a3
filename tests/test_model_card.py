"""The run folder's README.md: a PEFT model card the Hugging Face Hub reads (front matter loaded with
huggingface_hub), the base's quantization in words, the time of every resumed segment, and the command
whose output `cotharness compare` reads."""

import pytest
from huggingface_hub import ModelCard

from trainer.config import load_config
from trainer.model_card import render

from conftest import REPO

DATA = {"rows": 40, "sha256": "ab" * 32, "tokens_median": 190, "tokens_max": 206, "over_max_length": 0}


def _record(quantization="nf4", **extra):
    cfg = load_config(REPO / "configs/train/demo.yaml", {
        "output_dir": "runs/nli-lora", "model": {"base_model": "mistralai/Mistral-7B-v0.3", "quantization": quantization,
                                              "compute_dtype": "bfloat16"},
        "data": {"train_file": "data/sft/train.jsonl", "eval_file": "data/sft/dev.jsonl"}})
    return {"config": cfg.model_dump(), "task": "nli_cot", "quantization": quantization,
            "prompt_template": {"name": "nli_cot", "sha256": "cd" * 32},
            "data": {"data/sft/train.jsonl": DATA, "data/sft/dev.jsonl": DATA},
            "git": {"commit": "0123abc", "dirty": False}, "resolved": {"use_liger_kernel": False},
            "status": "complete", "global_step": 30, "max_steps": 30, "train_seconds": 75.0,
            "segments": [{"seconds": 75.0}], "eval_metrics": {"eval_loss": 0.5}, **extra}


def _card(tmp_path, record) -> ModelCard:
    path = tmp_path / "README.md"
    path.write_text(render(record), encoding="utf-8")
    return ModelCard.load(path)


def test_front_matter_is_what_the_hub_reads(tmp_path):
    data = _card(tmp_path, _record()).data
    assert data.base_model == "mistralai/Mistral-7B-v0.3"
    assert (data.library_name, data.pipeline_tag) == ("peft", "text-generation")
    assert {"nli_cot", "lora", "qlora", "sft", "trl"} <= set(data.tags)
    assert data.datasets == ["data/sft/train.jsonl", "data/sft/dev.jsonl"]


def test_free_text_task_tags_the_lm_eval_task_that_evaluates_it(tmp_path):
    data = _card(tmp_path, _record(task="instruct")).data
    assert {"instruct", "instruct_judged"} <= set(data.tags)


@pytest.mark.parametrize(("quantization", "says", "tagged"), [
    ("nf4", "QLoRA: LoRA on a 4-bit NF4 base", "qlora"),
    ("int8", "LoRA on an 8-bit (int8) base", "8-bit"),
    ("none", "LoRA on the unquantized base in bfloat16", None),
])
def test_quantization_is_said_in_words(tmp_path, quantization, says, tagged):
    card = _card(tmp_path, _record(quantization))
    assert says in card.text and "none base" not in card.text
    assert tagged is None and "qlora" not in card.data.tags or tagged in card.data.tags


def test_eval_command_writes_what_compare_reads(tmp_path):
    text = _card(tmp_path, _record()).text
    assert ("cotharness eval --tasks nli_cot --model_args pretrained=mistralai/Mistral-7B-v0.3,peft=runs/nli-lora,"
            "load_in_4bit=True \\\n  --output_path results/nli-lora --log_samples") in text
    unquantized = _card(tmp_path, _record("none")).text
    assert "peft=runs/nli-lora,dtype=bfloat16 \\\n  --output_path results/nli-lora --log_samples" in unquantized


def test_training_time_is_summed_over_resumed_segments(tmp_path):
    text = _card(tmp_path, _record(train_seconds=75.5, segments=[{"seconds": 50.0}, {"seconds": 25.5}])).text
    assert "- steps: 30, training time 75.5 s over 2 segments (resumed)" in text


def test_an_interrupted_run_says_how_to_continue(tmp_path):
    command = "cotharness train --config c.yaml --resume"
    card = _card(tmp_path, _record(status="interrupted", signal="SIGINT", global_step=12, eval_metrics={},
                                   resume_command=command))
    assert f"**Interrupted** (SIGINT) at step 12: the adapter is not written yet. Continue with `{command}`" in card.text
    assert "- steps: 12 of 30," in card.text and "stopped early" not in card.text
    assert "eval loss: not measured yet" in card.text
    assert card.data.library_name == "peft"


def test_trl_never_writes_its_card():
    """TRL's SFTTrainer writes a draft card into the run folder at every checkpoint; ours is the only one."""
    from trainer.sft import Trainer

    assert Trainer.create_model_card(object(), model_name="x") is None  # writes nothing, touches nothing
