"""Trained adapters as ComfyUI files: LoRA keys that name real model weights, the same
arithmetic as the peft model, metadata, size checks, and gates that load back into TSDA.
With COMFYUI_PATH set, ComfyUI's own LoRA loader maps every key and gives the same output.
"""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from anycrowd_core.adapter_files import load_adapter_files
from anycrowd_core.attention import AnyCrowdAttention, GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from anycrowd_core.scenes import make_scene
from anycrowd_core.wan import PRESETS, WanVaceModel, load_wan_vace
from anycrowd_core.wan.lora_merge import merge_lora
from comfy_host import requires_comfyui
from random_adapters import random_lora
from tiny_wan import random_state_dict, tiny_config, tiny_inputs
from training.config import LORA_TARGETS
from training.export import base_model_name, lora_state_dict, save_gates, save_lora
from training.lora import LoraWeights


pytestmark = pytest.mark.usefixtures("one_thread")


def fresh_model(cfg, seed=3):
    return load_wan_vace(random_state_dict(cfg, seed=seed), dtype=torch.float32, num_heads=cfg.num_heads)


def peft_model(cfg, targets=LORA_TARGETS, branches=("dit", "vace"), rank=4, alpha=8.0):
    pytest.importorskip("peft", reason="the trainer's LoRA needs peft (pip install peft)")
    from training.lora import apply_lora, lora_layers

    model = fresh_model(cfg)
    apply_lora(model, rank=rank, alpha=alpha, targets=targets, branches=branches, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.normal_(0, 0.05, generator=gen)
    return model


def test_every_lora_key_names_a_weight_of_the_model_with_the_comfyui_prefix():
    from training.lora import lora_weights

    cfg = tiny_config()
    sd = lora_state_dict(lora_weights(peft_model(cfg)))
    with torch.device("meta"):
        model_keys = {"diffusion_model." + k for k in WanVaceModel(cfg).state_dict()}
    bases = {k[: -len(".lora_A.weight")] for k in sd if k.endswith(".lora_A.weight")}
    assert len(bases) == (cfg.num_layers + cfg.vace_layers) * len(LORA_TARGETS)
    for base in bases:
        assert base + ".weight" in model_keys
        assert {base + ".lora_B.weight", base + ".alpha"} <= sd.keys()
    assert len(sd) == 3 * len(bases)
    assert any(k.startswith("diffusion_model.vace_blocks.1.ffn.2.") for k in sd)
    assert all(k.startswith("diffusion_model.") for k in sd)


def test_targets_and_branches_select_the_adapted_layers():
    from training.lora import lora_weights

    cfg = tiny_config()
    paths = set(lora_weights(peft_model(cfg, targets=("ffn.0", "self_attn.q"), branches=("vace",))))
    assert paths == {f"vace_blocks.{n}.{t}" for n in range(cfg.vace_layers) for t in ("ffn.0", "self_attn.q")}


def test_merging_the_exported_lora_reproduces_the_peft_model():
    from training.lora import lora_weights

    cfg = tiny_config()
    model = peft_model(cfg, rank=4, alpha=8.0)
    inputs = tiny_inputs(cfg, seed=2)
    with torch.no_grad():
        expected = model(**inputs)
        merged = merge_lora(fresh_model(cfg), lora_state_dict(lora_weights(model)))
        got = merged(**inputs)
        base = fresh_model(cfg)(**inputs)
    assert (expected - base).abs().max() > 1e-3  # the adapter does something
    assert torch.allclose(got, expected, atol=1e-5)


def test_files_carry_metadata_naming_the_base_model(tmp_path):
    cfg = tiny_config()
    path = save_lora(tmp_path / "a_lora.safetensors", random_lora(fresh_model(cfg)), cfg, rank=4, alpha=8.0,
                     config_hash="abc")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "anycrowd-lora" and meta["format_version"] == "1"
    assert (meta["base_model"], meta["dim"], meta["num_layers"], meta["vace_layers"]) == ("custom", "64", "4", "2")
    assert (meta["rank"], meta["alpha"], meta["config_hash"]) == ("4", "8.0", "abc")
    assert base_model_name(PRESETS["1.3b"]) == "wan2.1-vace-1.3b" and base_model_name(PRESETS["14b"]) == "wan2.1-vace-14b"


def test_adapter_for_another_model_size_is_refused(tmp_path):
    cfg = tiny_config()
    lora = save_lora(tmp_path / "x_lora.safetensors", random_lora(fresh_model(cfg)), cfg, rank=4, alpha=4.0)
    gates = save_gates(tmp_path / "x_gates.safetensors", GateBank(cfg.dim, cfg.num_layers, cfg.vace_layers, 16), cfg)
    other = tiny_config(dim=128, num_heads=4)
    with pytest.raises(AnyCrowdError, match=r"trained for .*dim 64, 4 blocks, 2 VACE blocks.*dim 128"):
        load_adapter_files(lora, None, other)
    with pytest.raises(AnyCrowdError, match="trained for"):
        load_adapter_files(None, gates, {"dim": 64, "num_layers": 8, "vace_layers": 2})
    with pytest.raises(AnyCrowdError, match="swap the two inputs"):
        load_adapter_files(gates, None, cfg)
    with pytest.raises(AnyCrowdError, match="does not exist"):
        load_adapter_files(tmp_path / "missing.safetensors", None, cfg)
    loaded = load_adapter_files(lora, gates, cfg)
    assert loaded.lora.keys() == load_file(str(lora)).keys() and loaded.gates is not None


def test_gates_load_back_and_change_the_tsda_output(tmp_path):
    cfg = tiny_config()
    trained = GateBank(cfg.dim, cfg.num_layers, cfg.vace_layers, hidden=16)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    path = save_gates(tmp_path / "g_gates.safetensors", trained, cfg)
    gates = load_adapter_files(None, path, cfg).gates
    assert all(torch.equal(a, b) for a, b in zip(gates.state_dict().values(), trained.state_dict().values()))

    scene = make_scene(num_characters=2, num_frames=5, height=48, width=64, seed=0, scenario="crossing")
    layout = build_token_layout(scene.reference_masks, scene.track_boxes, [0, 1])
    frames = layout.num_ref_frames + layout.video_frames
    model = fresh_model(cfg)
    inputs = tiny_inputs(cfg, frames=frames, height=6, width=8, seed=5)
    with torch.no_grad():
        untrained = model(**inputs, attention=AnyCrowdAttention(layout, "tsda", "gated", GateBank(cfg.dim, 4, 2, 16)))
        loaded = model(**inputs, attention=AnyCrowdAttention(layout, "tsda", "gated", gates))
        original = model(**inputs, attention=AnyCrowdAttention(layout, "tsda", "gated", trained))
    assert torch.equal(loaded, original)
    assert (loaded - untrained).abs().max() > 1e-4


@requires_comfyui
def test_comfyui_loader_maps_every_key_and_matches_our_merged_model(tmp_path):
    from comfy_host import import_comfy, tiny_vace_config, tiny_vace_patcher, tiny_vace_state_dict

    import_comfy()
    import comfy.lora

    cfg = tiny_vace_config()
    ours = load_wan_vace(tiny_vace_state_dict(seed=0), dtype=torch.float32, num_heads=cfg.num_heads)
    weights = random_lora(ours, rank=4, alpha=2.0)
    path = save_lora(tmp_path / "t_lora.safetensors", weights, cfg, rank=4, alpha=2.0)
    lora = load_file(str(path))

    patcher = tiny_vace_patcher(seed=0)
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    patches = comfy.lora.load_lora(lora, key_map)
    assert set(patches) == {f"diffusion_model.{p}.weight" for p in weights}  # every module, no stray key

    inputs = tiny_inputs(cfg, frames=2, height=4, width=4, seed=7)
    comfy_model = patcher.model.diffusion_model

    def run_comfy():
        return comfy_model(inputs["x"], inputs["t"], inputs["context"], vace_context=inputs["vace_context"][:, None],
                           vace_strength=[1.0])

    with torch.no_grad():
        plain = run_comfy()
        patcher.add_patches(patches, 1.0)
        patcher.patch_model()
        try:
            theirs = run_comfy()
        finally:
            patcher.unpatch_model()
        got = merge_lora(ours, lora)(**inputs)
    assert (theirs - plain).abs().max() > 1e-3
    assert torch.allclose(got, theirs, atol=1e-4), float((got - theirs).abs().max())


# --- the recorded base (anycrowd_core.adapter_base) ------------------------------------------------

def test_files_record_their_base_family_size_expert_and_checkpoint(tmp_path):
    from anycrowd_core.adapter_base import AdapterBase, adapter_base

    cfg = PRESETS["14b"]
    base = adapter_base(cfg, "wan2.2-vace-fun", "high_noise", "/models/wan2.2_fun_vace_high_noise_14B_bf16.safetensors")
    one = {"blocks.0.self_attn.q": LoraWeights(A=torch.zeros(1, cfg.dim), B=torch.zeros(cfg.dim, 1), alpha=1.0)}
    lora = save_lora(tmp_path / "x_lora.safetensors", one, cfg, rank=1, alpha=1.0, base=base)
    gates = save_gates(tmp_path / "x_gates.safetensors", GateBank(cfg.dim, cfg.num_layers, cfg.vace_layers, 4), cfg,
                       base=base)
    for path in (lora, gates):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        assert {k: meta[k] for k in ("base_family", "base_size", "base_expert", "base_checkpoint", "base_model")} == {
            "base_family": "wan2.2-vace-fun", "base_size": "A14B", "base_expert": "high_noise",
            "base_checkpoint": "wan2.2_fun_vace_high_noise_14B_bf16.safetensors", "base_model": "wan2.2-vace-fun-a14b"}
        assert AdapterBase.from_metadata(meta) == base
    assert base.describe() == "Wan 2.2 VACE-Fun A14B, high-noise expert (wan2.2_fun_vace_high_noise_14B_bf16.safetensors)"
    assert adapter_base(PRESETS["1.3b"], checkpoint="random-1.3b").metadata() == {
        "base_family": "wan2.1-vace", "base_size": "1.3B", "base_expert": "none", "base_checkpoint": "random-1.3b"}
    assert adapter_base(tiny_config(), "wan2.2-vace-fun", "low_noise").size == "custom"


def test_files_without_a_recorded_base_read_as_unrecorded(tmp_path):
    from anycrowd_core.adapter_base import AdapterBase, files_base

    cfg = tiny_config()
    path = save_lora(tmp_path / "old_lora.safetensors", random_lora(fresh_model(cfg)), cfg, rank=4, alpha=4.0)
    loaded = load_adapter_files(path, None, cfg)
    assert "base_family" not in loaded.metadata["lora"] and loaded.metadata["lora"]["base_model"] == "custom"
    assert AdapterBase.from_metadata(loaded.metadata["lora"]) is None and files_base(loaded.metadata) is None


def test_a_base_that_cannot_exist_is_refused():
    from anycrowd_core.adapter_base import AdapterBase

    with pytest.raises(AnyCrowdError, match="trained for one expert"):
        AdapterBase("wan2.2-vace-fun", "A14B", "none", "")
    with pytest.raises(AnyCrowdError, match="Wan 2.1 VACE has none"):
        AdapterBase("wan2.1-vace", "14B", "low_noise", "")
    with pytest.raises(AnyCrowdError, match="damaged"):
        AdapterBase.from_metadata({"base_family": "wan3", "base_expert": "none"})


def test_a_size_mismatch_names_the_recorded_base(tmp_path):
    from anycrowd_core.adapter_base import adapter_base

    cfg = tiny_config()
    base = adapter_base(cfg, "wan2.2-vace-fun", "low_noise", "tiny_low.safetensors")
    path = save_lora(tmp_path / "x_lora.safetensors", random_lora(fresh_model(cfg)), cfg, rank=4, alpha=4.0,
                     base=base)
    with pytest.raises(AnyCrowdError, match=r"trained for Wan 2\.2 VACE-Fun custom, low-noise expert \(tiny_low"
                                            r"\.safetensors\) \(dim 64, 4 blocks, 2 VACE blocks\)"):
        load_adapter_files(path, None, tiny_config(dim=128, num_heads=4))


def test_the_trainer_writes_the_base_of_its_config_into_both_files(tmp_path):
    from test_training_run import config, make_samples
    from anycrowd_core.adapter_base import AdapterBase
    from training.trainer import Trainer

    cfg = config(tmp_path, "train.max_steps=1", "model.family=wan2.2-vace-fun", "model.expert=low_noise")
    Trainer(cfg, dataset=make_samples(1)).train()
    for name in ("anycrowd_lora.safetensors", "anycrowd_gates.safetensors"):
        with safe_open(str(tmp_path / name), framework="pt") as f:
            assert AdapterBase.from_metadata(f.metadata()) == AdapterBase("wan2.2-vace-fun", "custom", "low_noise",
                                                                          "random-tiny")
