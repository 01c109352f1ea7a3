"""Generic pre-training for the tiny base: telling whether two words are the same.

A real base model arrives at fine-tuning already able to compare two words; a randomly initialised
4-layer model is not, and it does not learn to from a few hundred fine-tuning steps. So the tiny base is first
trained on generic text, lines like "Rome and Rome: same. calm and Uma: different.", over every word of
the synthetic task's vocabulary. The text holds no premise, hypothesis, step or label: the task itself
is left entirely to fine-tuning. ``pretrain.json`` records the comparison accuracy reached.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

PROBE_PAIRS = 400


def equality_line(rng: random.Random, words: list[str]) -> str:
    """One generic comparison; half the pairs are the same word."""
    x, y = rng.sample(words, 2)
    y = x if rng.random() < 0.5 else y
    return f"{x} and {y}: {'same' if x == y else 'different'}."


def equality_accuracy(model, tokenizer, words: list[str], seed: int = 7) -> float:
    """Share of fresh pairs where the model prefers the right one of ' same' / ' different'."""
    import torch

    rng = random.Random(seed)
    same, different = (tokenizer(w, add_special_tokens=False).input_ids[0] for w in (" same", " different"))
    prompts, truth = [], []
    for i in range(PROBE_PAIRS):
        x, y = rng.sample(words, 2)
        y = x if i % 2 == 0 else y
        prompts.append(f"{x} and {y}:")
        truth.append(x == y)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)  # left padding
        logits = model(**enc).logits[:, -1]
    model.train(was_training)
    said_same = (logits[:, same] > logits[:, different]).tolist()
    return sum(s == t for s, t in zip(said_same, truth, strict=True)) / len(truth)


def pretrain(model_dir: str | Path, steps: int = 1000, batch_size: int = 32, lines_per_row: int = 10,
             learning_rate: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train every weight of the model in ``model_dir`` on generic word comparisons, in place.

    Written to a sibling directory and renamed over ``model_dir`` at the end, so an interrupted run
    leaves the untrained model, never a half-written one. Records ``pretrain.json`` beside the weights.
    """
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datagen.synthetic.nli import vocabulary
    from harness_tasks.manifest import write_atomic

    model_dir = Path(model_dir)
    torch.manual_seed(seed)
    rng, words = random.Random(seed), vocabulary()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    losses = []
    console = Console(stderr=True)
    # a bar on a terminal; on a pipe or a CI log, where rich draws nothing, a line every tenth of the way
    every = 0 if console.is_terminal else max(1, steps // 10)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("pre-training the tiny base", total=steps, loss="-")
        for step in range(1, steps + 1):
            rows = [" ".join(equality_line(rng, words) for _ in range(lines_per_row)) for _ in range(batch_size)]
            enc = tokenizer(rows, return_tensors="pt", padding=True)
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            loss = model(**enc, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=f"{losses[-1]:.3f}")
            if progress and every and (step % every == 0 or step == steps):
                console.print(f"pre-training the tiny base: step {step}/{steps}, loss {losses[-1]:.3f}")
    record = {"steps": steps, "batch_size": batch_size, "lines_per_row": lines_per_row,
              "learning_rate": learning_rate, "seed": seed, "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
              "equality_accuracy": equality_accuracy(model, tokenizer, words),
              "text": "generic 'X and Y: same/different.' over the synthetic task's vocabulary"}
    staging = model_dir.with_name(model_dir.name + ".pretraining")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    model.save_pretrained(staging)
    write_atomic(staging / "pretrain.json", json.dumps(record, indent=2) + "\n")
    backup = model_dir.with_name(model_dir.name + ".random")
    model_dir.rename(backup)
    staging.rename(model_dir)
    shutil.rmtree(backup)
    return record


def build_base(path: str | Path, shape: dict, steps: int = 1000, seed: int = 0) -> dict:
    """Build the tiny model of ``shape`` (cotharness.tiny_model.build's sizes) into ``path`` afresh and
    pre-train it for ``steps``; returns pretrain.json's record. The study's ``tiny_base`` stage."""
    from cotharness.tiny_model import build

    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    build(path, **shape)
    return pretrain(path, steps=steps, seed=seed)
