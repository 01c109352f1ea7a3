"""``tox -e eval``: evaluate a model named by environment variables (or plain lm_eval arguments).

    MODEL=mistralai/Mistral-7B-v0.3 ADAPTER=runs/abl2 tox -e eval
    MODEL=... TASKS=nli_cot,nli_direct TEST_FILE=data/test.csv QUANT=none BATCH_SIZE=16 OUT=results/x tox -e eval
    tox -e eval -- --tasks nli_cot --model_args pretrained=...   # positional args: passed as they are
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cotharness.run_eval import main


def args_from_env(env=os.environ) -> list[str]:
    if not env.get("MODEL"):
        raise SystemExit("set MODEL (hub id or path) and optionally ADAPTER, TASKS, TEST_FILE, QUANT, "
                         "BATCH_SIZE, OUT; or pass lm_eval arguments after --")
    model_args = [f"pretrained={env['MODEL']}"]
    if env.get("ADAPTER"):
        model_args.append(f"peft={env['ADAPTER']}")
    quant = env.get("QUANT", "4bit")
    if quant == "4bit":
        model_args.append("load_in_4bit=True")
    elif quant != "none":
        model_args.append(f"dtype={quant}")
    name = Path(env.get("ADAPTER") or env["MODEL"]).name
    args = ["--tasks", env.get("TASKS", "nli_cot"), "--model_args", ",".join(model_args),
            "--batch_size", env.get("BATCH_SIZE", "auto"), "--output_path", env.get("OUT", f"results/{name}")]
    if env.get("TEST_FILE"):
        args += ["--metadata", json.dumps({"test_file": env["TEST_FILE"]})]
    return args


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or args_from_env()))
