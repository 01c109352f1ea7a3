"""Does the GGUF answer like the HF model it came from? Both greedy-decode the same prompts of the run's
task: the prompt token ids, the first generated tokens, the first-step logits and the parsed labels are
compared. transformers' GGUF reader must load the file too (a second, independent reader)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness_tasks.cot_json import parse
from harness_tasks.tasks import TASKS_DIR, get_task
from trainer.export.convert import ExportError


@dataclass(frozen=True)
class CheckSettings:
    prompts: int = 8
    """how many of the task's documents (the first ones)"""
    tokens: int = 32
    """the first N generated tokens compared for exact agreement"""
    max_new_tokens: int = 160
    """how far each answer is decoded to parse a label (the task's own limit is often longer)"""
    threads: int | None = None
    """llama.cpp's CPU threads (None: its default)"""


def _loader(task: str):
    """The task's lm-eval ``custom_dataset`` function (its YAML in harness_tasks/)."""
    import importlib

    for path in sorted(TASKS_DIR.glob("*/*.yaml")):
        text = path.read_text(encoding="utf-8")
        if re.search(rf"^task:\s*{re.escape(task)}\s*$", text, re.MULTILINE):
            found = re.search(r"^custom_dataset:\s*!function\s+(\S+)\s*$", text, re.MULTILINE)
            if found:
                module, name = found.group(1).rsplit(".", 1)
                return getattr(importlib.import_module(module), name)
    return None


def task_prompts(task: str, n: int, data_file: Path | None = None) -> list[str]:
    """The first ``n`` prompts of ``task``'s test documents (its bundled sample, or ``data_file``),
    rendered as training and evaluation render them."""
    spec = get_task(task)
    load = _loader(task) or _loader({"instruct": "instruct_judged"}.get(task, task))
    if load is None:
        raise ExportError(f"task {task} has no lm-eval documents to check the GGUF on; pass --check-task")
    rows = load(**({"test_file": str(data_file)} if data_file else {}))["test"]
    return [spec.prompt(dict(rows[i])) for i in range(min(n, len(rows)))]


def hf_answers(model_dir: Path, prompts: list[str], settings: CheckSettings) -> list[dict]:
    """Greedy answers of the merged HF model: prompt ids, generated ids, text, first-step logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 device_map="cuda" if cuda else "cpu").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            first = model(ids).logits[0, -1].float().cpu()
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=settings.max_new_tokens, pad_token_id=tok.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)[0, ids.shape[1]:].tolist()
        if gen and gen[-1] == tok.eos_token_id:
            gen = gen[:-1]
        out.append({"prompt_ids": ids[0].tolist(), "ids": gen, "first_logits": first.numpy(),
                    "text": tok.decode(gen, skip_special_tokens=True)})
    del model
    return out


def llama_cpp_answers(path: Path, prompts: list[str], settings: CheckSettings, n_ctx: int) -> tuple[list[dict], float]:
    """The same with llama.cpp (``llama_cpp.Llama``, CPU); and its decoding speed in tokens/s."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=settings.threads, seed=0, verbose=False)
    out, generated, seconds = [], 0, 0.0
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        # Llama keeps no scores unless logits_all (which computes every position); the last row is llama.cpp's
        last = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        first = np.ctypeslib.as_array(last, shape=(llm.n_vocab(),)).astype(np.float32)
        gen, started = [], time.perf_counter()
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            if token == llm.token_eos() or len(gen) >= settings.max_new_tokens:
                break
            gen.append(token)
        seconds += time.perf_counter() - started
        generated += len(gen)
        out.append({"prompt_ids": list(ids), "ids": gen, "first_logits": first,
                    "text": llm.detokenize(gen).decode("utf-8", errors="replace")})
    llm.close()
    return out, round(generated / seconds, 1) if seconds else 0.0


def compare(hf: list[dict], gguf: list[dict], task: str, settings: CheckSettings) -> dict:
    """Agreement of the GGUF's answers with the HF model's, prompt by prompt and in total."""
    import numpy as np

    schema = get_task(task).schema
    rows = []
    for a, b in zip(hf, gguf, strict=True):
        n = settings.tokens
        prefix = next((i for i, (x, y) in enumerate(zip(a["ids"], b["ids"], strict=False)) if x != y),
                      min(len(a["ids"]), len(b["ids"])))
        labels = [parse(x["text"], schema).label if schema else None for x in (a, b)]
        rows.append({
            "prompt_tokens_equal": a["prompt_ids"] == b["prompt_ids"],
            "first_tokens_equal": a["ids"][:n] == b["ids"][:n],
            "common_prefix": prefix,
            "first_logits_max_abs_diff": round(float(np.abs(a["first_logits"] - b["first_logits"]).max()), 5),
            "hf_label": labels[0], "gguf_label": labels[1],
            "hf_text": a["text"][:200], "gguf_text": b["text"][:200],
        })
    n = len(rows) or 1
    return {
        "task": task, "prompts": len(rows), "tokens": settings.tokens, "max_new_tokens": settings.max_new_tokens,
        "prompt_tokens_equal": round(sum(r["prompt_tokens_equal"] for r in rows) / n, 4),
        "first_tokens_exact_match": round(sum(r["first_tokens_equal"] for r in rows) / n, 4),
        "labels_exact_match": round(sum(r["hf_label"] == r["gguf_label"] for r in rows) / n, 4) if schema else None,
        "labels_parsed": {"hf": sum(r["hf_label"] is not None for r in rows),
                          "gguf": sum(r["gguf_label"] is not None for r in rows)} if schema else None,
        "first_logits_max_abs_diff": max((r["first_logits_max_abs_diff"] for r in rows), default=None),
        "per_prompt": rows,
    }


def transformers_reads(path: Path, prompt: str, reference: dict) -> dict:
    """transformers' own GGUF reader (``from_pretrained(..., gguf_file=...)``) loads the model and the
    tokenizer, and its first greedy token on ``prompt`` is compared with the HF model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - any failure of the second reader is the finding, kept in the manifest
        return {"loads": False, "error": f"{type(err).__name__}: {err}"[:500]}
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        first = model(ids).logits[0, -1]
    expected = reference["ids"][0] if reference["ids"] else None
    return {"loads": True, "prompt_tokens_equal": ids[0].tolist() == reference["prompt_ids"],
            "first_token_equal": expected is None or int(first.argmax()) == expected,
            "seconds": round(time.perf_counter() - started, 2)}


def summary_line(path: Path, check: dict) -> str:
    labels = "n/a (free-text task)" if check["labels_exact_match"] is None else \
        f"{check['labels_exact_match']:.0%} (parsed: hf {check['labels_parsed']['hf']}, gguf {check['labels_parsed']['gguf']})"
    return (f"{path.name}: on {check['prompts']} {check['task']} prompts, first {check['tokens']} tokens equal to HF's "
            f"{check['first_tokens_exact_match']:.0%}, labels equal {labels}, prompt tokens equal "
            f"{check['prompt_tokens_equal']:.0%}")


def as_json(check: dict) -> str:
    return json.dumps(check, indent=2, default=str)
