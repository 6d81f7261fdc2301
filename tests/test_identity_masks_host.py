"""AnyCrowd Identity Masks inside a real ComfyUI (skipped unless COMFYUI_PATH is set): it registers
through ComfyUI's custom-node loader, and the example API workflow (colour-mask video -> Identity
Masks -> Decoupler / IILR Encode -> AnyCrowd Sampler) executes through ComfyUI's executor on tiny
models, with the mask video saved as H.264 and read back by ComfyUI's own Load Video.
"""

from __future__ import annotations

import json

import torch

from anycrowd_core.video_io import read_video, write_mp4, write_png
from comfy_host import (
    load_as_custom_node,
    requires_comfyui,
    run_api_prompt,
    tiny_vace_state_dict_file,
    with_stand_in_encoders,
)
from pack import REPO
from test_identity_masks import scail_colour_video

pytestmark = requires_comfyui

KEY = "AnyCrowdIdentityMasks"
API_FILE = REPO / "workflows" / "anycrowd_identity_masks_wan21_vace_1.3B_api.json"
H, W, T = 64, 96, 9


def test_identity_masks_registers_through_comfyuis_custom_node_loader_and_runs(tmp_path, scene):
    registry = load_as_custom_node(tmp_path, [KEY])
    cls = registry.NODE_CLASS_MAPPINGS[KEY]
    assert "ComfyUI-AnyCrowd.nodes.node_identity_masks" in cls.__module__
    assert registry.NODE_DISPLAY_NAME_MAPPINGS[KEY].startswith("AnyCrowd Identity Masks")
    ref, tracks, binding, *_ = cls().read(mask_video=scail_colour_video(scene.track_masks))
    assert binding == "A=0, B=1" and torch.equal(ref.bool(), scene.track_masks[:, 0])
    assert tracks.track_ids == [0, 1]


def make_test_variant(prompt: dict, tiny_model_name: str) -> dict:
    """The shipped API prompt on CPU in seconds: a tiny random Wan 2.1 VACE checkpoint, stand-in
    text encoder and VAE, 9 frames at 96x64, 2 steps. Load Image / Load Video, Get Video Components,
    Image From Batch, Identity Masks, Decoupler, IILR Encode, Sampler, VAE Decode, Create Video and
    Save Video run unchanged."""
    p = with_stand_in_encoders(prompt)
    for node in p.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "UNETLoader":
            inputs["unet_name"] = tiny_model_name
        elif ct == "ImageFromBatch":
            inputs["length"] = T
        elif ct == "AnyCrowdIILREncode":
            inputs.update(width=W, height=H, length=T)
        elif ct == "AnyCrowdSampler":
            inputs.update(steps=2)
    return p


def test_identity_masks_api_workflow_executes_through_comfyuis_executor(tmp_path, scene, pack):
    models = tmp_path / "diffusion_models"
    models.mkdir()
    tiny = tiny_vace_state_dict_file(models, seed=0, name="anycrowd_tiny_wan_vace.safetensors")
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    inputs.mkdir(), outputs.mkdir()
    write_png(scene.reference_image, inputs / "anycrowd_reference.png")
    write_png(scail_colour_video(scene.reference_masks[:, None], "white")[0], inputs / "anycrowd_reference_mask.png")
    write_mp4(scail_colour_video(scene.track_masks), inputs / "anycrowd_identity_masks.mp4", fps=12)  # H.264
    write_mp4(scene.pose_video, inputs / "anycrowd_pose.mp4", fps=12)

    prompt = make_test_variant(json.loads(API_FILE.read_text()), tiny.name)
    run_api_prompt(pack, prompt, inputs, outputs, {"diffusion_models": models})
    videos = list(outputs.rglob("AnyCrowd_identity_masks*.mp4"))
    assert len(videos) == 1
    assert tuple(read_video(videos[0]).shape[:3]) == (T, H, W)
