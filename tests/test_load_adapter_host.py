"""AnyCrowd Load Adapter inside a real ComfyUI (skipped unless COMFYUI_PATH is set): files
written by training.export for the tiny VACE model that ComfyUI's loader detects; the LoRA
patches the MODEL exactly like the native LoraLoaderModelOnly; the gates come back equal and
change the tsda/gated output of AnyCrowd TSDA Patch and AnyCrowd Sampler; other sizes refused.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os

import pytest
import torch

from anycrowd_core.attention import GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan import WanVaceModel
from comfy_host import COMFYUI_PATH, requires_comfyui, tiny_vace_config, tiny_vace_patcher
from pack import run_fresh_python
from random_adapters import random_gates, random_lora
from test_comfy_patch_host import Inputs, apply_model, make_layout
from training.config import LORA_TARGETS
from training.export import save_gates, save_lora

pytestmark = requires_comfyui
EXTRA = {"step": "50", "attention": "tsda", "agf": "gated"}


@pytest.fixture(scope="module")
def node_mods(pack):
    return {name: importlib.import_module(f"{pack.__name__}.nodes.{name}")
            for name in ("node_load_adapter", "node_tsda_patch", "node_sampler", "comfy_patch")}


@pytest.fixture(scope="module")
def native_nodes(comfy):
    import nodes as comfy_nodes  # ComfyUI's own top-level module (ours is only ever loaded as pack.nodes)

    assert os.path.dirname(os.path.abspath(comfy_nodes.__file__)) == os.path.abspath(COMFYUI_PATH)
    return comfy_nodes


@pytest.fixture(scope="module")
def layout():
    return make_layout()


def adapter_weights(cfg, seed=0):
    with torch.device("meta"):
        shapes = WanVaceModel(cfg)  # names and shapes only
    return random_lora(shapes, rank=4, alpha=2.0, seed=seed)


def trained_gates(cfg, seed=0):
    return random_gates(cfg.dim, cfg.num_layers, cfg.vace_layers, hidden=16, seed=seed)


@pytest.fixture
def folders(comfy, tmp_path, monkeypatch):
    """models/loras and models/anycrowd_gates of ComfyUI's folder_paths pointed at tmp_path,
    holding one run's tiny LoRA + gates (and a LoRA and gates for a smaller model)."""
    import folder_paths

    loras, gates_dir = tmp_path / "loras", tmp_path / "anycrowd_gates"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)], folder_paths.supported_pt_extensions))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "anycrowd_gates", ([str(gates_dir)], {".safetensors"}))
    cfg, small = tiny_vace_config(), tiny_vace_config(num_layers=2, vace_layers=1)
    gates = trained_gates(cfg)
    save_lora(loras / "run_lora.safetensors", adapter_weights(cfg), cfg, rank=4, alpha=2.0, config_hash="c", extra=EXTRA)
    save_gates(gates_dir / "run_gates.safetensors", gates, cfg, config_hash="c", extra=EXTRA)
    save_lora(loras / "small_lora.safetensors", adapter_weights(small), small, rank=4, alpha=2.0)
    save_gates(gates_dir / "small_gates.safetensors", trained_gates(small), small)
    return {"gates": gates}


def test_pack_import_inside_comfyui_registers_the_gates_folder():
    # ComfyUI imports folder_paths before it loads custom nodes; the pack registers at import.
    code = (
        f"import sys; sys.path.insert(0, {COMFYUI_PATH!r}); sys.path.insert(0, 'tests')\n"
        "import folder_paths\n"
        "from pack import load_pack\n"
        "load_pack()\n"
        "paths, exts = folder_paths.folder_names_and_paths['anycrowd_gates']\n"
        "import json; print(json.dumps([paths, sorted(exts), folder_paths.models_dir]))\n"
    )
    paths, exts, models_dir = json.loads(run_fresh_python(code).strip().splitlines()[-1])
    assert paths == [os.path.join(models_dir, "anycrowd_gates")] and exts == [".safetensors"]


def test_file_lists_come_from_comfyuis_folders(node_mods, folders):
    req = node_mods["node_load_adapter"].AnyCrowdLoadAdapter.INPUT_TYPES()["required"]
    assert req["lora_name"][0] == ["None", "run_lora.safetensors", "small_lora.safetensors"]
    assert req["gates_name"][0] == ["None", "run_gates.safetensors", "small_gates.safetensors"]
    assert node_mods["node_load_adapter"].AnyCrowdLoadAdapter.VALIDATE_INPUTS("run_lora.safetensors", "run_gates.safetensors")


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_lora_changes_the_model_exactly_like_the_native_lora_loader(comfy, native_nodes, node_mods, model, layout,
                                                                   folders, strength):
    ours, _, info = node_mods["node_load_adapter"].AnyCrowdLoadAdapter().load(model, "run_lora.safetensors", "None", strength)
    theirs = native_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "run_lora.safetensors", strength)[0]
    assert ours is not model and set(ours.patches) == set(theirs.patches)
    assert len(ours.patches) == (4 + 2) * len(LORA_TARGETS)  # every target of the 4 DiT + 2 VACE blocks
    inp = Inputs(layout)
    plain = apply_model(comfy, model, inp)
    got, want = apply_model(comfy, ours, inp), apply_model(comfy, theirs, inp)
    assert torch.equal(got, want)
    assert (got - plain).abs().max() > 1e-3
    assert "trained steps: 50" in info and "rank 4, alpha 2.0" in info
    assert model.patches == {}  # the input MODEL is untouched


def test_gates_come_back_equal_and_change_the_tsda_patch_output(comfy, node_mods, model, layout, folders):
    adapted, gates, info = node_mods["node_load_adapter"].AnyCrowdLoadAdapter().load(
        model, "run_lora.safetensors", "run_gates.safetensors", 1.0)
    saved = folders["gates"].state_dict()
    assert isinstance(gates, GateBank) and gates.state_dict().keys() == saved.keys()
    assert all(torch.equal(gates.state_dict()[k], v) for k, v in saved.items())
    assert "Use attention_mode tsda with agf_mode gated" in info

    patch = node_mods["node_tsda_patch"].AnyCrowdTSDAPatch().patch
    inp = Inputs(layout)
    gated = apply_model(comfy, patch(adapted, layout, "tsda", "gated", "both", gates=gates)[0], inp)
    mean = apply_model(comfy, patch(adapted, layout, "tsda", "gated", "both", gates=None)[0], inp)
    direct = apply_model(comfy, node_mods["comfy_patch"].patch_model(adapted, layout, "tsda", "gated", gates=folders["gates"]), inp)
    assert (gated - mean).abs().max() > 1e-4
    assert torch.equal(gated, direct)  # the loaded gates act exactly like the ones that were saved


def test_gates_change_the_anycrowd_sampler_output(comfy, node_mods, model, layout, folders):
    adapted, gates, _ = node_mods["node_load_adapter"].AnyCrowdLoadAdapter().load(model, "None", "run_gates.safetensors", 1.0)
    inp = Inputs(layout)
    sampler = node_mods["node_sampler"].AnyCrowdSampler()

    def run(g):
        return sampler.sample(adapted, inp.positive, inp.negative, {"samples": inp.latent}, layout, "tsda", "gated",
                              0, 1, 3.0, "euler", "simple", 8.0, 1.0, gates=g)[0]["samples"]

    with_gates, without = run(gates), run(None)
    assert with_gates.shape == without.shape and (with_gates - without).abs().max() > 1e-4


def test_a_lora_for_another_model_size_is_refused(node_mods, model, folders):
    node = node_mods["node_load_adapter"].AnyCrowdLoadAdapter()
    with pytest.raises(AnyCrowdError) as err:
        node.load(model, "small_lora.safetensors", "None", 1.0)
    message = str(err.value)
    assert "was trained for" in message
    assert "(dim 256, 2 blocks, 1 VACE blocks)" in message and "(dim 256, 4 blocks, 2 VACE blocks)" in message
    with pytest.raises(AnyCrowdError, match=r"gates small_gates.safetensors was trained for .*2 blocks"):
        node.load(model, "None", "small_gates.safetensors", 1.0)


class CaptureAdapter:
    """Test-only output node keeping what AnyCrowd Load Adapter returned."""

    __test__ = False
    seen: list = []
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "gates": ("ANYCROWD_GATES",), "info": ("STRING", {"forceInput": True})}}

    def keep(self, model, gates, info):
        CaptureAdapter.seen.append((model, gates, info))
        return ()


def test_api_prompt_through_comfyuis_validation_and_executor(tmp_path, pack, folders):
    from comfy_host import FakeServer, comfy_node_registry, tiny_vace_state_dict_file

    comfy_nodes = comfy_node_registry()
    import execution
    import folder_paths

    models = tmp_path / "diffusion_models"
    models.mkdir()
    tiny = tiny_vace_state_dict_file(models, seed=0)
    added = {"AnyCrowdTestCaptureAdapter": CaptureAdapter, "AnyCrowdLoadAdapter": pack.NODE_CLASS_MAPPINGS["AnyCrowdLoadAdapter"]}
    folder_paths.add_model_folder_path("diffusion_models", str(models))
    comfy_nodes.NODE_CLASS_MAPPINGS.update(added)

    def prompt(lora_name, gates_name):
        return {
            "1": {"class_type": "UNETLoader", "inputs": {"unet_name": tiny.name, "weight_dtype": "default"}},
            "2": {"class_type": "AnyCrowdLoadAdapter", "inputs": {"model": ["1", 0], "lora_name": lora_name,
                                                                 "gates_name": gates_name, "strength_model": 1.0}},
            "3": {"class_type": "AnyCrowdTestCaptureAdapter", "inputs": {"model": ["2", 0], "gates": ["2", 1], "info": ["2", 2]}},
        }

    try:
        # readable errors before anything runs: a LoRA picked as gates, and a LoRA copied into the gates folder
        bad = asyncio.run(execution.validate_prompt("x", prompt("None", "run_lora.safetensors"), None))
        assert not bad[0] and "it is in models/loras: pick it as lora_name" in json.dumps(bad[3])
        (tmp_path / "anycrowd_gates" / "copy.safetensors").write_bytes((tmp_path / "loras" / "run_lora.safetensors").read_bytes())
        bad = asyncio.run(execution.validate_prompt("x", prompt("None", "copy.safetensors"), None))
        assert not bad[0] and "is an AnyCrowd LoRA, not a gates file" in json.dumps(bad[3])

        good = prompt("run_lora.safetensors", "run_gates.safetensors")
        valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("y", good, None))
        assert valid, (error, node_errors)
        CaptureAdapter.seen.clear()
        executor = execution.PromptExecutor(FakeServer())
        executor.execute(good, "y", {}, outputs)
        assert executor.success, [d for e, d in executor.status_messages if e == "execution_error"]
        model, gates, info = CaptureAdapter.seen[-1]
        assert len(model.patches) == (4 + 2) * len(LORA_TARGETS)
        assert all(torch.equal(gates.state_dict()[k], v) for k, v in folders["gates"].state_dict().items())
        assert "Gates: run_gates.safetensors" in info
    finally:
        for key in added:
            comfy_nodes.NODE_CLASS_MAPPINGS.pop(key, None)
        paths = folder_paths.folder_names_and_paths["diffusion_models"][0]
        if str(models) in paths:
            paths.remove(str(models))


def test_a_lora_trained_with_shifted_rope_is_applied_with_it_and_equals_the_core(comfy, node_mods, model, layout,
                                                                                  folders, tmp_path):
    """Load Adapter reads shifted_rope from the LoRA's metadata; the TSDA Patch then gives the
    reference frames the trainer's positions: ComfyUI's output equals the core model with the
    LoRA merged, sampled at those positions (and differs from it at the plain positions)."""
    import folder_paths
    from safetensors.torch import load_file
    from tiny_wan import tiny_inputs

    from anycrowd_core.attention import AnyCrowdAttention
    from anycrowd_core.wan import load_wan_vace, shifted_reference_positions
    from anycrowd_core.wan.lora_merge import merge_lora
    from comfy_host import tiny_vace_state_dict

    cfg = tiny_vace_config()
    loras = folder_paths.folder_names_and_paths["loras"][0][0]
    path = save_lora(f"{loras}/rope_lora.safetensors", adapter_weights(cfg, seed=3), cfg, rank=4, alpha=2.0,
                     config_hash="r", extra={**EXTRA, "shifted_rope": "true"})
    adapted, _, info = node_mods["node_load_adapter"].AnyCrowdLoadAdapter().load(model, "rope_lora.safetensors", "None", 1.0)
    assert "shifted RoPE" in info and node_mods["comfy_patch"].adapter_shifted_rope(adapted)
    patched = node_mods["node_tsda_patch"].AnyCrowdTSDAPatch().patch(adapted, layout, "masked", "gated", "both")[0]
    comfy.model_management.load_models_gpu([patched])
    frames = layout.num_ref_frames + layout.video_frames
    h, w = layout.grid
    inputs = tiny_inputs(cfg, frames=frames, height=2 * h, width=2 * w, seed=5)
    core = merge_lora(load_wan_vace(tiny_vace_state_dict(seed=0), dtype=torch.float32, num_heads=cfg.num_heads),
                      load_file(str(path)))
    with torch.no_grad():
        theirs = patched.model.diffusion_model(
            inputs["x"], inputs["t"], inputs["context"], vace_context=inputs["vace_context"][:, None],
            vace_strength=[1.0], transformer_options=patched.model_options["transformer_options"])
        shifted = core(**inputs, attention=AnyCrowdAttention(layout, "masked"),
                       rope_positions=shifted_reference_positions(layout.num_ref_frames, frames, h, w))
        plain = core(**inputs, attention=AnyCrowdAttention(layout, "masked"))
    assert torch.allclose(theirs, shifted, atol=1e-4), float((theirs - shifted).abs().max())
    assert (theirs - plain).abs().max() > 1e-3


def test_one_load_adapter_per_expert_then_the_two_expert_sampler(comfy, native_nodes, node_mods, model, layout, folders):
    """Wan 2.2 VACE-Fun A14B: each expert gets its own adapter through its own Load Adapter (the
    expert input refuses the other one), and AnyCrowd Sampler with low_noise_model runs each
    expert with its LoRA and gates: exactly TSDA Patch (with that expert's gates) + a
    KSamplerAdvanced chain on the two loaded models. Swapped experts are refused."""
    import folder_paths
    from anycrowd_core.adapter_base import adapter_base

    cfg = tiny_vace_config()
    loras, gates_dir = (folder_paths.folder_names_and_paths[k][0][0] for k in ("loras", "anycrowd_gates"))
    for seed, expert in ((1, "high_noise"), (2, "low_noise")):
        fun = adapter_base(cfg, "wan2.2-vace-fun", expert, f"tiny_{expert}.safetensors")
        save_lora(f"{loras}/{expert}_lora.safetensors", adapter_weights(cfg, seed), cfg, rank=4, alpha=2.0, extra=EXTRA,
                  base=fun)
        save_gates(f"{gates_dir}/{expert}_gates.safetensors", trained_gates(cfg, seed), cfg, extra=EXTRA, base=fun)
    low_base = tiny_vace_patcher(seed=1)
    load = node_mods["node_load_adapter"].AnyCrowdLoadAdapter
    with pytest.raises(AnyCrowdError, match="trained for the low-noise expert"):
        load().load(model, "low_noise_lora.safetensors", "low_noise_gates.safetensors", 1.0, "high_noise")
    high, high_gates, info = load().load(model, "high_noise_lora.safetensors", "high_noise_gates.safetensors", 1.0,
                                         "high_noise")
    low, low_gates, _ = load().load(low_base, "low_noise_lora.safetensors", "low_noise_gates.safetensors", 1.0, "auto")
    assert "trained on: Wan 2.2 VACE-Fun custom, high-noise expert (tiny_high_noise.safetensors)" in info

    inp, steps = Inputs(layout), 3
    sampler = node_mods["node_sampler"].AnyCrowdSampler()
    args = (inp.positive, inp.negative, {"samples": inp.latent}, layout, "tsda", "gated", 5, steps, 3.0, "euler",
            "simple", 8.0, 1.0)
    ours = sampler.sample(high, *args, gates=high_gates, low_noise_model=low, low_noise_gates=low_gates,
                          switch_boundary=0.9)[0]["samples"]
    patch = node_mods["node_tsda_patch"].AnyCrowdTSDAPatch()
    high_p = patch.patch(high, layout, "tsda", "gated", "both", gates=high_gates)[0]
    low_p = patch.patch(low, layout, "tsda", "gated", "both", gates=low_gates)[0]
    switch = 2  # shift 8, 3 steps: sigmas 1.0, 0.94 >= 0.9 > 0.8
    advanced = native_nodes.KSamplerAdvanced()
    half = advanced.sample(high_p, "enable", 5, steps, 3.0, "euler", "simple", inp.positive, inp.negative,
                           {"samples": inp.latent}, 0, switch, "enable")[0]
    full = advanced.sample(low_p, "disable", 5, steps, 3.0, "euler", "simple", inp.positive, inp.negative, half,
                           switch, 10000, "disable")[0]
    assert torch.equal(ours, full["samples"][:, :, layout.num_ref_frames:])
    without_low_gates = sampler.sample(high, *args, gates=high_gates, low_noise_model=low,
                                       switch_boundary=0.9)[0]["samples"]
    assert (ours - without_low_gates).abs().max() > 1e-5  # the low-noise expert's own gates act
    with pytest.raises(AnyCrowdError, match="swapped"):
        sampler.sample(low, *args, low_noise_model=high, switch_boundary=0.9)
