"""Instruction backtranslation on the tiny model: a backward adapter trained with
``configs/train/backward.yaml`` on ``inverse``'s output, the exact prompt a local backward model gets,
augment with it, and ``configs/train/self_instruct.yaml`` training on the response only. The commands
against a server (the loopback stand-in) are in ``test_backtranslate_cli.py``."""

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from cotharness.cli import app
from datagen.backtranslate.augment import augment_stage, echoes, read_instruction
from datagen.backtranslate.curate import read_judgement
from harness_tasks.tasks import get_task
from trainer.config import load_config

import backtranslate_responder
from conftest import REPO, write_jsonl

# configs/train/*.yaml are GPU recipes (bf16, 4-bit, paged 8-bit AdamW): on the CPU, fp32 LoRA
CPU = ("--set", "model.quantization=none", "--set", "model.compute_dtype=float32", "--set", "training.bf16=false",
       "--set", "training.optim=adamw_torch", "--set", "training.use_cpu=true",
       "--set", "training.gradient_checkpointing=false", "--set", "training.per_device_train_batch_size=4",
       "--set", "training.gradient_accumulation_steps=1")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def seed_pairs(tmp_path_factory):
    """Seed pairs as `inverse` reads them, and the directory it wrote them to."""
    d = tmp_path_factory.mktemp("seed")
    rows = [{"id": f"s{i}", "instruction": backtranslate_responder.instruction_for(t) + f" ({i})", "response": t}
            for i, t in enumerate(backtranslate_responder.RESPONSES * 3)]
    src = write_jsonl(d / "pairs.jsonl", rows)
    result = cli("datagen", "backtranslate", "inverse", "--input", src, "--out", d / "backward", "--dev-fraction", 0.2)
    assert result.exit_code == 0, result.output
    return d / "backward"


@pytest.fixture(scope="module")
def backward_run(tiny_model, seed_pairs, tmp_path_factory):
    """A backward adapter trained for a few steps with configs/train/backward.yaml, as users run it."""
    out = tmp_path_factory.mktemp("runs") / "backward"
    result = cli("train", "--config", REPO / "configs/train/backward.yaml", "--base-model", tiny_model,
                 "--train-file", seed_pairs / "train.jsonl", "--eval-file", seed_pairs / "dev.jsonl",
                 "--output-dir", out, "--max-steps", 3, *CPU, "--set", "training.eval_steps=3",
                 "--set", "training.save_steps=3")
    assert result.exit_code == 0, result.output
    return out


def test_backward_config_trains_on_inverse_output(backward_run):
    record = json.loads((backward_run / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 3 and record["task"] == "backward"
    assert record["config"]["lora"]["r"] == 32 and record["prompt_template"]["name"] == "backward"
    assert "eval_loss" in record["eval_metrics"]
    card = (backward_run / "README.md").read_text()
    assert "(free text)" in card and "`backward` has no lm-eval task" in card
    assert f"--adapter {backward_run}" in card and "the instruction) + EOS" in card


def test_local_backward_model_gets_the_backward_prompt_exactly(tiny_model, seed_pairs, backward_run, tmp_path):
    """What augment sends a local model is the text, and the tokens, the backward model was trained on."""
    from datagen.engine.backends.hf import HFBackend
    from trainer.train import prepare

    row = read(seed_pairs / "train.jsonl")[0]
    messages = augment_stage().messages(row)
    assert messages == ({"role": "user", "content": get_task("backward").text(row)},)  # no system message
    raw = HFBackend(str(tiny_model), endpoint="x", use_chat_template=False)
    text = raw.render(messages)
    assert text == get_task("backward").prompt(row)  # byte for byte
    # the tokenizer's chat template writes it otherwise (here a literal BOS; Mistral v0.3: no space before [/INST])
    assert HFBackend(str(tiny_model), endpoint="x").render(messages) != text
    cfg = load_config(REPO / "configs/train/backward.yaml", {
        "output_dir": str(tmp_path / "run"), "model": {"base_model": str(tiny_model), "quantization": "none",
                                                       "compute_dtype": "float32"},
        "data": {"train_file": str(seed_pairs / "train.jsonl"), "eval_file": None},
        "training": {"bf16": False, "optim": "adamw_torch", "use_cpu": True, "gradient_checkpointing": False}})
    example = prepare(cfg).trainer.train_dataset[0]
    n_prompt = next(i for i, label in enumerate(example["labels"]) if label != -100)
    assert example["input_ids"][:n_prompt] == raw.encode(text)


def test_augment_with_the_local_backward_model(tiny_model, backward_run, tmp_path, monkeypatch):
    """Batched sampling through the adapter; every first answer is refused here, so every row is re-asked:
    the same prompt again with the next seed, which gives a new sample."""
    from datagen.backtranslate import augment as backtranslate
    from datagen.engine.answers import InvalidAnswer
    from datagen.engine.backends.hf import HFBackend

    monkeypatch.chdir(tmp_path)
    sent, refused, check = [], {}, backtranslate.check_instruction
    encode = HFBackend.encode
    monkeypatch.setattr(HFBackend, "encode", lambda self, text: sent.append(text) or encode(self, text))

    def refuse_first(row, instruction):
        if row["id"] not in refused:
            refused[row["id"]] = instruction
            raise InvalidAnswer("refused by the test")
        check(row, instruction)
    monkeypatch.setattr(backtranslate, "check_instruction", refuse_first)
    src = write_jsonl(tmp_path / "lima.jsonl", [{"response": t} for t in backtranslate_responder.RESPONSES[:6]])
    result = cli("datagen", "backtranslate", "augment", "--input", src, "--out", "pairs.jsonl",
                 "--backend", "hf", "--model", tiny_model, "--adapter", backward_run, "--max-tokens", 8, "--batch-size", 3)
    assert result.exit_code == 0, result.output
    rows = read(tmp_path / "pairs.jsonl")
    assert [r["id"] for r in rows] == [str(i) for i in range(6)]
    task = get_task("backward")
    # only the backward prompt, once per attempt (each row at least twice)
    assert Counter(sent) == {task.prompt(r): r["meta"]["augment"]["attempts"] for r in rows}
    for row in rows:
        meta = row["meta"]["augment"]
        assert meta["backend"] == "hf" and meta["model"] == str(tiny_model) and meta["reprompts"] >= 1
        if meta["status"] == "ok":  # the tiny model writes noise, but never an empty or echoed one kept
            assert row["instruction"].strip() and not echoes(row["instruction"], row["response"])
            assert row["instruction"] != refused[row["id"]]  # seed 1, not seed 0's sample again
        else:
            assert row["instruction"] is None and meta["attempts"] == 3 and "no valid answer" in meta["error"]
    assert any(r["meta"]["augment"]["status"] == "ok" for r in rows)
    manifest = json.loads((tmp_path / "pairs.manifest.json").read_text())
    assert manifest["request"] == {"response_format": "none", "temperature": 1.2, "max_tokens": 8, "top_p": 0.9,
                                   "random_seed": 0, "max_reprompts": 2}
    assert manifest["endpoint"].endswith(f"+{backward_run.resolve()}:instruction-format")
    assert manifest["settings"]["batch_size"] == 3 and manifest["settings"]["from_flags"] == ["batch_size",
                                                                                              "max_tokens"]


def test_self_instruct_trains_on_the_response_only(tiny_model, tmp_path):
    """configs/train/self_instruct.yaml on curated pairs: the completion is the response + EOS, the prompt
    tokens (up to and including [/INST]) carry no label."""
    from trainer import model_card
    from trainer.data import sft_rows
    from trainer.train import _record, prepare

    rows = [{"id": f"p{i}", "instruction": f"Tell me fact {i}.", "response": t, "score": 4}
            for i, t in enumerate(backtranslate_responder.RESPONSES)]
    curated = write_jsonl(tmp_path / "curated.jsonl", rows)
    cfg = load_config(REPO / "configs/train/self_instruct.yaml", {
        "output_dir": str(tmp_path / "run"), "model": {"base_model": str(tiny_model), "quantization": "none",
                                                       "compute_dtype": "float32"},
        "data": {"train_file": str(curated)},
        "training": {"bf16": False, "optim": "adamw_torch", "use_cpu": True, "gradient_checkpointing": False,
                     "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}})
    assert cfg.data.task == "instruct" and cfg.data.eval_file is None
    run = prepare(cfg)
    tok = run.trainer.processing_class
    assert [r["completion"] for r in sft_rows(curated, get_task("instruct"), tok.eos_token)] == \
           [r["response"] + tok.eos_token for r in rows]
    batch = next(iter(run.trainer.get_train_dataloader()))
    by_response, seen = {r["response"]: r for r in rows}, []
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        real = ids[mask.bool()].tolist()
        trained = labels[labels != -100].tolist()
        prompt_end = real.index(tok.convert_tokens_to_ids("[/INST]"))
        assert (labels[mask.bool()][: prompt_end + 1] == -100).all()  # no loss on the prompt
        assert trained == real[prompt_end + 1:] and trained[-1] == tok.eos_token_id  # the response, then stop
        row = by_response[tok.decode(trained[:-1])]
        assert real[: prompt_end + 1] == tok(get_task("instruct").prompt(row)).input_ids  # [INST] instruction [/INST]
        seen.append(row["id"])
    assert sorted(seen) == sorted(by_response[t]["id"] for t in backtranslate_responder.RESPONSES)
    card = model_card.render(_record(run.cfg, run.reports, status="complete"))  # no JSON answer schema needed
    assert "(free text)" in card and "the response" in card and "cotharness eval --tasks instruct" in card


def test_shipped_configs():
    backward = load_config(REPO / "configs/train/backward.yaml")
    assert (backward.data.task, backward.lora.r, backward.data.max_length) == ("backward", 32, 2048)
    assert backward.data.train_file.endswith("backward/train.jsonl")
    final = load_config(REPO / "configs/train/self_instruct.yaml")
    assert (final.data.task, final.lora.r, final.training["learning_rate"], final.training["num_train_epochs"]) == (
        "instruct", 16, 2e-4, 3)
    from datagen.backtranslate.settings import load

    augment, _ = load(None, "augment", {})
    curate, _ = load(None, "curate", {})
    assert (augment.temperature, augment.top_p, curate.threshold) == (1.2, 0.9, 4)


@pytest.mark.parametrize("instruction,response,echo", [
    ("Paris is the capital of France.", "Paris is the capital of France.", True),
    ("paris is the capital of france", "Paris is the capital of France!", True),
    ("Paris is the capital", "Paris is the capital of France.", True),  # more than half of it, copied
    ("What is the capital of France?", "Paris is the capital of France.", False),
    ("Is Paris in France? Answer yes or no.", "Yes.", False),  # a short answer inside a real question
    ("Write a haiku.", "An old silent pond / a frog jumps in / splash!", False),
])
def test_echoed_instructions(instruction, response, echo):
    assert echoes(instruction, response) is echo


def test_replies_are_read_as_free_text():
    from datagen.engine.answers import InvalidAnswer

    assert read_instruction("Instruction: Name a French city.\n") == "Name a French city."
    with pytest.raises(InvalidAnswer, match="empty"):
        read_instruction(" \n ")
    assert read_judgement("Clear and correct.\nScore: 5") == (5, "Clear and correct.")
    assert read_judgement("Clear, so the score is 4 of 5.").score == 4
    for reply in ("Good answer.", "Score: 7/10", "Score: 0"):
        with pytest.raises(InvalidAnswer, match="Score: N"):
            read_judgement(reply)


def test_free_text_rows_need_their_fields(tmp_path):
    from harness_tasks.data_files import DataFileError
    from trainer.data import sft_rows

    bad = write_jsonl(tmp_path / "curated.jsonl", [{"instruction": "Name a city.", "response": "Paris."},
                                                   {"instruction": " ", "response": "Rome."}])
    with pytest.raises(DataFileError, match=r"curated.jsonl:2: 'instruction' is empty or not text"):
        sft_rows(bad, get_task("instruct"), "</s>")
    with pytest.raises(DataFileError, match=r"curated.jsonl:1: the training target is empty"):
        sft_rows(write_jsonl(tmp_path / "curated.jsonl", [{"instruction": "Name a city.", "response": ""}]),
                 get_task("instruct"), "</s>")
