"""lm_eval and cotharness eval as a user runs them: subprocesses on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def run(cmd, cwd=REPO):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def results_of(out_dir: Path) -> dict:
    (path,) = out_dir.rglob("results_*.json")
    return json.loads(path.read_text())


COT_METRICS = {"acc", "f1_macro", "precision", "recall", "f1", "acc_entailment", "acc_no_entailment", "parse_fail"}


def test_plain_lm_eval_bf16_with_peft(tiny_model, lora_adapter, tmp_path):
    """The documented plain command, from the repo root, with NLI data from a CSV."""
    data = tmp_path / "dev.csv"
    data.write_text("premise,hypothesis,label\nA man walks.,A person walks.,1\nA dog runs.,A cat sleeps.,0\n"
                    "It rains.,The street is dry.,0\n", encoding="utf-8")
    out = tmp_path / "out"
    run([BIN / "lm_eval", "--include_path", "harness_tasks", "--tasks", "nli_cot,nli_direct", "--model", "hf",
         "--model_args", f"pretrained={tiny_model},peft={lora_adapter},dtype=bfloat16", "--device", "cpu", "--batch_size", "2",
         "--gen_kwargs", "max_gen_toks=24", "--metadata", json.dumps({"test_file": str(data)}),
         "--output_path", str(out), "--log_samples"])
    res = results_of(out)
    assert res["config"]["model_args"]["peft"] == str(lora_adapter)
    cot = {k.split(",")[0] for k in res["results"]["nli_cot"] if k.endswith(",cot_json") and "_stderr" not in k}
    assert cot == COT_METRICS
    assert res["n-samples"]["nli_cot"]["effective"] == 3
    # an untrained model's output does not parse, so it scores zero rather than the majority rate
    assert res["results"]["nli_cot"]["parse_fail,cot_json"] == 1.0
    assert res["results"]["nli_cot"]["acc,cot_json"] == 0.0
    assert 0.0 <= res["results"]["nli_direct"]["acc,none"] <= 1.0


def test_cotharness_eval_4bit_with_peft(tiny_model, lora_adapter, tmp_path):
    """Run from another directory: the tasks are found without --include_path."""
    out = tmp_path / "out"
    proc = run([BIN / "cotharness", "eval", "--tasks", "nli_cot",
                "--model_args", f"pretrained={tiny_model},peft={lora_adapter},load_in_4bit=True",
                "--device", "cpu", "--batch_size", "auto", "--limit", "6", "--gen_kwargs", "max_gen_toks=16",
                "--output_path", str(out)], cwd=tmp_path)
    res = results_of(out)
    assert res["config"]["model"] == "hf-cot"
    assert res["config"]["model_args"]["load_in_4bit"] is True
    assert res["config"]["model_args"]["peft"] == str(lora_adapter)
    assert {k.split(",")[0] for k in res["results"]["nli_cot"] if k.endswith(",cot_json") and "_stderr" not in k} == COT_METRICS
    (predictions,) = out.rglob("predictions_nli_cot_*.csv")
    assert predictions.read_text().splitlines()[0] == "id,predicted_label,parse_method,label"
    assert len(predictions.read_text().splitlines()) == 7
    assert "predictions:" in proc.stdout


def test_quantized_hflm_loads_4bit_and_adapter(tiny_model, lora_adapter):
    """What `load_in_4bit=True,peft=...` builds: NF4 Linear4bit layers under an unmerged LoRA."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel

    from harness_tasks.hf_model import QuantizedHFLM

    lm = QuantizedHFLM(pretrained=str(tiny_model), peft=str(lora_adapter), load_in_4bit=True, device="cpu",
                       bnb_4bit_compute_dtype="float32")
    assert isinstance(lm.model, PeftModel)
    linear4 = [m for m in lm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.weight.quant_type == "nf4" for m in linear4)
    base = QuantizedHFLM(pretrained=str(tiny_model), load_in_4bit=True, device="cpu",
                         bnb_4bit_compute_dtype="float32")
    ids = torch.tensor([[1, 4, 50, 60, 70, 5]])
    with torch.no_grad():
        assert not torch.allclose(lm.model(ids).logits, base.model(ids).logits)  # the adapter is applied


def test_quant_args_without_load_in_4bit_are_refused(tiny_model):
    from harness_tasks.hf_model import QuantizedHFLM

    with pytest.raises(ValueError, match="without load_in_4bit"):
        QuantizedHFLM(pretrained=str(tiny_model), bnb_4bit_quant_type="nf4", device="cpu")
