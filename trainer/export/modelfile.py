"""An Ollama ``Modelfile`` beside the GGUF: the prompt format the model was trained on, its stop tokens
and the evaluation's greedy decoding, so ``ollama create NAME -f FILE`` runs it as it was evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import prompts

# Ollama's Go template for the project's instruction format (prompts.wrap_instruction); Ollama adds
# BOS itself when the GGUF says so (tokenizer.ggml.add_bos_token)
INSTRUCTION_TEMPLATE = (f"{prompts.INST_OPEN} {{{{ if .System }}}}{{{{ .System }}}}\n\n{{{{ end }}}}"
                        f"{{{{ .Prompt }}}} {prompts.INST_CLOSE}{{{{ .Response }}}}")


def render(gguf_name: str, model_dir: Path, context: int, max_tokens: int) -> str:
    """The Modelfile text for ``gguf_name`` (a file in the same folder), from the merged model's
    tokenizer files in ``model_dir``."""
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    chat = config.get("chat_template") or ""
    if not chat and (model_dir / "chat_template.jinja").is_file():
        chat = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    known = prompts.INST_OPEN in chat and prompts.INST_CLOSE in chat
    template = INSTRUCTION_TEMPLATE if known else "{{ .Prompt }}"
    stops = [t for t in (config.get("eos_token"), prompts.INST_OPEN if known else None) if isinstance(t, str)]
    lines = [
        "# Ollama: ollama create <name> -f <this file>, then ollama run <name>",
        f"FROM ./{gguf_name}",
        "",
        "# the instruction format the model was trained and evaluated in (prompts.wrap_instruction)" if known else
        "# the tokenizer's chat template is not the project's instruction format: the prompt is passed as is",
        f'TEMPLATE """{template}"""',
        "",
        "# greedy decoding, as `cotharness eval` and the export's check decode",
        "PARAMETER temperature 0",
        f"PARAMETER num_ctx {context}",
        f"PARAMETER num_predict {max_tokens}",
        *(f"PARAMETER stop {json.dumps(stop)}" for stop in stops),
    ]
    return "\n".join(lines) + "\n"
