"""README.md of a run directory: what was trained, on what, how, and the command that evaluates it."""

from __future__ import annotations

from pathlib import Path

from harness_tasks.tasks import get_task


def eval_model_args(record: dict) -> str:
    """``--model_args`` that load the adapter on the same base it was trained on."""
    cfg = record["config"]
    model, out = cfg["model"], cfg["output_dir"]
    args = [f"pretrained={model['base_model']}", f"peft={out}"]
    if model["quantization"] in ("nf4", "fp4"):
        args.append("load_in_4bit=True")
        if model["quantization"] != "nf4":
            args.append(f"bnb_4bit_quant_type={model['quantization']}")
        if not model["double_quant"]:
            args.append("bnb_4bit_use_double_quant=False")
        if model["compute_dtype"] != "bfloat16":
            args.append(f"bnb_4bit_compute_dtype={model['compute_dtype']}")
    elif model["quantization"] == "int8":
        args.append("load_in_8bit=True")
    else:
        args.append(f"dtype={model['compute_dtype']}")
    return ",".join(args)


def render(record: dict) -> str:
    cfg = record["config"]
    name = Path(cfg["output_dir"]).name
    model, lora, data, training = cfg["model"], cfg["lora"], cfg["data"], cfg["training"]
    resolved = record.get("resolved") or {}  # what "auto" became on the training machine
    rows = "\n".join(f"| `{k}` | `{v}`{f' (chose `{resolved[k]}`)' if v == 'auto' and k in resolved else ''} |"
                     for k, v in sorted(training.items()))
    files = "\n".join(f"- `{p}`: {d['rows']} rows, sha256 `{d['sha256'][:12]}…`, tokens median {d['tokens_median']}"
                      f" / max {d['tokens_max']}, {d['over_max_length']} over max_length"
                      for p, d in record["data"].items())
    ev = record.get("eval_metrics") or {}
    evals = (f"- eval loss (held-out `{data['eval_file']}`): {ev['eval_loss']:.4f}" if "eval_loss" in ev
             else "- no eval file was given")
    git = record["git"]
    schema = get_task(record["task"]).schema
    return f"""# {name}

A LoRA adapter for **{model['base_model']}**, fine-tuned with cotharness on the `{record['task']}` task
(chain of thought, then a JSON answer), {'QLoRA on a ' + model['quantization'] + ' 4-bit base' if model['quantization'] in ('nf4', 'fp4') else model['quantization'] + ' base'}.

## Evaluate it

On the same base it was trained on:

```bash
cotharness eval --tasks {record['task']} --model_args {eval_model_args(record)} \\
  --batch_size 32 --output_path results/{name}
```

Plain lm-eval (cannot load 4-bit on transformers 5; this runs the adapter on a bf16 base):

```bash
lm_eval --include_path harness_tasks --tasks {record['task']} --model hf \\
  --model_args pretrained={model['base_model']},peft={cfg['output_dir']},dtype=bfloat16 --batch_size 32
```

The prompt is `prompts/{record['prompt_template']['name']}.j2` (sha256 `{record['prompt_template']['sha256'][:12]}…`),
the same text at training and evaluation.

## Results

{evals}
- steps: {record.get('global_step')}, training time {record.get('train_seconds')} s
- best checkpoint: {record.get('best_checkpoint') or 'n/a'}
- task metrics: run the command above (lm-eval writes them under `results/{name}/`)

## Data

{files}

Targets: the JSON answer `{{"{schema.thought_key}": "...", "{schema.label_key}": ...}}` + EOS; loss on the answer only; rows over
{data['max_length']} tokens were {'dropped' if data['overlong'] == 'drop' else 'refused'}, never truncated.

## Training

- quantization: {model['quantization']} (double quant: {model['double_quant']}, compute dtype: {model['compute_dtype']})
- LoRA: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, target modules: {lora['target_modules']}
- early stopping patience: {cfg['early_stopping_patience']}

| SFTConfig | value |
|---|---|
{rows}

Reproduce: `run.json` holds the resolved config, package versions and data hashes;
code at commit `{git.get('commit')}`{' (with uncommitted changes)' if git.get('dirty') else ''}.
"""
