"""lm_eval and cotharness eval as a user runs them: subprocesses on the tiny model."""

import json
import re
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
    # the per-class report agrees with lm-eval's own figures for the same documents
    (per_class,) = out.rglob("per_class_nli_cot_*.json")
    rep = json.loads(per_class.read_text())
    conf, n = rep["confusion"], rep["documents"]
    assert n == 6 and "per class" in proc.stdout and "confusion" in proc.stdout
    diagonal = sum(row[conf["predicted"].index(g)] for g, row in zip(conf["gold"], conf["matrix"], strict=True)
                   if g in conf["predicted"])
    unparsed = sum(row[conf["predicted"].index("unparsed")] for row in conf["matrix"]) if "unparsed" in conf["predicted"] else 0
    assert diagonal / n == res["results"]["nli_cot"]["acc,cot_json"]
    assert unparsed / n == res["results"]["nli_cot"]["parse_fail,cot_json"]
    assert set(conf["gold"]) <= {"entailment", "no entailment"}  # label names, not ids


def test_quantized_hflm_loads_4bit_and_adapter(tiny_model, lora_adapter):
    """What `load_in_4bit=True,peft=...,dequantize=False` builds: NF4 Linear4bit layers under an unmerged LoRA."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel

    from harness_tasks.hf_model import QuantizedHFLM

    lm = QuantizedHFLM(pretrained=str(tiny_model), peft=str(lora_adapter), load_in_4bit=True, device="cpu",
                       bnb_4bit_compute_dtype="float32", dequantize=False)
    assert isinstance(lm.model, PeftModel)
    linear4 = [m for m in lm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4 and all(m.weight.quant_type == "nf4" for m in linear4)
    base = QuantizedHFLM(pretrained=str(tiny_model), load_in_4bit=True, device="cpu",
                         bnb_4bit_compute_dtype="float32", dequantize=False)
    ids = torch.tensor([[1, 4, 50, 60, 70, 5]])
    with torch.no_grad():
        assert not torch.allclose(lm.model(ids).logits, base.model(ids).logits)  # the adapter is applied


def test_4bit_is_dequantized_once_and_computes_what_the_4bit_path_computes(tiny_model, lora_adapter):
    """load_in_4bit (dequantize=auto): the NF4 weights become plain linear weights of bitsandbytes' own
    dequantized values, the adapter merged into them. The merged model computes what the dequantized base
    with the adapter beside it computes; against the true 4-bit path the logits agree to bfloat16 rounding
    here (bitsandbytes' CPU kernel casts activations and scales to bfloat16; its CUDA path dequantizes to
    the compute dtype and runs the same matmul: bench/results/eval_throughput.json measures agreement)."""
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel

    from harness_tasks.hf_model import QuantizedHFLM

    args = {"pretrained": str(tiny_model), "peft": str(lora_adapter), "load_in_4bit": True, "device": "cpu",
            "bnb_4bit_compute_dtype": "float32"}
    fast = QuantizedHFLM(**args)
    beside = QuantizedHFLM(**args, merge_peft=False)
    true_4bit = QuantizedHFLM(**args, dequantize=False)
    assert not isinstance(fast.model, PeftModel) and isinstance(beside.model, PeftModel)  # merged by default
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in fast.model.modules())
    assert not any("lora" in name for name, _ in fast.model.named_parameters())
    # the same NF4 values: a layer the adapter leaves alone equals bitsandbytes' own dequantization
    q4 = true_4bit.model.base_model.model.model.layers[0].mlp.down_proj
    expected = bnb.functional.dequantize_4bit(q4.weight.data, q4.weight.quant_state)
    assert torch.equal(fast.model.model.layers[0].mlp.down_proj.weight, expected.to(torch.float32))
    ids = torch.tensor([[1, 4, 50, 60, 70, 5], [1, 9, 8, 7, 6, 5]])
    with torch.no_grad():
        logits = fast.model(ids).logits
        torch.testing.assert_close(logits, beside.model(ids).logits, rtol=1e-4, atol=1e-4)
        reference = true_4bit.model(ids).logits
        torch.testing.assert_close(logits, reference, rtol=0, atol=0.1)
        assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


def test_4bit_stays_4bit_where_the_copy_does_not_fit(tiny_model, monkeypatch, caplog):
    import bitsandbytes as bnb

    import harness_tasks.hf_model as hf_model

    monkeypatch.setattr(hf_model, "free_bytes", lambda device: 1024)
    with caplog.at_level("WARNING", logger="harness_tasks.hf_model"):
        lm = hf_model.QuantizedHFLM(pretrained=str(tiny_model), load_in_4bit=True, device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in lm.model.modules())
    assert "keeping the 4-bit weights" in caplog.text
    with pytest.raises(ValueError, match="dequantize=True applies to load_in_4bit=True only"):
        hf_model.QuantizedHFLM(pretrained=str(tiny_model), device="cpu", dequantize=True)
    with pytest.raises(ValueError, match="dequantize='maybe': give auto, true or false"):
        hf_model.QuantizedHFLM(pretrained=str(tiny_model), load_in_4bit=True, device="cpu", dequantize="maybe")


def test_quant_args_without_load_in_4bit_are_refused(tiny_model):
    from harness_tasks.hf_model import QuantizedHFLM

    with pytest.raises(ValueError, match="without load_in_4bit"):
        QuantizedHFLM(pretrained=str(tiny_model), bnb_4bit_quant_type="nf4", device="cpu")


def test_adapter_is_merged_into_an_unquantized_base(tiny_model, lora_adapter):
    """merge_peft (default on without 4-bit) gives the same logits as the separate adapter, as one plain model."""
    import torch
    from peft import PeftModel

    from harness_tasks.hf_model import QuantizedHFLM

    merged = QuantizedHFLM(pretrained=str(tiny_model), peft=str(lora_adapter), device="cpu", dtype="float32")
    separate = QuantizedHFLM(pretrained=str(tiny_model), peft=str(lora_adapter), device="cpu", dtype="float32",
                             merge_peft=False)
    assert not isinstance(merged.model, PeftModel) and isinstance(separate.model, PeftModel)
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    ids = torch.tensor([[1, 4, 50, 60, 70, 5]])
    with torch.no_grad():
        torch.testing.assert_close(merged.model(ids).logits, separate.model(ids).logits, rtol=1e-4, atol=1e-4)


def test_merge_into_4bit_is_refused(tiny_model, lora_adapter):
    from harness_tasks.hf_model import QuantizedHFLM

    with pytest.raises(ValueError, match="merge_peft=True needs an unquantized base"):
        QuantizedHFLM(pretrained=str(tiny_model), peft=str(lora_adapter), load_in_4bit=True, device="cpu",
                      merge_peft=True, dequantize=False)


def test_auto_batch_sizes_each_generation_batch_from_its_prompts_and_memory(tiny_model, monkeypatch):
    """batch_size=auto cuts the requests, longest prompt first, into batches each sized for its own longest
    prompt, max_gen_toks and free memory; the answers come back in the requests' order, as lm-eval's
    fixed-size batches give them; a batch that runs out of memory is halved, and so are the ones after it."""
    import torch
    from lm_eval.api.instance import Instance

    from harness_tasks import gen_memory, hf_model

    lm = hf_model.QuantizedHFLM(pretrained=str(tiny_model), device="cpu", batch_size="auto", dtype="float32")
    words = [1, 3, 9, 2, 5, 1, 1, 2, 3, 4, 1, 1]
    requests = [Instance("generate_until", {}, ("Premise: a man walks. " * n, {"until": ["}"], "max_gen_toks": 8,
                                                                               "do_sample": False}), i)
                for i, n in enumerate(words)]
    per_seq = gen_memory.bytes_per_sequence(lm.model.config, len(lm.tok_encode(requests[2].args[0])), 8)
    monkeypatch.setattr(hf_model, "free_bytes", lambda device: int(per_seq * 4 / gen_memory.HEADROOM) + 1)
    calls, real = [], hf_model.HFLM.generate_until

    def generate(self, reqs, disable_tqdm=False):
        calls.append((self.batch_size_per_gpu, [r.args[0].count(".") for r in reqs]))
        return real(self, reqs, disable_tqdm)

    monkeypatch.setattr(hf_model.HFLM, "generate_until", generate)
    out = lm.generate_until(requests)
    assert calls[0] == (4, [9, 5, 4, 3])  # the longest prompts, as many as fit
    assert [n for _, batch in calls for n in batch] == sorted(words, reverse=True)
    assert all(size == len(batch) or batch is calls[-1][1] for size, batch in calls)
    assert calls[1][0] > 4  # shorter prompts, larger batches
    assert lm.batch_size_per_gpu == "auto"  # restored for the next task

    lm.batch_size_per_gpu = 1  # lm-eval's own path, one prompt at a time
    assert real(lm, requests) == out

    lm.batch_size_per_gpu = "auto"
    calls.clear()

    def out_of_memory_once(self, reqs, disable_tqdm=False):
        if not calls:
            calls.append((self.batch_size_per_gpu, []))
            raise torch.OutOfMemoryError("simulated")
        return generate(self, reqs, disable_tqdm)

    monkeypatch.setattr(hf_model.HFLM, "generate_until", out_of_memory_once)
    assert lm.generate_until(requests) == out
    # the failed batch of 4 again in twos, then the 8 shorter prompts no more than 2 at a time
    assert [(size, len(batch)) for size, batch in calls] == [(4, 0), (2, 4)] + [(2, 2)] * 4
    assert lm.batch_size_per_gpu == "auto"


def test_generation_batch_arithmetic():
    from types import SimpleNamespace

    from harness_tasks.gen_memory import bytes_per_sequence, generation_batch_size

    mistral = SimpleNamespace(num_attention_heads=32, hidden_size=4096, num_key_value_heads=8, num_hidden_layers=32,
                              intermediate_size=14336, vocab_size=32768, head_dim=128)
    # KV cache: 2 (k, v) x 32 layers x 8 heads x 128 dims x 2 bytes = 128 KiB per token
    assert bytes_per_sequence(mistral, 0, 600) == 600 * 128 * 1024 + 32768 * 8
    per_seq = bytes_per_sequence(mistral, 400, 200)
    assert 140e6 < per_seq < 150e6  # 79 MB of KV cache, 48 MB of MLP activations, 20 MB of scores
    assert generation_batch_size(mistral, 400, 200, free=120 * 2**30) == 512  # capped
    assert generation_batch_size(mistral, 400, 200, free=40 * 2**30) == 248  # 40 GiB x 0.85 / per_seq, to a multiple of 8
    assert generation_batch_size(mistral, 400, 200, free=10**6) == 1


def test_missing_local_model_is_one_line(tmp_path):
    from cotharness.eval_inputs import EvalInputError
    from cotharness.run_eval import main

    missing = tmp_path / "no-such-model"
    with pytest.raises(EvalInputError, match=f"^--model_args pretrained={re.escape(str(missing))}: no such folder$"):
        main(["--tasks", "nli_cot", "--model_args", f"pretrained={missing}", "--device", "cpu"])


def test_missing_data_file_is_one_line(tiny_model, tmp_path):
    from cotharness.run_eval import main
    from harness_tasks.data_files import DataFileError

    missing = tmp_path / "test.csv"
    with pytest.raises(DataFileError, match=f"^{re.escape(str(missing))}: no such file$"):
        main(["--tasks", "nli_cot", "--model_args", f"pretrained={tiny_model}", "--device", "cpu",
              "--limit", "1", "--metadata", json.dumps({"test_file": str(missing)})])
