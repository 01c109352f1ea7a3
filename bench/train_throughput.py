"""QLoRA training throughput and peak memory on a Mistral-7B-shaped model, seed recipe vs ours.

Both arms run the project's trainer (`trainer.train.prepare`: TRL SFTTrainer, NF4 double-quant
base, LoRA r16 on q,k,v,o, grad checkpointing, paged AdamW 8-bit) on the same rows, one after the
other in one process:
  seed  - batches drawn at random and padded to their longest row (what the seed projects did);
  ours  - the same, with length-grouped batches (train_sampling_strategy=group_by_length).
Throughput counts real (non-pad) tokens. Peak memory is compared with `trainer.memory.estimate`.
Weights are random: speed and memory do not depend on their values.

    python bench/train_throughput.py --data CoT.jsonl --out bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

MISTRAL_7B = dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rope_theta=1e6, sliding_window=None, tie_word_embeddings=False)


def build_model(tokenizer_dir: Path, out: Path) -> Path:
    """Random-weight Mistral-7B shape + the tiny tokenizer (its ids are a subset of the vocab)."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(MistralConfig(**MISTRAL_7B, bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                                   ).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def run_arm(name: str, base: Path, data: Path, out: Path, steps: int, batch: int, warmup: int, **training) -> dict:
    from transformers import TrainerCallback

    from trainer.config import load_config
    from trainer.memory import estimate
    from trainer.train import prepare

    cfg = load_config(Path("configs/train/default.yaml"), {
        "output_dir": str(out / name), "model": {"base_model": str(base)},
        "data": {"train_file": str(data), "eval_file": None, "max_length": 2048},
        "training": {"max_steps": steps, "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1,
                     "save_strategy": "no", "report_to": [], "logging_steps": 1000, "eval_strategy": "no",
                     "load_best_model_at_end": False, **training}})
    run = prepare(cfg)
    trainer = run.trainer
    tokens, marks = [], {}
    collate = trainer.data_collator

    def counting_collator(examples):
        batch_ = collate(examples)
        tokens.append((int(batch_["attention_mask"].sum()), int(batch_["attention_mask"].numel())))
        return batch_

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            marks[state.global_step] = time.perf_counter()

    trainer.data_collator = counting_collator
    trainer.add_callback(Clock())
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = tokens[warmup:steps]
    seconds = marks[steps] - marks[warmup]
    real, padded = sum(t for t, _ in timed), sum(n for _, n in timed)
    longest = max(len(x["input_ids"]) for x in trainer.train_dataset)
    est_cfg = cfg.model_copy(deep=True)
    est_cfg.data.max_length = longest  # the estimate's worst case: a batch padded to the longest row
    result = {
        "arm": name, "steps_timed": steps - warmup, "seconds": round(seconds, 2),
        "real_tokens_per_s": round(real / seconds), "padded_tokens_per_s": round(padded / seconds),
        "padding_fraction": round(1 - real / padded, 3),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "estimate_gib_worst_case": round(estimate(est_cfg).total, 2), "longest_row_tokens": longest,
        "sampling": training.get("train_sampling_strategy", "random"),
    }
    del trainer, run
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="CoT rows: premise, hypothesis, thought, label")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cotharness-bench"))
    args = parser.parse_args()

    from cotharness.tiny_model import build

    args.work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    data = args.work / "train.jsonl"  # label column normalised; repeated to fill the timed steps
    need = args.steps * args.batch
    with data.open("w") as f:
        for i in range(need):
            r = rows[i % len(rows)]
            f.write(json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"],
                                "thought_process": r["thought_process"], "label": r[args.label_column]}) + "\n")
    t0 = time.perf_counter()
    base = build_model(build(args.work / "tiny"), args.work / "mistral-7b-shape")
    build_s = time.perf_counter() - t0
    arms = [run_arm("seed", base, data, args.work, args.steps, args.batch, args.warmup),
            run_arm("ours", base, data, args.work, args.steps, args.batch, args.warmup,
                    train_sampling_strategy="group_by_length")]
    report = {
        "what": "QLoRA SFT throughput, Mistral-7B shape (random weights), NF4 double-quant, LoRA r16 qkvo, "
                f"bs{args.batch}, grad ckpt on, paged_adamw_8bit",
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "rows": len(rows), "model_build_seconds": round(build_s, 1), "arms": arms,
        "speedup_real_tokens": round(arms[1]["real_tokens_per_s"] / arms[0]["real_tokens_per_s"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
