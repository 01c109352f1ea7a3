"""Where a decoding step of ``cotharness eval`` goes, on the random-weight Mistral-7B shape (one batch of
real ``nli_cot`` prompts, every answer forced to its length): milliseconds per decoding step of
``model.generate`` as lm-eval calls it (its stop-string criteria), without those criteria, with this
project's token-level stop criteria, with a static KV cache, and with the static cache compiled; plus one
bare forward step. Per-step times are (generate of N2 tokens - generate of N1 tokens) / (N2 - N1), so
the prefill cancels out. GPU only; writes JSON.

    python bench/decode_profile.py --pairs train.csv --out bench/results/decode_profile.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import provenance  # noqa: E402
from mistral_shape import MISTRAL_7B  # noqa: E402


def prompts(pairs: list[Path], tokenizer, n: int) -> list[str]:
    from harness_tasks.tasks import get_task

    rows = []
    for path in pairs:
        with path.open(newline="", encoding="utf-8") as f:
            rows += [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in csv.DictReader(f)]
    task = get_task("nli_cot")
    texts = [task.prompt(rows[i % len(rows)]) for i in range(n)]
    return sorted(texts, key=lambda t: -len(tokenizer(t).input_ids))  # lm-eval's order: longest first


def timed(fn, repeats: int) -> list[float]:
    import torch

    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def generate(model, tok, enc, variant: str, n: int, stops: list[str]):
    import torch
    from lm_eval.models.utils_hf import stop_sequences_criteria

    from harness_tasks.stop_tokens import token_stop_criteria

    ctx, batch = enc.input_ids.shape[1], enc.input_ids.shape[0]
    kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "pad_token_id": tok.pad_token_id}
    if variant == "lm_eval_stop":
        kw["stopping_criteria"] = stop_sequences_criteria(tok, stops, ctx, batch)
    elif variant == "token_stop":
        kw["stopping_criteria"] = token_stop_criteria(tok, stops, ctx, batch)
    elif variant == "static":
        kw.update(cache_implementation="static", disable_compile=True)
    elif variant == "static_compiled":
        kw.update(cache_implementation="static")
    with torch.no_grad():
        return model.generate(**enc, **kw)


def bare_forward_ms(model, enc) -> float:
    """One decoding step without generate: the forward of one new token per row over the prompts' KV cache."""
    import torch

    with torch.no_grad():
        out = model(**enc, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([enc.attention_mask, torch.ones_like(nxt)], dim=1)
        del out

        def step():
            model(input_ids=nxt, attention_mask=mask, past_key_values=past, use_cache=True)
            past.crop(-1)  # transformers 5: a negative count removes that many tokens (the one just added)

        ms = round(statistics.median(timed(step, 5)) * 1000, 1)
    torch.cuda.empty_cache()
    return ms


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=Path, nargs="+", required=True)
    p.add_argument("--batch", type=int, nargs="+", default=[256, 512])
    p.add_argument("--n1", type=int, default=8)
    p.add_argument("--n2", type=int, default=72)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["lm_eval_stop", "no_stop", "token_stop", "static", "static_compiled"])
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import tempfile

    import torch
    import transformers
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from cotharness.tiny_model import build

    tok_dir = build(Path(tempfile.mkdtemp()) / "tiny")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.padding_side = "left"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(MistralConfig(**MISTRAL_7B, bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                                   ).to(torch.bfloat16).eval()
    texts = prompts(a.pairs, tok, max(a.batch) * 4)
    stops = ["}\n", "[INST]"]
    result = {"benchmark": "decode_profile", "device": torch.cuda.get_device_name(0),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
              "git": provenance.git(),
              "settings": {"n1": a.n1, "n2": a.n2, "repeats": a.repeats, "stops": stops}, "batches": {}}
    for batch in a.batch:
        # a batch from the middle of the length distribution
        chunk = texts[len(texts) // 2: len(texts) // 2 + batch]
        enc = tok(chunk, return_tensors="pt", padding=True).to("cuda")
        ctx = enc.input_ids.shape[1]
        row = {"prompt_tokens_padded": ctx, "variants": {}}

        for variant in a.variants:
            try:
                warm = timed(partial(generate, model, tok, enc, variant, a.n1, stops), 1)[0]  # compiles
                t1 = timed(partial(generate, model, tok, enc, variant, a.n1, stops), a.repeats)
                t2 = timed(partial(generate, model, tok, enc, variant, a.n2, stops), a.repeats)
                step = (statistics.median(t2) - statistics.median(t1)) / (a.n2 - a.n1)
                row["variants"][variant] = {"ms_per_step": round(step * 1000, 1), "first_call_s": round(warm, 1),
                                            "n1_s": [round(x, 2) for x in t1], "n2_s": [round(x, 2) for x in t2]}
            except Exception as err:  # noqa: BLE001 - a variant that does not work here is a finding
                row["variants"][variant] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            torch.cuda.empty_cache()
            print(batch, variant, row["variants"][variant], flush=True)
        row["bare_forward_ms"] = bare_forward_ms(model, enc)
        torch.cuda.empty_cache()
        result["batches"][str(batch)] = row
        print(batch, "bare forward", row["bare_forward_ms"], flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")  # after each batch: a timeout keeps what was done
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
