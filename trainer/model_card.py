"""README.md of a run directory: a PEFT model card as the Hugging Face Hub reads it (YAML front matter:
base model, library, pipeline, tags, data files), what was trained, on what, how, and the command whose
output ``cotharness compare`` reads."""

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


def card_data(record: dict):
    """The card's front matter: what the Hub shows and searches (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    model = record["config"]["model"]
    tasks = list(dict.fromkeys([record["task"], *_lm_eval_tasks(record["task"])]))
    quantized = ["qlora", "4-bit", "bitsandbytes"] if model["quantization"] in FOUR_BIT else \
        ["8-bit", "bitsandbytes"] if model["quantization"] == "int8" else []
    return ModelCardData(base_model=model["base_model"], library_name="peft", pipeline_tag="text-generation",
                         tags=["cotharness", *tasks, "lora", *quantized, "sft", "trl", "chain-of-thought"],
                         datasets=list(record["data"]) or None)


FOUR_BIT = ("nf4", "fp4")


def _quantization(model: dict) -> str:
    """How the base was held while training, in words."""
    if model["quantization"] in FOUR_BIT:
        return (f"QLoRA: LoRA on a 4-bit {model['quantization'].upper()} base (double quantization: "
                f"{model['double_quant']}, compute dtype {model['compute_dtype']})")
    if model["quantization"] == "int8":
        return "LoRA on an 8-bit (int8) base"
    return f"LoRA on the unquantized base in {model['compute_dtype']}"


def _evaluate(record: dict, name: str) -> str:
    cfg, model, task = record["config"], record["config"]["model"], record["task"]
    tasks = ",".join(_lm_eval_tasks(task))
    if not tasks:
        return (f"`{task}` has no lm-eval task. Load the adapter on the base it was trained on "
                f"(`{eval_model_args(record)}`)" + (
                    f", e.g. `cotharness datagen backtranslate augment --backend hf --model {model['base_model']} "
                    f"--adapter {cfg['output_dir']}`." if task == "backward" else "."))
    settings = "" if tasks == task else f" (`{tasks}`: its settings are in `harness_tasks/{task}/`)"
    return f"""On the same base it was trained on{settings}:

```bash
cotharness eval --tasks {tasks} --model_args {eval_model_args(record)} \\
  --output_path results/{name} --log_samples
```

`cotharness compare results/<base run> results/{name} --out results/<comparison>` then compares it with
the base model's run on the same documents.

Plain lm-eval (cannot load 4-bit on transformers 5; this runs the adapter on a bf16 base):

```bash
lm_eval --include_path harness_tasks --tasks {tasks} --model hf \\
  --model_args pretrained={model['base_model']},peft={cfg['output_dir']},dtype=bfloat16 --batch_size 32
```"""


def _steps(record: dict) -> str:
    step, target = record.get("global_step"), record.get("max_steps")
    if step is None or not target or step >= target:
        return str(step)
    return f"{step} of {target}" + (" (stopped early)" if record.get("status", "complete") == "complete" else "")


def _time(record: dict) -> str:
    """Training time over every segment of the run (a resumed run trains in several processes)."""
    seconds, segments = record.get("train_seconds"), record.get("segments") or []
    if seconds is None:
        return "training time not recorded"
    return f"training time {seconds} s" + (f" over {len(segments)} segments (resumed)" if len(segments) > 1 else "")


def _status(record: dict) -> str:
    status = record.get("status", "complete")
    if status == "interrupted":
        return (f"> **Interrupted** ({record.get('signal')}) at step {record.get('global_step')}: the adapter is not "
                f"written yet. Continue with `{record.get('resume_command')}`.\n\n")
    if status == "failed":
        return f"> **Failed** at step {record.get('global_step')}: `{record.get('error')}`.\n\n"
    return ""


def render(record: dict) -> str:
    """The README.md text: front matter (``card_data``) then the body."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{card_data(record).to_yaml()}\n---\n\n{_body(record)}"))


def _body(record: dict) -> str:
    cfg = record["config"]
    name = Path(cfg["output_dir"]).name
    model, lora, data, training = cfg["model"], cfg["lora"], cfg["data"], cfg["training"]
    resolved = record.get("resolved") or {}  # what "auto" became on the training machine
    rows = "\n".join(f"| `{k}` | `{v}`{f' (chose `{resolved[k]}`)' if v == 'auto' and k in resolved else ''} |"
                     for k, v in sorted(training.items()))
    files = "\n".join(f"- `{p}`: {d['rows']} rows, sha256 `{d['sha256'][:12]}…`, tokens median "
                      f"{d['tokens_median']} / max {d['tokens_max']}, {d['over_max_length']} over max_length"
                      for p, d in record["data"].items())
    ev = record.get("eval_metrics") or {}
    evals = (f"- eval loss (held-out `{data['eval_file']}`): {ev['eval_loss']:.4f}" if "eval_loss" in ev
             else f"- eval loss: not measured yet (`{data['eval_file']}`)" if data["eval_file"]
             else "- no eval file was given")
    git = record["git"]
    writes, target = _describe(get_task(record["task"]))
    return f"""# {name}

{_status(record)}A LoRA adapter for **{model['base_model']}**, fine-tuned with cotharness on the `{record['task']}`
task ({writes}); {_quantization(model)}.

## Evaluate it

{_evaluate(record, name)}

The prompt is `prompts/{record['prompt_template']['name']}.j2` (sha256 `{record['prompt_template']['sha256'][:12]}…`),
the same text at training and evaluation.

## Results

{evals}
- steps: {_steps(record)}, {_time(record)}
- best checkpoint: {record.get('best_checkpoint') or 'n/a'}
- task metrics: run the command above (lm-eval writes them under `results/{name}/`)

## Data

{files}

Targets: {target}; loss on the target only; rows over
{data['max_length']} tokens were {'dropped' if data['overlong'] == 'drop' else 'refused'}, never truncated.

## Training

- base model: {_quantization(model)}
- LoRA: r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, target modules: {lora['target_modules']}
- early stopping patience: {cfg['early_stopping_patience']}

| SFTConfig | value |
|---|---|
{rows}

Reproduce: `run.json` holds the resolved config, package versions and data hashes;
code at commit `{git.get('commit')}`{' (with uncommitted changes)' if git.get('dirty') else ''}.
"""
