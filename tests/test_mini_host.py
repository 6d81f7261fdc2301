"""AnyCrowd-Mini inside a real ComfyUI (skipped unless COMFYUI_PATH is set): AnyCrowd Mini Loader
builds ComfyUI's own WAN21_Vace model with the LoRA patched in by ComfyUI, its VAE works with
ComfyUI's VAE nodes, the shipped CPU workflow runs unchanged through ComfyUI's executor, and on
a fixed procedural scene the ComfyUI path (loader -> decoupler -> IILR Encode -> AnyCrowd
Sampler -> ComfyUI's VAE Decode) gives the headless path's frames and binding accuracy
(`anycrowd_core.bench.binding.evaluate_scene`).

Random weights in the shipped formats (tests/mini_weights.py) stand in everywhere; the binding
comparison also runs on the shipped weights when anycrowd_core/mini/weights holds them.
"""

from __future__ import annotations

import json

import pytest
import torch

from anycrowd_core.mini import MINI_CONFIG, MINI_SAMPLING, load_mini
from anycrowd_core.mini.model import BASE_FILE, GATES_FILE, LORA_FILE, WEIGHTS_DIR
from comfy_host import requires_comfyui, run_api_prompt
from mini_weights import write_random_mini_weights
from node_inputs import boxes_text
from pack import REPO

pytestmark = requires_comfyui
API_FILE = REPO / "workflows" / "anycrowd_mini_cpu_api.json"
SHIPPED = all((WEIGHTS_DIR / name).is_file() for name in (BASE_FILE, LORA_FILE, GATES_FILE))
# A fixed held-out scene of the binding benchmark (2 characters crossing, 192x128, 9 frames).
SCENE_CHARACTERS, SCENE_INDEX, SEED = 2, 0, 5
# Float32 on both paths; differences come from summation order only.
VIDEO_ATOL = 1e-4


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return write_random_mini_weights(tmp_path_factory.mktemp("mini_weights"))


@pytest.fixture(scope="module")
def loader_mod(pack):
    return pack.nodes.node_mini_loader


@pytest.fixture
def use_weights(loader_mod, monkeypatch):
    """use_weights(folder or None): point the loader at `folder` (None: the package folder)."""

    def use(folder):
        monkeypatch.setattr(loader_mod, "WEIGHTS_DIR", folder or WEIGHTS_DIR)

    return use


@pytest.fixture(scope="module")
def loaded(pack, random_weights):
    mod = pack.nodes.node_mini_loader
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mod, "WEIGHTS_DIR", random_weights)
        return {v: mod.AnyCrowdMiniLoader().load(v) for v in mod.VARIANTS}


# --- the loader --------------------------------------------------------------------------

def test_model_is_comfyuis_wan21_vace_of_the_miniatures_size_in_float32(loaded, loader_mod):
    for variant in loader_mod.VARIANTS:
        model = loaded[variant][0]
        assert type(model.model).__name__ == "WAN21_Vace"
        dm = model.model.diffusion_model
        assert (dm.dim, dm.num_heads, len(dm.blocks), len(dm.vace_blocks)) == (
            MINI_CONFIG.dim, MINI_CONFIG.num_heads, MINI_CONFIG.num_layers, MINI_CONFIG.vace_layers)
        assert dm.patch_embedding.weight.dtype == torch.float32
        assert float(model.get_model_object("model_sampling").shift) == MINI_SAMPLING["shift"]


def test_the_lora_is_patched_in_by_comfyuis_lora_loader_for_the_anycrowd_variant_only(loaded, loader_mod, random_weights):
    from safetensors.torch import load_file

    lora = load_file(str(random_weights / LORA_FILE))
    targets = {k.replace(".lora_A.weight", ".weight") for k in lora if k.endswith(".lora_A.weight")}
    anycrowd, base = loaded[loader_mod.ANYCROWD][0], loaded[loader_mod.BASE][0]
    assert set(anycrowd.patches) == targets and len(targets) > 0
    assert base.patches == {}
    assert loaded[loader_mod.BASE][1] is None and loaded[loader_mod.ANYCROWD][1] is not None


def test_comfyuis_lora_patch_equals_the_headless_merged_lora(loaded, loader_mod, random_weights):
    model = loaded[loader_mod.ANYCROWD][0].clone()
    mini = load_mini(str(random_weights))
    model.patch_model()
    try:
        theirs = model.model.diffusion_model.state_dict()
        ours = mini.anycrowd.state_dict()
        for key in ("blocks.0.self_attn.q.weight", "vace_blocks.1.ffn.2.weight"):
            torch.testing.assert_close(theirs[key].float(), ours[key], rtol=1e-5, atol=1e-6)
    finally:
        model.unpatch_model()


def test_the_vae_works_in_comfyuis_vae_nodes(loaded, loader_mod, comfy_nodes):
    from anycrowd_core.mini import MiniCodec
    from anycrowd_core.scenes import make_scene

    vae = loaded[loader_mod.BASE][2]
    video = make_scene(num_characters=2, num_frames=9, height=128, width=192, seed=1).video
    latent = comfy_nodes.VAEEncode().encode(vae, video)[0]
    assert latent["samples"].shape == (1, 16, 3, 16, 24)
    assert torch.equal(latent["samples"][0], MiniCodec().encode(video))
    frames = comfy_nodes.VAEDecode().decode(vae, latent)[0]
    tiled = comfy_nodes.VAEDecodeTiled().decode(vae, latent, 256, 64, 64, 8)[0]
    assert frames.shape == tiled.shape == (9, 128, 192, 3)
    assert torch.equal(frames, tiled) and torch.equal(frames, MiniCodec().decode(latent["samples"][0]))


# --- the shipped CPU workflow through ComfyUI's executor --------------------------------------


def test_cpu_workflow_runs_unchanged_through_comfyuis_executor(tmp_path, pack, comfy_nodes, random_weights, use_weights):
    from anycrowd_core.example_inputs import write_example_inputs
    from anycrowd_core.video_io import read_video

    use_weights(random_weights)
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    write_example_inputs(inputs, frames=9, height=128, width=192)  # as workflows/README.md says
    outputs.mkdir()
    run_api_prompt(pack, json.loads(API_FILE.read_text()), inputs, outputs)
    videos = list(outputs.rglob("AnyCrowd_mini*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    assert tuple(read_video(videos[0]).shape) == (9, 128, 192, 3)


# --- ComfyUI path == headless path on one scene ----------------------------------------------

def comfyui_path(pack, comfy_nodes, scene, variant: str, mode: str, binding: list[int], seed: int) -> torch.Tensor:
    """Frames `[T, H, W, 3]` of the node graph of the CPU workflow, on the scene's own tensors,
    with the sampler settings of the shipped API workflow (except mode, variant and seed)."""
    nodes = pack.nodes
    sampler = next(e["inputs"] for e in json.loads(API_FILE.read_text()).values() if e["class_type"] == "AnyCrowdSampler")
    t, h, w = scene.video.shape[:3]
    model, gates, vae, cond, _info = nodes.node_mini_loader.AnyCrowdMiniLoader().load(variant)
    instances = nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float(), reassign=False, seed=seed)[0]
    # per-frame boxes in JSON: the scene's exact track boxes
    positive, negative, latent, _trim, layout = nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        cond, cond, vae, instances, scene.pose_video, w, h, t, 1, 1.0, boxes=boxes_text(scene.track_boxes),
        binding=",".join(map(str, binding)))
    samples = nodes.node_sampler.AnyCrowdSampler().sample(
        model, positive, negative, latent, layout, mode, sampler["agf_mode"], seed, sampler["steps"], sampler["cfg"],
        sampler["sampler_name"], sampler["scheduler"], sampler["shift"], sampler["denoise"], gates=gates)[0]
    return comfy_nodes.VAEDecode().decode(vae, samples)[0]


CASES = {  # id: (weights, loader variant, mode)
    "random-tsda": ("random", "anycrowd (base + LoRA + gates)", "tsda"),
    "shipped-tsda": ("shipped", "anycrowd (base + LoRA + gates)", "tsda"),
    "shipped-masked": ("shipped", "base (stock-VACE stand-in)", "masked"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_comfyui_path_gives_the_headless_binding_accuracy_and_frames(case, pack, comfy_nodes, random_weights, use_weights):
    from anycrowd_core.bench.binding import eval_scene, evaluate_scene, score_video

    weights, variant, mode = CASES[case]
    if weights == "shipped" and not SHIPPED:
        pytest.skip(f"needs the shipped AnyCrowd-Mini weights in {WEIGHTS_DIR} ({BASE_FILE}, {LORA_FILE}, "
                    f"{GATES_FILE}); they are written by the training in docs/mini.md")
    folder = random_weights if weights == "random" else None
    use_weights(folder)
    scene = eval_scene(SCENE_CHARACTERS, SCENE_INDEX)
    binding = list(range(SCENE_CHARACTERS))
    with torch.no_grad():
        frames = comfyui_path(pack, comfy_nodes, scene, variant, mode, binding, SEED)
        headless = evaluate_scene(scene, mode, binding, SEED, reference="self",
                                  mini=load_mini(str(folder) if folder else None))
    ours = score_video(scene, frames, binding)
    assert frames.shape == headless["video"].shape == scene.video.shape
    torch.testing.assert_close(frames, headless["video"], rtol=0, atol=VIDEO_ATOL)
    assert ours["scored_track_frames"] == headless["scored_track_frames"] > 0
    assert ours["binding_accuracy"] == headless["binding_accuracy"], (ours, {k: headless[k] for k in ours})
