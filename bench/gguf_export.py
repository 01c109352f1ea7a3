"""``cotharness export gguf`` on the random-weight Mistral-7B shape (``mistral_shape.py``, with an r16
adapter on q,k,v,o): per quantization, the conversion and quantization seconds, the file size, the tensor
types, and llama.cpp's decoding speed on this machine's CPU (the export's own check measures it: greedy,
one sequence, ``--threads`` threads). The HF reference of the check runs on the GPU in bf16.

A random model's answers say nothing about quantization quality (its agreement figures are recorded,
not judged); the file sizes, times and tokens/s are what this measures. Needs a CUDA GPU (to build the
shape), the gguf extra, ~130 GB of RAM (the merged model, transformers' check dequantizes the GGUF to
float32) and ~60 GB of disk.

    python bench/gguf_export.py --out bench/results/gguf_export.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import provenance  # noqa: E402
from mistral_shape import SHAPES, build_model  # noqa: E402

QUANTS = ("f16", "q8_0", "q4_k_m")


def cpu() -> dict:
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    return {"model": name, "cores": os.cpu_count()}


def llama_cpp_build() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode().strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-ggufbench"))
    p.add_argument("--quants", default=",".join(QUANTS))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b", help="small: a dry run on a CPU")
    p.add_argument("--append", action="store_true",
                   help="add this call's quantizations to those already in --out (one call per quantization "
                        "keeps a 7B export inside a short time limit and ~50 GB of disk)")
    args = p.parse_args()

    import torch

    from cotharness.tiny_model import build
    from trainer.export.agreement import CheckSettings
    from trainer.export.pipeline import ExportRun, export

    args.work.mkdir(parents=True, exist_ok=True)
    base, adapter = args.work / "mistral-7b-shape", args.work / "adapter"
    build_s = None
    if not (base / "config.json").is_file() or not (adapter / "adapter_config.json").is_file():
        t0 = time.perf_counter()
        build_model(build(args.work / "tiny"), base, adapter_out=adapter, shape=args.shape,
                    device="cuda" if torch.cuda.is_available() else "cpu")
        build_s = round(time.perf_counter() - t0, 1)
    out_dir = args.work / f"gguf-{int(time.time())}"
    out_dir.mkdir()
    quants = args.quants.split(",")
    t0 = time.perf_counter()
    done = export(ExportRun(adapter, out_dir / "mistral-7b-shape.gguf", quants, base_model=str(base),
                            check=CheckSettings(prompts=args.prompts, max_new_tokens=args.max_tokens,
                                                threads=args.threads)))
    total_s = round(time.perf_counter() - t0, 1)
    results = {}
    for item in done:
        record = json.loads(item.manifest.read_text())
        results[record["quant"]] = {
            "bytes": record["bytes"], "gib": round(record["bytes"] / 2**30, 2),
            "convert_seconds": record["seconds"]["convert"], "quantize_seconds": record["seconds"]["quantize"],
            "tensor_types": record["tensor_types"], "fallbacks": len(record["fallbacks"]),
            "llama_cpp_cpu_decode_tokens_per_second": record["readers"]["llama_cpp"]["decode_tokens_per_second"],
            "transformers_reader": record["readers"]["transformers"],
            "agreement_random_weights": {k: record["check"][k] for k in
                                         ("first_tokens_exact_match", "prompt_tokens_equal", "first_logits_max_abs_diff")},
        }
    # each call's own commit: calls appended to one file may come from different code
    call = {"quants": quants, "export_seconds": total_s, "model_build_seconds": build_s, "git": provenance.git()}
    report = {
        "what": f"cotharness export gguf on the random-weight Mistral-7B shape ({args.shape}; bench/gguf_export.py)",
        "shape": SHAPES[args.shape], "cpu": cpu(), "threads": args.threads,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "settings": {"prompts": args.prompts, "max_new_tokens": args.max_tokens},
        "versions": json.loads(done[0].manifest.read_text())["versions"],
        # the instruction sets llama.cpp was compiled for: its tokens/s depend on them as much as on the CPU
        "llama_cpp_build": llama_cpp_build(),
        "calls": [call], "results": results,
    }
    if args.append and args.out.is_file():
        report = _appended(json.loads(args.out.read_text()), report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _appended(previous: dict, report: dict) -> dict:
    """This call's quantizations added to an earlier call's, refused where the two were not measured alike."""
    for key in ("shape", "cpu", "threads", "gpu", "settings", "versions", "llama_cpp_build"):
        if previous.get(key) != report[key]:
            raise SystemExit(f"--append: {key} differs from the earlier calls' ({previous.get(key)!r} vs "
                             f"{report[key]!r}); write a new --out instead")
    return {**report, "calls": previous["calls"] + report["calls"], "results": {**previous["results"], **report["results"]}}


if __name__ == "__main__":
    main()
