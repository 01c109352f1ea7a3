"""K-quants (q4_k_m, the usual choice for a laptop) through llama.cpp's own quantizer, which gguf-py
does not implement; and what a GGUF file actually holds, read back from it."""

from __future__ import annotations

import ctypes
import time
from collections import Counter
from pathlib import Path

from trainer.export.convert import ExportError

# cotharness name -> llama.cpp's file type (llama.h: llama_ftype)
BY_LLAMA_CPP = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
# the types a K-quant mixture is made of; any other 2-D type in a K-quant file is a fallback
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"}
K_BLOCK = 256


def llama_cpp_missing() -> str | None:
    """Why llama-cpp-python cannot be used here, or None."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return (f"llama-cpp-python is not installed ({err}); install the gguf extra: "
                "make setup EXTRAS=dev,gguf (builds llama.cpp from source)")
    return None


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> float:
    """``src`` (an F16/F32 GGUF) quantized by llama.cpp to ``dst``; seconds taken."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, BY_LLAMA_CPP[quant])
    params.nthread = threads
    started = time.perf_counter()
    with suppress_stdout_stderr(disable=False):  # llama.cpp logs every tensor to stderr
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise ExportError(f"llama.cpp could not quantize {src.name} to {quant} (status {status})")
    return round(time.perf_counter() - started, 2)


def tensor_types(path: Path) -> dict[str, dict]:
    """GGUF tensor name -> {type, shape} as written in ``path``."""
    from gguf import GGUFReader

    return {t.name: {"type": t.tensor_type.name, "shape": [int(n) for n in t.shape]}
            for t in GGUFReader(path).tensors}


def k_fallbacks(types: dict[str, dict]) -> dict[str, str]:
    """The 2-D tensors llama.cpp did not put in a K-quant type, and why (its rule: a K-quant block
    spans 256 values of a row)."""
    out = {}
    for name, info in types.items():
        if len(info["shape"]) < 2 or info["type"] in K_TYPES:
            continue
        row = info["shape"][0]  # GGUF lists the row length first
        why = f"row length {row} is not a multiple of {K_BLOCK}" if row % K_BLOCK else "llama.cpp's choice"
        out[name] = f"{info['type']}: {why}"
    return out


def type_counts(types: dict[str, dict]) -> dict[str, int]:
    return dict(sorted(Counter(info["type"] for info in types.values()).items()))
