from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.config import ConfigError, load_config, parse_set

from conftest import REPO

CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.training["learning_rate"] > 0 and cfg.data.max_length >= 512


def test_default_is_the_seed_recipe():
    cfg = load_config(REPO / "configs/train/default.yaml")
    assert (cfg.model.quantization, cfg.model.double_quant, cfg.model.compute_dtype) == ("nf4", True, "bfloat16")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.05)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    t = cfg.training
    assert (t["learning_rate"], t["lr_scheduler_type"], t["warmup_steps"], t["optim"], t["weight_decay"]) == (
        2e-4, "cosine", 0.03, "paged_adamw_8bit", 0.01)
    assert t["load_best_model_at_end"] and t["metric_for_best_model"] == "eval_loss"
    assert cfg.early_stopping_patience == 3


def test_ablations_inherit_and_differ_only_in_data():
    default = load_config(REPO / "configs/train/default.yaml").model_dump()
    files = set()
    for name in ("abl_correct_only", "abl_correct_reflected", "abl_all"):
        cfg = load_config(REPO / f"configs/train/{name}.yaml").model_dump()
        assert {k: v for k, v in cfg.items() if k not in ("data", "output_dir")} == \
               {k: v for k, v in default.items() if k not in ("data", "output_dir")}
        files.add(cfg["data"]["train_file"])
    assert len(files) == 3


@pytest.mark.parametrize("overrides,message", [
    ({"training": {"lerning_rate": 1}}, "did you mean 'learning_rate'"),
    ({"modle": {}}, "unknown key 'modle'; did you mean 'model'"),
    ({"lora": {"alpah": 8}}, "unknown key 'lora.alpah'; did you mean 'alpha'"),
    ({"data": {"max_lenght": 8}}, "did you mean 'max_length'"),
    ({"training": {"max_length": 8}}, "set it as data.max_length"),
    ({"model": {"quantization": "q4"}}, "model.quantization"),
    ({"lora": {"r": 0}}, "lora.r"),
])
def test_bad_keys_and_values(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(REPO / "configs/train/demo.yaml", overrides)


def test_base_chain_and_errors(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nlora: {r: 4}\n")
    (tmp_path / "b.yaml").write_text("lora: {r: 8, alpha: 64}\noutput_dir: runs/b\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.output_dir) == (4, 64, "runs/b")
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("lora: [1\n")
    with pytest.raises(ConfigError, match="e.yaml: invalid YAML"):
        load_config(tmp_path / "e.yaml")


def test_parse_set():
    assert parse_set(["training.learning_rate=1e-4", "lora.target_modules=[q_proj, v_proj]",
                      "early_stopping_patience=null", "data.overlong=fail"]) == {
        "training": {"learning_rate": 1e-4}, "lora": {"target_modules": ["q_proj", "v_proj"]},
        "early_stopping_patience": None, "data": {"overlong": "fail"}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set(["learning_rate"])


def test_cli_refuses_typo_with_suggestion():
    from cotharness.cli import app

    result = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs/train/demo.yaml"),
                                      "--set", "training.lerning_rate=1"])
    assert result.exit_code != 0
    assert "learning_rate" in result.output


def test_memory_estimate_brackets_measured_anchors():
    """Seed recipe on a Mistral-7B shape (bs16 x 512): measured peaks 8.1 GiB (grad ckpt on), 50.6 (off)."""
    from transformers import MistralConfig

    from trainer.memory import estimate

    shape = MistralConfig(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8)
    for ckpt, measured in ((True, 8.1), (False, 50.6)):
        cfg = load_config(REPO / "configs/train/default.yaml",
                          {"data": {"max_length": 512},
                           "training": {"per_device_train_batch_size": 16, "gradient_checkpointing": ckpt}})
        est = estimate(cfg, shape)
        assert measured * 0.9 <= est.total <= measured * 1.3, (ckpt, est.parts)
        assert 3.5 < est.parts["base weights"] < 4.2  # 7.0B params in NF4 + bf16 embeddings


def test_estimate_memory_cli(tiny_model):
    from cotharness.cli import app

    result = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs/train/demo.yaml"),
                                      "--base-model", str(tiny_model), "--estimate-memory"])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "GiB" in result.output
