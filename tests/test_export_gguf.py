"""``cotharness export gguf`` on tiny models, end to end: f16, q8_0 and q4_k_m files that llama.cpp and
transformers both load, checked against the merged HF model; then ``cotharness eval --model gguf`` through
llama-cpp-python's server, compared with the HF run on the same documents.

Needs the gguf extra (llama-cpp-python, built from source); skipped without it, except where
COTHARNESS_REQUIRE_GGUF=1 (CI sets it: there the extra is installed and these tests must run)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

if os.environ.get("COTHARNESS_REQUIRE_GGUF") not in (None, "", "0"):
    import gguf  # noqa: F401
    import llama_cpp  # noqa: F401
else:
    pytest.importorskip("gguf", reason="the gguf extra is not installed (make setup EXTRAS=dev,gguf)")
    pytest.importorskip("llama_cpp", reason="the gguf extra is not installed (make setup EXTRAS=dev,gguf)")

QUANTS = ("f16", "q8_0", "q4_k_m")


def cotharness(*argv, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "cotharness.cli", *map(str, argv)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A tiny model 256 wide (K-quants quantize rows in blocks of 256: the 64-wide default model's would
    all fall back) and a LoRA adapter with non-zero weights on every attention projection, so that the
    Q/K permutation is exercised on merged weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cotharness.tiny_model import build

    root = tmp_path_factory.mktemp("wide")
    base = build(root / "base", hidden_size=256, intermediate_size=512, heads=4, kv_heads=2, init_std=0.05)
    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(root / "adapter")
    return base, root / "adapter"


@pytest.fixture(scope="module")
def exported(wide, tmp_path_factory):
    """The three files, written by the command as a user runs it."""
    out = tmp_path_factory.mktemp("gguf")
    proc = cotharness("export", "gguf", "--adapter", wide[1], "--out", out / "wide.gguf", "--quant", ",".join(QUANTS),
                      "--check-prompts", "4", "--check-max-tokens", "48")
    return out, proc


def manifest(out, quant) -> dict:
    return json.loads((out / f"wide-{quant}.manifest.json").read_text())


def test_every_file_is_written_with_its_manifest_and_modelfile_and_nothing_else(exported):
    out, proc = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"wide-{q}.{ext}" for q in QUANTS for ext in ("gguf", "manifest.json", "Modelfile"))
    for quant in QUANTS:
        assert f"wide-{quant}.gguf: on 4 nli_cot prompts, first 32 tokens equal to HF's" in proc.stdout


def test_f16_answers_like_the_hf_model(exported):
    """Tokenizer, tensor names, Q/K permutation and hyper-parameters right: same prompt ids, nearly the
    same logits, the same greedy tokens."""
    check = manifest(exported[0], "f16")["check"]
    assert check["prompt_tokens_equal"] == 1.0
    assert check["first_logits_max_abs_diff"] < 0.05, check
    assert check["first_tokens_exact_match"] >= 0.75, check
    assert check["labels_exact_match"] >= 0.75, check


def test_each_file_loads_in_llama_cpp_and_transformers(exported):
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    out = exported[0]
    for quant in QUANTS:
        path = out / f"wide-{quant}.gguf"
        llm = Llama(model_path=str(path), n_ctx=256, verbose=False)
        assert llm.n_vocab() == 2048 or llm.n_vocab() > 0
        assert llm.tokenize(b"[INST] hi [/INST]", add_bos=True, special=True)[0] == llm.token_bos()
        llm.close()
        model = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name, dtype=torch.float32)
        assert model.config.hidden_size == 256
        readers = manifest(out, quant)["readers"]
        assert readers["transformers"]["loads"] and readers["transformers"]["prompt_tokens_equal"], readers
        assert readers["llama_cpp"]["decode_tokens_per_second"] > 0


def test_manifest_says_what_each_file_holds(exported):
    out = exported[0]
    f16, q8, q4 = (manifest(out, q) for q in QUANTS)
    assert f16["tensor_types"] == {"F16": 16, "F32": 5} and f16["fallbacks"] == {}
    assert set(q8["tensor_types"]) == {"Q8_0", "F32"}
    # llama.cpp's q4_k_m mixture: Q4_K, some tensors in Q6_K; none left outside the K-quants
    assert "Q4_K" in q4["tensor_types"] and q4["fallbacks"] == {}, q4["tensor_types"]
    assert q4["seconds"]["quantize"] is not None and f16["seconds"]["quantize"] is None
    assert f16["bytes"] > q8["bytes"] > q4["bytes"] == (out / "wide-q4_k_m.gguf").stat().st_size
    assert f16["general"]["base_model"].endswith("base") and f16["versions"]["llama_cpp_python"] == "0.3.36"
    assert set(f16["check"]) >= {"prompts", "tokens", "first_tokens_exact_match", "labels_exact_match",
                                 "labels_parsed", "prompt_tokens_equal", "per_prompt"}


def test_modelfile_runs_the_file_as_it_was_evaluated(exported):
    text = (exported[0] / "wide-q4_k_m.Modelfile").read_text()
    assert "FROM ./wide-q4_k_m.gguf" in text
    assert 'TEMPLATE """[INST] ' in text and '{{ .Prompt }} [/INST]' in text
    assert 'PARAMETER stop "</s>"' in text and 'PARAMETER stop "[INST]"' in text
    assert "PARAMETER temperature 0" in text


def test_gguf_metadata_and_tokenizer_as_llama_cpp_reads_them(exported):
    from gguf import GGUFReader

    reader = GGUFReader(exported[0] / "wide-f16.gguf")

    def value(key):
        field = reader.fields[key]
        return field.contents()

    assert value("general.architecture") == "llama"
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "gpt-2"
    assert value("tokenizer.ggml.add_bos_token") is True
    assert "[INST]" in value("tokenizer.chat_template")
    assert value("llama.embedding_length") == 256 and value("llama.attention.head_count_kv") == 2


def test_k_quant_falls_back_on_the_narrow_default_model_and_says_so(lora_adapter, tmp_path):
    """The default tiny model is 64 wide: no row fills a 256-value K-quant block, llama.cpp picks another
    type for each, and the manifest lists them with the reason."""
    cotharness("export", "gguf", "--adapter", lora_adapter, "--out", tmp_path / "narrow.gguf", "--quant", "q4_k_m",
               "--check-prompts", "1", "--check-max-tokens", "8")
    record = json.loads((tmp_path / "narrow.manifest.json").read_text())
    assert record["fallbacks"] and all("not a multiple of 256" in why for why in record["fallbacks"].values())
    assert "Q4_K" not in record["tensor_types"]


def test_eval_through_llama_cpp_server_pairs_with_the_hf_run(exported, wide, tmp_path):
    """The same task on the same 4 documents: the HF model (base + adapter) and its GGUF, then compare."""
    base, adapter = wide
    limit = ["--tasks", "nli_cot", "--limit", "4", "--gen_kwargs", "max_gen_toks=48"]
    cotharness("eval", *limit, "--model_args", f"pretrained={base},peft={adapter},dtype=float32", "--batch_size", "4",
               "--output_path", tmp_path / "hf")
    proc = cotharness("eval", *limit, "--model", "gguf", "--model_args",
                      f"path={exported[0] / 'wide-f16.gguf'},n_ctx=1024", "--output_path", tmp_path / "gguf")
    samples = list((tmp_path / "gguf").rglob("samples_nli_cot_*.jsonl"))
    assert len(samples) == 1 and sum(1 for _ in samples[0].open()) == 4, proc.stdout
    assert "predictions:" in proc.stdout
    cotharness("compare", tmp_path / "hf", tmp_path / "gguf", "--names", "hf,gguf-f16", "--out", tmp_path / "cmp")
    rows = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert {r["model"] for r in rows} == {"hf", "gguf-f16"}
    detail = json.loads((tmp_path / "cmp" / "manifest.json").read_text())["tasks"]["nli_cot"]
    assert detail["documents"] == 4
    assert detail["models"]["gguf-f16"]["same_answer_as_base"] >= 0.75, detail["models"]
