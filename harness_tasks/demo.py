"""``cotharness demo``: the pipeline on the embedded default model, no GPU, no API key.

Today: build the tiny model and evaluate it with lm-eval on the bundled nli_cot sample (CoT and the
direct log-likelihood baseline). An untrained model's answers do not parse, so it scores ~0 on
nli_cot: that is the honest baseline the fine-tuning step will be measured against.
"""

from __future__ import annotations

from pathlib import Path

from harness_tasks.run_eval import main as run_eval


def run(out_dir: Path = Path("results/demo"), model_dir: Path = Path("runs/demo/tiny-base"),
        limit: int | None = None) -> int:
    from trainer.tiny_model import build

    if not (model_dir / "config.json").is_file():
        build(model_dir)
    args = ["--tasks", "nli_cot,nli_direct", "--model_args", f"pretrained={model_dir},dtype=float32",
            "--device", "cpu", "--batch_size", "8", "--gen_kwargs", "max_gen_toks=96",
            "--output_path", str(out_dir)]
    if limit:
        args += ["--limit", str(limit)]
    return run_eval(args)
