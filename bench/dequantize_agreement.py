"""Does the dequantized 4-bit path (``load_in_4bit=True``, the default ``dequantize=auto``: NF4 weights
dequantized once to bf16, adapter merged) answer like the true 4-bit path (``dequantize=False``: bitsandbytes'
4-bit kernels, adapter beside the base)? On the random-weight Mistral-7B shape with its r16 adapter: greedy
tokens of real ``nli_cot`` prompts, the share of rows and of tokens that agree, the largest logit difference
on one forward pass, and each path's memory. Random weights make near-ties between top logits common, so a
flip there is a bf16 rounding difference, not a change of model: the logit difference says how large.

    python bench/dequantize_agreement.py --pairs train.csv --out bench/results/dequantize_agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decode_profile import prompts  # noqa: E402
from mistral_shape import build_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=Path, nargs="+", required=True)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-evalbench"))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import torch
    from transformers import AutoTokenizer

    from cotharness.tiny_model import build
    from harness_tasks.hf_model import QuantizedHFLM

    base, adapter = a.work / "mistral-7b-shape", a.work / "adapter"
    if not (base / "config.json").is_file():
        build_model(build(a.work / "tiny"), base, adapter)
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    texts = prompts(a.pairs, tok, a.prompts)
    enc = tok(texts, return_tensors="pt", padding=True).to("cuda")
    out = {"benchmark": "dequantize_agreement", "device": torch.cuda.get_device_name(0),
           "settings": {"prompts": a.prompts, "new_tokens": a.new_tokens}, "paths": {}}
    tokens, logits = {}, {}
    for name, extra in (("true_4bit", {"dequantize": False}), ("dequantized", {})):
        torch.cuda.reset_peak_memory_stats()
        lm = QuantizedHFLM(pretrained=str(base), peft=str(adapter), load_in_4bit=True, device="cuda", **extra)
        with torch.no_grad():
            logits[name] = lm.model(**enc).logits[:, -1].float().cpu()
            gen = lm.model.generate(**enc, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                    do_sample=False, pad_token_id=tok.pad_token_id)
        tokens[name] = gen[:, enc.input_ids.shape[1]:].cpu()
        out["paths"][name] = {"model": type(lm.model).__name__,
                              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        del lm
        torch.cuda.empty_cache()
    same = tokens["true_4bit"] == tokens["dequantized"]
    first_diff = [int((~row).nonzero()[0]) if (~row).any() else None for row in same]
    diff = (logits["true_4bit"] - logits["dequantized"]).abs()
    top2 = logits["true_4bit"].topk(2, dim=-1).values
    out["agreement"] = {
        "rows_identical": int(same.all(dim=1).sum()), "rows": len(same),
        "token_share_identical": round(float(same.float().mean()), 4),
        "first_difference_at_token": first_diff,
        "last_position_logits_max_abs_diff": round(float(diff.max()), 4),
        "last_position_logits_scale_max_abs": round(float(logits["true_4bit"].abs().max()), 4),
        "top1_top2_gap_median": round(float((top2[:, 0] - top2[:, 1]).median()), 4),
        "first_token_identical": int((tokens["true_4bit"][:, 0] == tokens["dequantized"][:, 0]).sum()),
    }
    print(json.dumps(out["agreement"]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
