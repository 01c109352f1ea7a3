"""The catalogue's rows for ``cotharness export gguf`` and ``cotharness eval --model gguf``: each mistake is
one ``error:`` line and an exit status, said before a model loads, with nothing written
(tests/catalogue.py)."""

import json

import pytest

from catalogue import Case, check

# a base model of an architecture the GGUF converter does not map: its config.json is all that is read
GPT2 = json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
EXPORT = ["export", "gguf", "--adapter", "{adapter}"]

AREA = "exporting to GGUF (cotharness export gguf, cotharness eval --model gguf)"

CASES = [
    Case("export-adapter-missing", ["export", "gguf", "--adapter", "no-run", "--out", "model.gguf"],
         2, "--adapter no-run: no adapter_config.json", "pass a training run's folder"),
    Case("export-quant-unknown", [*EXPORT, "--out", "model.gguf", "--quant", "q4km"],
         2, "--quant q4km: unknown quantization; did you mean q4_k_m?", "--quant f16, q8_0, q4_0 or q4_k_m"),
    Case("export-architecture-unmapped", [*EXPORT, "--out", "model.gguf", "--base-model", "gpt2base"],
         2, "architecture 'gpt2' (GPT2LMHeadModel) cannot be mapped to GGUF here",
         "llama.cpp's convert_hf_to_gguf.py on a `cotharness merge` output", files={"gpt2base/config.json": GPT2}),
    Case("export-out-folder-missing", [*EXPORT, "--out", "models/model.gguf"],
         2, "--out models/model.gguf: folder models does not exist", "create the folder first"),
    Case("export-out-not-gguf", [*EXPORT, "--out", "model.bin"],
         2, "--out model.bin: name a .gguf file", "end --out in .gguf"),
    Case("export-out-exists", [*EXPORT, "--out", "model.gguf"],
         2, "--out: model.gguf exists; choose a new --out", "choose a new --out", files={"model.gguf": "GGUF"}),
    Case("eval-gguf-path-missing", ["eval", "--model", "gguf", "--tasks", "nli_cot", "--model_args", "path=nope.gguf"],
         2, "--model_args path=nope.gguf: no such file", "give the file `cotharness export gguf` wrote"),
    Case("eval-gguf-key-typo", ["eval", "--model", "gguf", "--tasks", "nli_cot", "--model_args", "path=m.gguf,n_cxt=512"],
         2, "--model_args n_cxt: not a key of --model gguf; did you mean n_ctx?", "use the suggested key"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_catalogue(case, tmp_path, tiny_model, lora_adapter):
    if case.id == "export-architecture-unmapped":  # said after the check that llama.cpp is installed
        pytest.importorskip("llama_cpp", reason="the gguf extra is not installed (make setup EXTRAS=dev,gguf)")
    check(case, tmp_path / "case", tiny_model, lora_adapter)
