"""``cotharness export gguf``: merge the adapter, write one GGUF per quantization, check each against the
merged HF model, and write each file's manifest and Ollama Modelfile beside it.

Everything is made in a hidden folder beside ``--out`` and moved into place only when every file is
done and checked: a mistake, a failure or Ctrl-C leaves nothing behind."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness_tasks import manifest
from trainer.export import agreement, modelfile
from trainer.export.convert import WRITTEN_HERE, ExportError, check_architecture, convert
from trainer.export.quantize import (
    BY_LLAMA_CPP,
    k_fallbacks,
    llama_cpp_missing,
    quantize,
    tensor_types,
    type_counts,
)

# f32 is written too (WRITTEN_HERE) but is no export: a GGUF twice the size of the bf16 weights it came from
QUANTS = ("f16", "q8_0", "q4_0", *BY_LLAMA_CPP)
DEFAULT_TASK = "nli_cot"


@dataclass
class ExportRun:
    adapter: Path
    out: Path
    """the GGUF file; with several quantizations, ``<stem>-<quant>.gguf`` beside it"""
    quants: list[str] = field(default_factory=lambda: ["q4_k_m"])
    base_model: str | None = None
    check_task: str | None = None
    """the task whose prompts the check decodes; default: the run's (run.json)"""
    check_data: Path | None = None
    check: agreement.CheckSettings = field(default_factory=agreement.CheckSettings)


@dataclass(frozen=True)
class Exported:
    path: Path
    manifest: Path
    modelfile: Path
    summary: str


def targets(run: ExportRun) -> dict[str, Path]:
    """quant -> the file it is written to."""
    if len(run.quants) == 1:
        return {run.quants[0]: run.out}
    return {q: run.out.with_name(f"{run.out.stem}-{q}{run.out.suffix}") for q in run.quants}


def beside(path: Path, what: str) -> Path:
    """``model.gguf`` -> ``model.manifest.json`` / ``model.Modelfile``."""
    return path.with_name(f"{path.stem}.{what}")


def check_inputs(run: ExportRun) -> tuple[dict, dict | None, str]:
    """Every mistake before anything loads: (the base's config.json, the run's record or None, the task)."""
    from transformers import AutoConfig

    from harness_tasks.tasks import task_names
    from trainer.config import ConfigError
    from trainer.model import check_base_model, hub_error

    run.quants = list(dict.fromkeys(q.strip().lower() for q in run.quants if q.strip())) or ["q4_k_m"]
    for quant in run.quants:
        if quant not in QUANTS:
            close = difflib.get_close_matches(quant, QUANTS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ExportError(f"--quant {quant}: unknown quantization{hint} (one of {', '.join(QUANTS)})")
    if run.out.suffix != ".gguf":
        raise ExportError(f"--out {run.out}: name a .gguf file (e.g. {run.out.with_suffix('.gguf').name})")
    if not run.out.parent.is_dir():
        raise ExportError(f"--out {run.out}: folder {run.out.parent} does not exist; create it first")
    for path in targets(run).values():
        for each in (path, beside(path, "manifest.json"), beside(path, "Modelfile")):
            if each.exists():
                raise ExportError(f"--out: {each} exists; choose a new --out (an export never overwrites)")
    if not (run.adapter / "adapter_config.json").is_file():
        raise ExportError(f"--adapter {run.adapter}: no adapter_config.json (not a PEFT adapter directory; "
                          "pass a training run's folder)")
    missing = llama_cpp_missing()
    if missing:  # the check needs llama.cpp for every quantization, not only for K-quants
        raise ExportError(missing)
    adapter_config = json.loads((run.adapter / "adapter_config.json").read_text())
    base = run.base_model or adapter_config.get("base_model_name_or_path")
    option = "--base-model" if run.base_model else "the adapter's base model (its adapter_config.json; --base-model overrides)"
    try:
        check_base_model(base, option)
        config = AutoConfig.from_pretrained(base).to_dict()
    except ConfigError as err:
        raise ExportError(str(err)) from None
    except OSError as err:
        raise ExportError(str(hub_error(base, err, option))) from None
    check_architecture(config, base)
    run_file = run.adapter / "run.json"
    record = json.loads(run_file.read_text()) if run_file.is_file() else None
    task = run.check_task or (record or {}).get("task") or DEFAULT_TASK
    if task not in task_names():
        close = difflib.get_close_matches(task, task_names(), n=1)
        raise ExportError(f"--check-task {task}: unknown task" + (f"; did you mean {close[0]}?" if close else ""))
    if run.check_data is not None and not run.check_data.is_file():
        raise ExportError(f"--check-data {run.check_data}: no such file")
    return config, record, task


def _meta(run: ExportRun, record: dict | None, base: str, task: str) -> dict:
    """``general.*`` of the GGUF, from the run's model card where there is one."""
    meta = {"name": run.adapter.resolve().name, "base_model": base,
            "description": f"{base} fine-tuned with cotharness (LoRA, merged) on the {task} task"}
    if record is not None:
        from trainer.model_card import card_data

        card = card_data(record)
        meta["tags"] = list(card.tags or [])
        meta["datasets"] = list(card.datasets or [])
    return meta


def export(run: ExportRun, say=print) -> list[Exported]:
    """Write and check one GGUF per quantization of ``run`` (see the module's docstring)."""
    from trainer.merge import merge

    config, record, task = check_inputs(run)
    files = targets(run)
    context = min(int(config.get("max_position_embeddings") or 2048), 4096)
    with tempfile.TemporaryDirectory(dir=run.out.parent, prefix=f".{run.out.stem}.export-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            started = time.perf_counter()
            merged = merge(run.adapter, tmp / "merged", base_model=run.base_model)
            merge_seconds = round(time.perf_counter() - started, 2)
            base = json.loads((merged / "merge.json").read_text())["base_model"]
            meta = _meta(run, record, base, task)
            prompts = agreement.task_prompts(task, run.check.prompts, run.check_data)
            say(f"merged in {merge_seconds} s; decoding {len(prompts)} {task} prompts with the HF model")
            reference = agreement.hf_answers(merged, prompts, run.check)
            made = [_one(quant, path, tmp, merged, meta, prompts, reference, task, context, run, say)
                    for quant, path in files.items()]
        except KeyboardInterrupt:
            raise KeyboardInterrupt("nothing was written (the export moves its files into place at the end); "
                                    "rerun the same command") from None
        done = []
        for item, (quant, path) in zip(made, files.items(), strict=True):
            os.replace(item["gguf"], path)
            for name in ("manifest.json", "Modelfile"):
                os.replace(tmp / f"{quant}.{name}", beside(path, name))
            done.append(Exported(path, beside(path, "manifest.json"), beside(path, "Modelfile"), item["summary"]))
    return done


def _one(quant, path, tmp, merged, meta, prompts, reference, task, context, run, say) -> dict:
    """One quantization: convert (and quantize), read it back, check it; its manifest and Modelfile."""
    gguf = tmp / f"{quant}.gguf"
    if quant in WRITTEN_HERE:
        converted = convert(merged, gguf, quant, meta)
        convert_seconds, quantize_seconds, fallbacks = converted.seconds, None, converted.fallbacks
    else:
        source = tmp / "f16-source.gguf"
        converted = convert(merged, source, "f16", meta)
        convert_seconds = converted.seconds
        quantize_seconds = quantize(source, gguf, quant, threads=run.check.threads or 0)
        source.unlink()
        fallbacks = None
    types = tensor_types(gguf)
    if fallbacks is None:
        fallbacks = k_fallbacks(types)
    answers, tokens_per_second = agreement.llama_cpp_answers(gguf, prompts, run.check, context)
    check = agreement.compare(reference, answers, task, run.check)
    readers = {"llama_cpp": {"loads": True, "decode_tokens_per_second": tokens_per_second},
               "transformers": agreement.transformers_reads(gguf, prompts[0], reference[0])}
    summary = agreement.summary_line(path, check)
    if not readers["transformers"]["loads"]:
        summary += f"; transformers could not load it: {readers['transformers']['error']}"
    say(summary)
    record = {
        "gguf": path.name, "quant": quant, "bytes": gguf.stat().st_size, "sha256": manifest.sha256_file(gguf),
        "source": {"adapter": str(run.adapter), "base_model": meta["base_model"], "merged_dtype": "bfloat16"},
        "general": meta,
        "seconds": {"convert": convert_seconds, "quantize": quantize_seconds},
        "tensor_types": type_counts(types),
        "fallbacks": fallbacks,
        "check": check, "readers": readers,
        "versions": manifest.package_versions("gguf", "llama_cpp_python"), "git": manifest.git_commit(),
    }
    (tmp / f"{quant}.manifest.json").write_text(agreement.as_json(record), encoding="utf-8")
    max_tokens = run.check.max_new_tokens
    (tmp / f"{quant}.Modelfile").write_text(modelfile.render(path.name, merged, context, max_tokens), encoding="utf-8")
    return {"gguf": gguf, "summary": summary}
