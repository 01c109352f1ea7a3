"""Does the dequantized 4-bit path (``load_in_4bit=True``, the default ``dequantize=auto``: NF4 weights
dequantized once to bf16, adapter merged) answer like the true 4-bit path (``dequantize=False``: bitsandbytes'
4-bit kernels, adapter beside the base)? On the random-weight Mistral-7B shape with its r16 adapter: greedy
tokens of real ``nli_cot`` prompts, the share of rows and of tokens that agree with the true 4-bit path, the
largest logit difference on one forward pass, and each path's memory.

Two controls say where a difference comes from:
- ``true_4bit_rebatched``: the true 4-bit path again, the same prompts in batches of ``--rebatch`` rows (other
  padding, other kernel shapes): how far the model itself drifts under bf16-sized perturbations, i.e. the
  noise floor of the comparison;
- ``dequantized_unmerged``: the NF4 weights dequantized once, the adapter kept beside them (``merge_peft=False``):
  the dequantization alone, without rounding the adapter into the bf16 weights.
``dequantized`` (the default) then adds only the merge.

    python bench/dequantize_agreement.py --pairs train.csv --out bench/results/dequantize_agreement.json
    python bench/dequantize_agreement.py --pairs train.csv --shape small --out /tmp/agreement.json   # CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import provenance  # noqa: E402
from decode_profile import prompts  # noqa: E402
from mistral_shape import build_model  # noqa: E402

PATHS = {  # name -> QuantizedHFLM arguments beside load_in_4bit=True
    "true_4bit": {"dequantize": False},
    "true_4bit_rebatched": {"dequantize": False},
    "dequantized_unmerged": {"dequantize": True, "merge_peft": False},
    "dequantized": {},
}


def run(model, enc, new_tokens: int, rows_per_batch: int, pad_id: int):
    """Last-position logits of one forward pass and the greedy tokens, in batches of ``rows_per_batch``."""
    import torch

    logits, tokens = [], []
    for start in range(0, enc.input_ids.shape[0], rows_per_batch):
        part = {k: v[start:start + rows_per_batch] for k, v in enc.items()}
        # drop the columns that are padding in every row of this slice: other shapes than the full batch
        keep = int(part["attention_mask"].sum(dim=1).max())
        part = {k: v[:, -keep:] for k, v in part.items()}
        with torch.no_grad():
            logits.append(model(**part).logits[:, -1].float().cpu())
            gen = model.generate(**part, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=pad_id)
        tokens.append(gen[:, part["input_ids"].shape[1]:].cpu())
    return torch.cat(logits), torch.cat(tokens)


def agreement(ref_tokens, tokens, ref_logits, logits) -> dict:
    same = ref_tokens == tokens
    diff = (ref_logits - logits).abs()
    return {"rows_identical": int(same.all(dim=1).sum()), "rows": len(same),
            "token_share_identical": round(float(same.float().mean()), 4),
            "first_token_identical": int(same[:, 0].sum()),
            "first_difference_at_token": [int((~row).nonzero()[0]) if (~row).any() else None for row in same],
            "last_position_logits_max_abs_diff": round(float(diff.max()), 4),
            "last_position_logits_mean_abs_diff": round(float(diff.mean()), 5)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=Path, nargs="+", required=True)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rebatch", type=int, default=8, help="rows per batch of the rebatched control")
    p.add_argument("--shape", choices=("7b", "small"), default="7b", help="small: a 4-layer model for a CPU check")
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-evalbench"))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import torch
    from transformers import AutoTokenizer

    from cotharness.tiny_model import build
    from harness_tasks import manifest
    from harness_tasks.hf_model import QuantizedHFLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = "mistral-7b-shape" if a.shape == "7b" else "mistral-small-shape"
    base, adapter = a.work / name, a.work / ("adapter" if a.shape == "7b" else "adapter-small")
    if not (base / "config.json").is_file() or not (adapter / "adapter_config.json").is_file():
        build_model(build(a.work / "tiny"), base, adapter, shape=a.shape, device=device)
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    texts = prompts(a.pairs, tok, a.prompts)
    enc = tok(texts, return_tensors="pt", padding=True).to(device)
    out = {"benchmark": "dequantize_agreement", "shape": a.shape,
           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "versions": manifest.package_versions(),
           "git": provenance.git(),
           "settings": {"prompts": a.prompts, "new_tokens": a.new_tokens, "rebatch": a.rebatch,
                        "batch": "all prompts in one batch, except true_4bit_rebatched"},
           "paths": {}, "agreement_with_true_4bit": {}}
    tokens, logits = {}, {}
    for path, extra in PATHS.items():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        lm = QuantizedHFLM(pretrained=str(base), peft=str(adapter), load_in_4bit=True, device=device, **extra)
        rows = a.rebatch if path == "true_4bit_rebatched" else len(texts)
        logits[path], tokens[path] = run(lm.model, enc, a.new_tokens, rows, tok.pad_token_id)
        out["paths"][path] = {"model": type(lm.model).__name__, "args": {"load_in_4bit": True, **extra},
                              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                              if device == "cuda" else None}
        del lm
        if device == "cuda":
            torch.cuda.empty_cache()
        if path != "true_4bit":
            out["agreement_with_true_4bit"][path] = agreement(tokens["true_4bit"], tokens[path],
                                                              logits["true_4bit"], logits[path])
            print(path, json.dumps({k: v for k, v in out["agreement_with_true_4bit"][path].items()
                                    if k != "first_difference_at_token"}), flush=True)
    top2 = logits["true_4bit"].topk(2, dim=-1).values
    out["true_4bit_logits"] = {"max_abs": round(float(logits["true_4bit"].abs().max()), 4),
                               "top1_top2_gap_median": round(float((top2[:, 0] - top2[:, 1]).median()), 4)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
