"""Run configuration: YAML + typed `key=value` overrides, and clear errors for unknown keys,
wrong types, bad values, missing files and base checkpoints that are not Wan 2.1 VACE."""

import pytest
import torch
from safetensors.torch import save_file

from anycrowd_core.errors import AnyCrowdError
from tiny_wan import random_state_dict, tiny_config
from training.config import RunConfig, load_config
from training.run import main

PROC = "data.source=procedural"


def write_yaml(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_parsed_by_field_type(tmp_path):
    path = write_yaml(tmp_path, "optim:\n  lr: 1e-4\n  betas: [0.8, 0.99]\ntrain:\n  max_steps: 7\ndata:\n  source: procedural\n")
    cfg = load_config(path, ["lora.rank=8", "lora.alpha=4", "train.tensorboard=false", "optim.gate_lr=null",
                             "lora.targets=ffn.0,ffn.2", "timesteps.shift=3"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)  # PyYAML reads 1e-4 as a string
    assert cfg.optim.betas == [0.8, 0.99] and cfg.train.max_steps == 7
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.train.tensorboard, cfg.optim.gate_lr) == (8, 4.0, False, None)
    assert cfg.lora.targets == ["ffn.0", "ffn.2"] and cfg.timesteps.shift == 3.0


def test_unknown_keys_suggest_the_nearest_valid_key(tmp_path):
    with pytest.raises(AnyCrowdError, match=r"Unknown config key 'optim.lrr'. Did you mean 'optim.lr'\?"):
        load_config(None, [PROC, "optim.lrr=1"])
    with pytest.raises(AnyCrowdError, match=r"Unknown config key 'lr'. Did you mean 'optim.lr'\?"):
        load_config(None, [PROC, "lr=1"])
    with pytest.raises(AnyCrowdError, match=r"'train.mixed_precison'. Did you mean 'train.mixed_precision'"):
        load_config(write_yaml(tmp_path, "train:\n  mixed_precison: bf16\n"), [PROC])


@pytest.mark.parametrize("override,message", [
    ("lora.rank=four", r"'lora.rank' must be of type integer, got 'four'"),
    ("optim.lr=fast", r"'optim.lr' must be of type number"),
    ("train.tensorboard=maybe", r"'train.tensorboard' must be of type boolean"),
    ("lora.rank=0", r"'lora.rank' is 0; it must lie in \[1, inf\]"),
    ("timesteps.distribution=logitnormal", r"choose one of uniform, logit_normal, shifted. Did you mean 'logit_normal'"),
    ("lora.targets=[self_attn.x]", r"'lora.targets\[0\]' is 'self_attn.x'"),
    ("train.mixed_precision=fp8", r"'train.mixed_precision' is 'fp8'"),
    ("optim.betas=[0.9]", r"'optim.betas' is \[0.9\]; give two numbers"),
    ("train.val_every=5", r"'data.val_samples' is 0"),
    ("model", r"must look like section.key=value"),
    ("model=3", r"'model' is a section"),
])
def test_bad_values_are_rejected_with_the_key_named(override, message):
    with pytest.raises(AnyCrowdError, match=message):
        load_config(None, [PROC, override])


def test_missing_files_are_reported_before_any_work(tmp_path):
    with pytest.raises(AnyCrowdError, match="Config file .* does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(AnyCrowdError, match="'data.cache_dir' is not set: run `python -m training.prepare`"):
        load_config(None, [])
    with pytest.raises(AnyCrowdError, match="'data.cache_dir' .* does not exist"):
        load_config(None, [f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(AnyCrowdError, match="does not exist; check the path"):
        load_config(None, [PROC, f"model.base={tmp_path / 'wan.safetensors'}"])
    with pytest.raises(AnyCrowdError, match="give the path of a Wan 2.1 VACE .safetensors checkpoint or one of"):
        load_config(None, [PROC, "model.base=wan-14b"])


def test_base_checkpoint_must_be_wan_vace_with_matching_shapes(tmp_path):
    cfg = tiny_config()
    sd = random_state_dict(cfg, prefix="model.diffusion_model.")
    good = tmp_path / "vace.safetensors"
    save_file(sd, str(good))
    ok = load_config(None, [PROC, f"model.base={good}", "model.num_heads=4"])
    assert ok.model.base == str(good)

    plain = tmp_path / "t2v.safetensors"
    save_file({k: v for k, v in sd.items() if "vace" not in k}, str(plain))
    with pytest.raises(AnyCrowdError, match="plain Wan 2.1 T2V model"):
        load_config(None, [PROC, f"model.base={plain}"])

    bad = dict(sd)
    bad["model.diffusion_model.blocks.1.ffn.0.weight"] = torch.zeros(3, 64)
    broken = tmp_path / "broken.safetensors"
    save_file(bad, str(broken))
    with pytest.raises(AnyCrowdError, match=r"wrong shapes \(blocks.1.ffn.0.weight: \[3, 64\], expected \[128, 64\]"):
        load_config(None, [PROC, f"model.base={broken}"])


def test_shipped_configs_are_valid():
    tiny = load_config("training/configs/tiny.yaml")
    assert tiny.model.base == "random-tiny" and tiny.data.source == "procedural"
    big = load_config("training/configs/wan13b_480p.yaml", check_files=False)
    assert big.train.mixed_precision == "bf16" and big.model.gradient_checkpointing


def test_config_hash_ignores_output_and_logging_but_not_training_settings():
    a, b, c = RunConfig(), RunConfig(), RunConfig()
    b.output.dir, b.train.log_every = "elsewhere", 99
    c.optim.lr = 3e-4
    assert a.hash() == b.hash() != c.hash()


def test_cli_check_validates_only(capsys):
    assert main(["--config", "training/configs/tiny.yaml", "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert main(["--config", "training/configs/tiny.yaml", "--check", "optim.lrr=1"]) == 2
    assert "Did you mean 'optim.lr'" in capsys.readouterr().err


def test_family_and_expert_name_the_base_and_must_fit_together(tmp_path):
    cfg = load_config(None, [PROC, "model.family=wan2.2-vace-fun", "model.expert=high_noise"])
    assert (cfg.model.family, cfg.model.expert) == ("wan2.2-vace-fun", "high_noise")
    # labels of the base model.base names: a finished run's hash (and so its resume) does not change
    assert cfg.hash() == load_config(None, [PROC]).hash()
    assert (load_config(None, [PROC]).model.family, load_config(None, [PROC]).model.expert) == ("wan2.1-vace", "none")
    with pytest.raises(AnyCrowdError, match="set 'model.expert' to high_noise or low_noise"):
        load_config(None, [PROC, "model.family=wan2.2-vace-fun"])
    with pytest.raises(AnyCrowdError, match="Wan 2.1 VACE has no experts"):
        load_config(None, [PROC, "model.expert=low_noise"])
    with pytest.raises(AnyCrowdError, match=r"'model.family' is 'wan2.2'; choose one of wan2.1-vace, wan2.2-vace-fun"):
        load_config(None, [PROC, "model.family=wan2.2"])
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in random_state_dict(tiny_config(), seed=0).items()}, str(path))
    with pytest.raises(AnyCrowdError, match="Wan 2.2 VACE-Fun A14B experts have the 14B shapes"):
        load_config(None, [PROC, f"model.base={path}", "model.num_heads=4", "model.family=wan2.2-vace-fun",
                           "model.expert=low_noise"])


def test_the_wan22_expert_config_names_its_base_and_the_low_noise_run_is_one_override_away():
    high = load_config("training/configs/wan22_vace_fun_a14b_480p.yaml", check_files=False)
    assert (high.model.family, high.model.expert) == ("wan2.2-vace-fun", "high_noise")
    assert "high_noise" in high.model.base
    low = load_config("training/configs/wan22_vace_fun_a14b_480p.yaml", [
        "model.base=models/diffusion_models/wan2.2_fun_vace_low_noise_14B_bf16.safetensors", "model.expert=low_noise"],
        check_files=False)
    assert low.model.expert == "low_noise"
    big = load_config("training/configs/wan13b_480p.yaml", check_files=False)
    assert (high.lora, high.timesteps, high.optim) == (big.lora, big.timesteps, big.optim)  # the same recipe
