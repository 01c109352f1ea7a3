"""Merge a LoRA adapter into a 16-bit copy of its base model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from harness_tasks import manifest
from harness_tasks.errors import UserError
from harness_tasks.quant import to_dtype
from trainer.config import ConfigError
from trainer.model import check_base_model, hub_error

log = logging.getLogger(__name__)
DTYPES = ("bfloat16", "float16", "float32")


class MergeError(UserError, ValueError):
    pass


def merge(adapter: str | Path, out: str | Path, base_model: str | None = None, dtype: str = "bfloat16") -> Path:
    """Write ``base + adapter`` as plain ``dtype`` weights to ``out`` (atomically: all or nothing).

    A QLoRA adapter was trained against 4-bit weights; merging it into the 16-bit base is the
    standard way to deploy it, but the result is not bit-identical to the 4-bit model it was
    trained with, so the merged model should be evaluated again. Merging into 4-bit weights is
    refused: the merged deltas would be re-quantized away.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    if dtype not in DTYPES:  # before anything is loaded or said
        raise MergeError(f"--dtype {dtype}: not a dtype to merge into; use one of {', '.join(DTYPES)}")
    if not (adapter / "adapter_config.json").is_file():
        raise MergeError(f"--adapter {adapter}: no adapter_config.json (not a PEFT adapter directory; "
                         "pass a training run's folder)")
    if out.exists():
        raise MergeError(f"--out {out} exists; choose a new --out (a merge never overwrites)")
    base = base_model or PeftConfig.from_pretrained(adapter).base_model_name_or_path
    option = ("--base-model" if base_model else
              "the adapter's base model (its adapter_config.json; --base-model overrides)")
    try:
        check_base_model(base, option)
        stored = AutoConfig.from_pretrained(base)
    except ConfigError as err:
        raise MergeError(str(err)) from None
    except OSError as err:
        raise MergeError(str(hub_error(base, err, option))) from None
    if getattr(stored, "quantization_config", None):
        raise MergeError(f"{base} is stored quantized; merge into a 16-bit copy of the base model instead "
                         "(--base-model), not into 4-bit weights")
    run_file = adapter / "run.json"
    trained_on = json.loads(run_file.read_text())["quantization"] if run_file.is_file() else None
    if trained_on in ("nf4", "fp4", "int8"):
        log.warning("adapter was trained on a %s base; the merged %s model differs slightly: re-evaluate it",
                    trained_on, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=to_dtype(dtype), device_map="cpu")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else base)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "merge.json").write_text(json.dumps({
        "base_model": base, "adapter": str(adapter), "dtype": dtype, "adapter_trained_on": trained_on,
        "versions": manifest.package_versions(), "git": manifest.git_commit()}, indent=2))
    tmp.rename(out)
    return out
