"""The catalogue's rows for ``cotharness train`` and ``cotharness merge``: each mistake is one ``error:``
line and an exit status, said before a model loads, with nothing written (tests/catalogue.py)."""

import json

import pytest

from catalogue import Case, check

DEMO = "{repo}/configs/train/demo.yaml"
DEFAULT = "{repo}/configs/train/default.yaml"
# three valid NLI rows with a thought: enough for every check made before training
TRAIN = "".join(json.dumps({"id": f"r{i}", "premise": "A man sleeps.", "hypothesis": "A person sleeps.",
                            "thought_process": "Step 1: a man is a person.", "label": 1}) + "\n" for i in range(3))
# the demo's recipe on the tiny model and that file, without the demo's eval file
CONFIG = "base: {repo}/configs/train/demo.yaml\nmodel: {base_model: {tiny}}\n" \
         "data: {train_file: train.jsonl, eval_file: null}\noutput_dir: run\n"
VALID = {"train.jsonl": TRAIN, "train.yaml": CONFIG}
ON_TINY = ["train", "--config", "train.yaml"]
# a base model saved 4-bit: its config.json is all that is read before the merge refuses it
QUANTIZED = json.dumps({"model_type": "mistral", "quantization_config": {
    "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}})

AREA = "training and merging (cotharness train, cotharness merge)"

CASES = [
    Case("train-base-model-typo", [*ON_TINY, "--base-model", "/typo/path"],
         2, "--base-model /typo/path: no such directory", "fix the path, or give a hub id (owner/name)",
         files=VALID),
    Case("train-base-model-not-on-hub", [*ON_TINY, "--base-model", "nobody/no-such-model"],
         2, "--base-model nobody/no-such-model: cannot load it", "check the hub id, the network or HF_HUB_OFFLINE",
         files=VALID),
    Case("estimate-memory-bf16-on-cpu", ["train", "--config", DEFAULT, "--base-model", "{tiny}", "--estimate-memory"],
         2, "training.bf16=true (mixed precision) needs a CUDA GPU", "--set training.bf16=false, or a GPU"),
    Case("train-bf16-on-cpu", [*ON_TINY, "--set", "training.bf16=true"],
         2, "training.bf16=true (mixed precision) needs a CUDA GPU", "--set training.bf16=false, or a GPU",
         files=VALID),
    Case("estimate-memory-base-model-typo", ["train", "--config", DEMO, "--base-model", "./typo", "--estimate-memory"],
         2, "--base-model ./typo: no such directory", "fix the path, or give a hub id (owner/name)"),
    # checked against trl.SFTConfig's field type before the data file (which has no thought column) is read
    Case("set-wrong-type", [*ON_TINY, "--train-file", "{data}", "--set", "training.learning_rate=fast"],
         2, "training.learning_rate='fast': expected float", "give a value of the type named", files=VALID),
    Case("set-unknown-sft-field", ["train", "--config", DEMO, "--set", "training.lerning_rate=1e-4"],
         2, "did you mean 'learning_rate'", "use the suggested key"),
    Case("set-without-equals", ["train", "--config", DEMO, "--set", "training.learning_rate"],
         2, "--set 'training.learning_rate': expected section.key=value", "write section.key=value"),
    Case("set-unknown-section", ["train", "--config", DEMO, "--set", "trainig.learning_rate=1e-4"],
         2, "unknown key 'trainig'; did you mean 'training'", "use the suggested section"),
    Case("train-config-missing", ["train", "--config", "nope.yaml"],
         2, "nope.yaml: no such config file", "fix the --config path (configs/train/*.yaml)"),
    Case("train-file-missing", [*ON_TINY, "--train-file", "missing.jsonl"],
         2, "missing.jsonl: no such file", "fix the --train-file path", files=VALID),
    Case("train-file-without-thoughts", [*ON_TINY, "--train-file", "{data}"],
         2, "missing column(s) ['thought_process']", "generate thoughts (cotharness datagen) or set data.thought_column",
         files=VALID),
    Case("train-output-dir-holds-a-run", ON_TINY,
         2, "run already holds a run (checkpoint-2); pass --resume", "--resume, or another --output-dir",
         files={**VALID, "run/checkpoint-2/trainer_state.json": "{}"}),
    Case("train-output-dir-holds-an-adapter", ON_TINY,
         2, "run already holds a run (adapter_config.json); pass --resume", "--resume, or another --output-dir",
         files={**VALID, "run/adapter_config.json": "{}"}),
    Case("merge-out-exists", ["merge", "--adapter", "{adapter}", "--out", "merged"],
         2, "--out merged exists; choose a new --out", "choose a new --out",
         files={"merged/config.json": "{}"}),
    Case("merge-adapter-missing", ["merge", "--adapter", "no-run", "--out", "merged"],
         2, "--adapter no-run: no adapter_config.json", "pass a training run's folder"),
    Case("merge-dtype-unknown", ["merge", "--adapter", "{adapter}", "--out", "merged", "--dtype", "banana"],
         2, "--dtype banana: not a dtype to merge into; use one of bfloat16, float16, float32",
         "--dtype bfloat16, float16 or float32"),
    Case("merge-base-model-typo", ["merge", "--adapter", "{adapter}", "--out", "merged", "--base-model", "/typo/base"],
         2, "--base-model /typo/base: no such directory", "fix the path, or give a hub id (owner/name)"),
    Case("merge-into-4bit-base", ["merge", "--adapter", "{adapter}", "--out", "merged", "--base-model", "base4"],
         2, "base4 is stored quantized", "--base-model a 16-bit copy of the base",
         files={"base4/config.json": QUANTIZED}),
]

# rows that are mistakes only on a machine without CUDA
CPU_ONLY = {"estimate-memory-bf16-on-cpu", "train-bf16-on-cpu"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_catalogue(case, tmp_path, tiny_model, lora_adapter):
    if case.id in CPU_ONLY:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a mistake only without CUDA")
    check(case, tmp_path / "case", tiny_model, lora_adapter)
