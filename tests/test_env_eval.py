import json

import pytest

from cotharness.env_eval import args_from_env


def test_env_args():
    args = args_from_env({"MODEL": "m/base", "ADAPTER": "runs/abl2", "TEST_FILE": "t.csv"})
    assert args[args.index("--model_args") + 1] == "pretrained=m/base,peft=runs/abl2,load_in_4bit=True"
    assert args[args.index("--output_path") + 1] == "results/abl2"
    assert json.loads(args[args.index("--metadata") + 1]) == {"test_file": "t.csv"}
    args = args_from_env({"MODEL": "m/base", "QUANT": "bfloat16", "TASKS": "nli_cot,nli_direct"})
    assert args[args.index("--model_args") + 1] == "pretrained=m/base,dtype=bfloat16"
    assert args[args.index("--tasks") + 1] == "nli_cot,nli_direct" and "--metadata" not in args


def test_env_requires_model():
    with pytest.raises(SystemExit, match="set MODEL"):
        args_from_env({})
