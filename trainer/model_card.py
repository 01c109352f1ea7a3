"""README.md of a run directory: what was trained, on what, how, and the command that evaluates it."""

from __future__ import annotations

import re
from pathlib import Path

from harness_tasks.tasks import TASKS_DIR, get_task


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


def _describe(task) -> tuple[str, str]:
    """(what the model writes, its training target) for the card; a free-text task (no label schema,
    e.g. ``instruct`` or ``backward``) trains on its target text, not on a JSON answer."""
    if task.schema is None:
        return "free text", "the row's target text (e.g. the response, or for `backward` the instruction) + EOS"
    s = task.schema
    return ("chain of thought, then a JSON answer",
            f'the JSON answer `{{"{s.thought_key}": "...", "{s.label_key}": ...}}` + EOS')


def _lm_eval_tasks(name: str) -> list[str]:
    """The lm-eval tasks that evaluate a model trained on task ``name``: a YAML declaring ``task: name``,
    else those of the task's own folder (``instruct`` is evaluated by ``instruct_judged``); none for a
    variant without one (``backward`` is used by ``datagen backtranslate augment``, not evaluated)."""
    declared = {}
    for path in sorted(TASKS_DIR.glob("*/*.yaml")):
        found = re.search(r"^task:\s*(\S+)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
        if found:
            declared[found.group(1)] = path.parent.name
    if name in declared:
        return [name]
    return [task for task, folder in declared.items() if folder == name]


def _evaluate(record: dict, name: str) -> str:
    cfg, model, task = record["config"], record["config"]["model"], record["task"]
    tasks = ",".join(_lm_eval_tasks(task))
    if not tasks:
        return (f"`{task}` has no lm-eval task. Load the adapter on the base it was trained on "
                f"(`{eval_model_args(record)}`)" + (
                    f", e.g. `cotharness datagen backtranslate augment --local-model {model['base_model']} "
                    f"--adapter {cfg['output_dir']}`." if task == "backward" else "."))
    settings = "" if tasks == task else f" (`{tasks}`: its settings are in `harness_tasks/{task}/`)"
    return f"""On the same base it was trained on{settings}:

```bash
cotharness eval --tasks {tasks} --model_args {eval_model_args(record)} \\
  --batch_size 32 --output_path results/{name}
```

Plain lm-eval (cannot load 4-bit on transformers 5; this runs the adapter on a bf16 base):

```bash
lm_eval --include_path harness_tasks --tasks {tasks} --model hf \\
  --model_args pretrained={model['base_model']},peft={cfg['output_dir']},dtype=bfloat16 --batch_size 32
```"""


def _steps(record: dict) -> str:
    step, target = record.get("global_step"), record.get("max_steps")
    return f"{step} of {target} (stopped early)" if step is not None and target and step < target else str(step)


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
    writes, target = _describe(get_task(record["task"]))
    return f"""# {name}

A LoRA adapter for **{model['base_model']}**, fine-tuned with cotharness on the `{record['task']}` task
({writes}), {'QLoRA on a ' + model['quantization'] + ' 4-bit base' if model['quantization'] in ('nf4', 'fp4') else model['quantization'] + ' base'}.

## Evaluate it

{_evaluate(record, name)}

The prompt is `prompts/{record['prompt_template']['name']}.j2` (sha256 `{record['prompt_template']['sha256'][:12]}…`),
the same text at training and evaluation.

## Results

{evals}
- steps: {_steps(record)}, training time {record.get('train_seconds')} s
- best checkpoint: {record.get('best_checkpoint') or 'n/a'}
- task metrics: run the command above (lm-eval writes them under `results/{name}/`)

## Data

{files}

Targets: {target}; loss on the target only; rows over
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
