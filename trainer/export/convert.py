"""An HF Llama/Mistral checkpoint as a GGUF file, written with the ``gguf`` package (llama.cpp's own
Python writer): tensor names from gguf's ``TensorNameMap``, the hyper-parameters, the tokenizer, the chat
template and ``general.*`` metadata. F16, Q8_0 and Q4_0 are written here; K-quants are made from the F16
file by llama.cpp's quantizer (``quantize.py``)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness_tasks.errors import UserError

# HF model types whose checkpoints are llama.cpp's LLAMA architecture (Mistral without sliding
# window attention is Llama with other sizes; llama.cpp's own converter maps it the same way)
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
# written by gguf-py here (name -> GGMLQuantizationType name)
WRITTEN_HERE = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}


class ExportError(UserError, ValueError):
    pass


@dataclass
class Converted:
    path: Path
    seconds: float
    tensor_types: dict[str, str] = field(default_factory=dict)
    """GGUF tensor name -> the type it was written in"""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """tensors written in another type than asked, and why"""


def check_architecture(config: dict, where: str) -> None:
    """Refuse, before any work, a checkpoint this converter cannot map: ``config`` is its config.json."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ExportError(f"{where}: architecture {model_type!r} ({', '.join(config.get('architectures') or [])}) "
                          f"cannot be mapped to GGUF here; supported: {', '.join(ARCHITECTURES)} "
                          "(other architectures: llama.cpp's convert_hf_to_gguf.py on the merged model)")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ExportError(f"{where}: rope scaling {rope.get('rope_type') or rope.get('type')!r} is not mapped "
                          "to GGUF here; only plain RoPE")
    if model_type == "mistral" and config.get("sliding_window"):
        raise ExportError(f"{where}: sliding_window={config['sliding_window']}: llama.cpp's LLAMA architecture "
                          "has no sliding-window attention, the GGUF would answer differently on long inputs")


def rope_theta(config: dict) -> float:
    """transformers 5 keeps it in ``rope_parameters``; older configs at the top level."""
    return float((config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0)


def permute_qk(weights, n_head: int):
    """HF stores each rotary head's two halves apart ([x0..x63, y0..y63]); llama.cpp's LLAMA rope
    pairs neighbours ([x0, y0, x1, y1, ...]): reorder the rows of q_proj/k_proj as llama.cpp's own
    converter does (``LlamaModel.permute`` in convert_hf_to_gguf.py)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensors(model_dir: Path) -> Iterator[tuple[str, object]]:
    """(HF name, float32 numpy array) of every weight, one at a time (shards in order)."""
    import torch
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    for name in files:
        with safe_open(model_dir / name, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield key, f.get_tensor(key).to(torch.float32).numpy()


def _vocab(model_dir: Path, n_vocab: int):
    """(tokenizer.ggml.model, pre-tokenizer, tokens, token types, scores or None) for llama.cpp to
    tokenize exactly as the HF tokenizer does."""
    import gguf
    from transformers import AutoTokenizer

    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")) \
        if (model_dir / "tokenizer.json").is_file() else {}
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    pres = [p.get("type") for p in pre.get("pretokenizers", [])] if pre.get("type") == "Sequence" else [pre.get("type")]
    if model.get("type") == "BPE" and model.get("byte_fallback"):  # SentencePiece-like (Mistral, Llama 2)
        vocab = gguf.LlamaHfVocab(model_dir)
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        return "llama", "default", *_pad(tokens, types, n_vocab), scores + [-1000.0] * (n_vocab - len(scores))
    if model.get("type") == "BPE" and pres == ["ByteLevel"] and pre.get("use_regex", True):
        # byte-level BPE with GPT-2's split pattern: llama.cpp's "gpt2" model and "gpt-2" pre-tokenizer
        tok = AutoTokenizer.from_pretrained(model_dir)
        by_id = {i: t for t, i in tok.get_vocab().items()}
        added = tok.added_tokens_decoder
        tokens, types = [], []
        for i in range(min(n_vocab, max(by_id) + 1)):
            if i not in by_id:
                tokens.append(f"[PAD{i}]")
                types.append(gguf.TokenType.UNUSED)
            elif i in added:
                tokens.append(by_id[i])
                types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
            else:
                tokens.append(by_id[i])
                types.append(gguf.TokenType.NORMAL)
        return "gpt2", "gpt-2", *_pad(tokens, types, n_vocab), None
    raise ExportError(f"{model_dir}: tokenizer ({model.get('type')}, pre-tokenizer {pres}) is not mapped to "
                      "GGUF here; supported: byte-level BPE (GPT-2 style) and SentencePiece-style BPE "
                      "with byte fallback (Llama, Mistral)")


def _pad(tokens: list, types: list, n_vocab: int) -> tuple[list, list]:
    """An embedding matrix wider than the tokenizer (Mistral-7B's shape with a smaller tokenizer) gets
    unused placeholder tokens, as llama.cpp's converter writes them: GGUF needs one token per row."""
    import gguf

    if len(tokens) > n_vocab:
        raise ExportError(f"the tokenizer has {len(tokens)} tokens, the model's embedding only {n_vocab} rows")
    extra = range(len(tokens), n_vocab)
    return tokens + [f"[PAD{i}]" for i in extra], types + [gguf.TokenType.UNUSED] * len(extra)


def _metadata(writer, meta: dict) -> None:
    """``general.*`` from the run (model card): what llama.cpp, Ollama and the Hub show."""
    writer.add_type("model")
    writer.add_name(meta["name"])
    writer.add_finetune(meta["name"])
    if meta.get("description"):
        writer.add_description(meta["description"])
    if meta.get("base_model"):
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, meta["base_model"])
        if "/" in meta["base_model"] and not Path(meta["base_model"]).exists():
            writer.add_base_model_repo_url(0, f"https://huggingface.co/{meta['base_model']}")
    if meta.get("tags"):
        writer.add_tags(meta["tags"])
    if meta.get("datasets"):
        writer.add_dataset_count(len(meta["datasets"]))
        for i, name in enumerate(meta["datasets"]):
            writer.add_dataset_name(i, name)
    writer.add_quantized_by("cotharness")


def convert(model_dir: str | Path, out: str | Path, outtype: str, meta: dict) -> Converted:
    """Write ``model_dir`` (an HF Llama/Mistral checkpoint) to ``out`` as GGUF ``outtype`` (one of
    ``WRITTEN_HERE``). A 2-D weight whose rows the block size does not divide is written F16 and
    listed in ``fallbacks``; 1-D weights (norms) stay F32, as llama.cpp expects."""
    import gguf
    import numpy as np

    started = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    config = json.loads((model_dir / "config.json").read_text())
    check_architecture(config, str(model_dir))
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // n_head
    target = gguf.GGMLQuantizationType[WRITTEN_HERE[outtype]]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)

    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _metadata(writer, meta)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    model, pre, tokens, types, scores = _vocab(model_dir, config["vocab_size"])
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)  # it warns about a pair template (two sequences), which llama.cpp never uses
    try:
        special = gguf.SpecialVocab(model_dir, load_merges=model == "gpt2", n_vocab=len(tokens))
    finally:
        vocab_log.setLevel(level)
    special.add_to_gguf(writer, quiet=True)

    done = Converted(out, 0.0)
    block = gguf.GGML_QUANT_SIZES[target][0]
    for hf_name, data in _tensors(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_freq_base
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when there is no output tensor
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"{model_dir}: tensor {hf_name} has no GGUF name for the LLAMA architecture")
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_kv)
        kind = target
        if data.ndim == 1 or target == gguf.GGMLQuantizationType.F32:
            kind = gguf.GGMLQuantizationType.F32
        elif target != gguf.GGMLQuantizationType.F16 and data.shape[-1] % block:
            kind = gguf.GGMLQuantizationType.F16
            done.fallbacks[name] = f"row length {data.shape[-1]} is not a multiple of {target.name}'s block {block}"
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data.astype(np.float32))
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        done.tensor_types[name] = kind.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    done.seconds = round(time.perf_counter() - started, 2)
    return done
