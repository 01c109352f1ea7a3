import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness_tasks.yaml_files import merge
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


@pytest.mark.parametrize("training,message", [
    ({"learning_rate": "fast"}, "training.learning_rate='fast': expected float"),
    ({"max_steps": 2.5}, "training.max_steps=2.5: expected int"),
    ({"bf16": "maybe"}, "training.bf16='maybe': expected bool | None"),
    ({"lr_scheduler_type": 3}, "training.lr_scheduler_type=3: expected SchedulerType | str"),
    ({"report_to": 5}, "training.report_to=5: expected None | str | list[str]"),
])
def test_sft_values_are_checked_against_the_field_types(training, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO / "configs/train/demo.yaml", {"training": training})


def test_values_written_as_text_are_converted_others_kept():
    cfg = load_config(REPO / "configs/train/demo.yaml", parse_set([
        "training.learning_rate=2e-4", "training.max_steps=3.0", "training.lr_scheduler_type=cosine"]))
    t = cfg.training
    assert (t["learning_rate"], t["max_steps"], t["lr_scheduler_type"]) == (2e-4, 3, "cosine")
    assert type(t["max_steps"]) is int and type(t["lr_scheduler_type"]) is str
    assert type(t["eval_steps"]) is int  # an int for a float field stays as written (the card shows 400)


def test_gradient_checkpointing_is_read_as_its_new_name(tmp_path):
    """transformers 5.23 renamed it activation_checkpointing (the old name warns); configs keep working."""
    import warnings

    from trainer.train import _sft_config

    cfg = load_config(REPO / "configs/train/demo.yaml", parse_set(["training.gradient_checkpointing=true"]))
    assert cfg.training["activation_checkpointing"] is True and "gradient_checkpointing" not in cfg.training
    (tmp_path / "old.yaml").write_text(f"base: {REPO}/configs/train/default.yaml\n"
                                       "training: {gradient_checkpointing: false, bf16: false}\n")
    assert load_config(tmp_path / "old.yaml").training["activation_checkpointing"] is False  # the user's wins
    cfg.output_dir = str(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = _sft_config(cfg, has_eval=True)
        del cfg.training["activation_checkpointing"]
        assert _sft_config(cfg, has_eval=True).activation_checkpointing is True  # TRL's default, said the new way
    assert args.activation_checkpointing is True and args.dataloader_pin_memory is False  # no CUDA here


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


MISTRAL_7B = dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8)


def _measured_runs():
    """Every run of the committed training benchmark: (config, overrides, longest row, resolved, peak)."""
    import json

    report = json.loads((REPO / "bench/results/train_throughput.json").read_text())
    blocks = [report["baseline"], report["project"], *report.get("variants", {}).values()]
    return [(b["config"], b.get("overrides", []), report["settings"]["max_length_both_arms"], r)
            for b in blocks for r in b["runs"] if "peak_memory_gib" in r]


def test_memory_estimate_brackets_measured_peaks():
    """The estimate decides gradient_checkpointing=auto: it must not be below any measured peak (an OOM
    on the first step) nor far above it (checkpointing kept on where it was not needed)."""
    from transformers import MistralConfig

    from trainer.memory import estimate

    runs = _measured_runs()
    assert {r["resolved"].get("activation_checkpointing", r["resolved"].get("gradient_checkpointing"))
            for *_, r in runs} == {True, False}
    for config, overrides, longest, run in runs:
        # the benchmark raises both arms' max_length to the longest row, and records what "auto" chose
        cfg = load_config(REPO / config, merge(parse_set(overrides), {"data": {"max_length": longest},
                                                                      "training": run["resolved"]}))
        est = estimate(cfg, MistralConfig(**MISTRAL_7B), longest=longest)
        assert run["peak_memory_gib"] <= est.total <= 1.25 * run["peak_memory_gib"], (config, overrides, est.parts)
        assert 3.5 < est.parts["base weights"] < 4.2 or cfg.model.quantization == "none"


def test_auto_settings_on_cpu(tmp_path):
    from trainer.speed import resolve

    with pytest.raises(ConfigError, match=r"training.bf16=true \(mixed precision\) needs a CUDA GPU; on a CPU set "
                                          r"training.bf16=false, or start from configs/train/demo.yaml"):
        resolve(load_config(REPO / "configs/train/default.yaml"))
    cfg = load_config(REPO / "configs/train/default.yaml", {"training": {"bf16": False}})
    assert (cfg.training["activation_checkpointing"], cfg.training["use_liger_kernel"]) == ("auto", "auto")
    resolved, notes = resolve(cfg)
    assert (resolved.training["activation_checkpointing"], resolved.training["use_liger_kernel"]) == (True, False)
    assert cfg.training["activation_checkpointing"] == "auto"  # the config itself is left as written
    assert any("no CUDA GPU" in n for n in notes)
    forced = load_config(REPO / "configs/train/default.yaml", {"training": {"use_liger_kernel": True, "bf16": False}})
    with pytest.raises(ConfigError, match="use_liger_kernel=true needs a CUDA GPU.*cotharness\\[gpu\\]"):
        resolve(forced)
    with pytest.raises(ConfigError, match="activation_checkpointing: expected true, false or auto, got 'maybe'"):
        load_config(REPO / "configs/train/default.yaml", {"training": {"gradient_checkpointing": "maybe"}})


@pytest.mark.parametrize(("gpu_gib", "liger", "longest", "checkpointing"), [
    (80, True, 819, False),    # ~67 GiB without checkpointing: fits 90% of an 80 GB card
    (80, False, 819, True),    # without Liger's kernels it does not
    (141, False, 819, False),  # an H200 has room either way
    (24, True, 819, True),     # a 24 GB card keeps checkpointing
    (80, True, 1024, True),    # the longest row decides, not the typical one
])
def test_auto_checkpointing_follows_the_estimate(monkeypatch, gpu_gib, liger, longest, checkpointing):
    from transformers import MistralConfig

    from trainer import speed

    monkeypatch.setattr(speed, "cuda_memory_gib", lambda: gpu_gib)
    monkeypatch.setattr(speed, "liger_installed", lambda: liger)
    cfg = load_config(REPO / "configs/train/default.yaml")
    resolved, notes = speed.resolve(cfg, longest=longest, model_config=MistralConfig(**MISTRAL_7B))
    assert resolved.training["use_liger_kernel"] is liger
    assert resolved.training["activation_checkpointing"] is checkpointing, notes


def test_estimate_memory_cli(tiny_model):
    from cotharness.cli import app

    result = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs/train/demo.yaml"),
                                      "--base-model", str(tiny_model), "--estimate-memory"])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "GiB" in result.output
