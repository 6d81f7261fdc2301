"""IILR encoding against ComfyUI's own WanVaceToVideo node on the same codec.

Runs only when COMFYUI_PATH points at a ComfyUI checkout (tested with 0.3.64; see
docs/testing.md). With one identity and no background reference, IILR must produce exactly
the conditioning ComfyUI's node produces for a reference image, so the native model sees
our references the way it sees its own.
"""

import os
import sys

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.iilr import comfy_vace_inputs, encode_iilr
from anycrowd_core.scenes import make_scene
from comfy_vae_stand_in import TestVAE
from test_iilr import single_identity

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to compare against its WanVaceToVideo"
)


@pytest.fixture(scope="module")
def comfy_nodes_wan():
    sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: no GPU probing on CPU hosts
    import comfy.latent_formats
    import comfy_extras.nodes_wan

    return comfy_extras.nodes_wan, comfy.latent_formats




def test_single_identity_equals_wan_vace_to_video(comfy_nodes_wan):
    nodes_wan, latent_formats = comfy_nodes_wan
    scene = make_scene(num_characters=2, num_frames=9, height=64, width=96, seed=0)
    codec = TestCodec(seed=2)
    masks = (torch.rand(9, 64, 96, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    ours = encode_iilr(codec, single_identity(scene.reference_image), scene.pose_video, masks, strength=0.8, background=False)

    empty = [[torch.zeros(1, 1, 4), {}]]
    out = nodes_wan.WanVaceToVideo.execute(
        empty, empty, TestVAE(seed=2), 96, 64, 9, 1, 0.8,
        control_video=scene.pose_video, control_masks=masks, reference_image=scene.reference_image[None],
    )
    positive, _, latent, trim = out.result if hasattr(out, "result") else out
    values = positive[0][1]
    raw = comfy_vace_inputs(ours)
    assert trim == ours.trim == 1
    assert latent["samples"].shape == (1, *ours.noise_latent_shape)
    assert values["vace_strength"] == [0.8]
    assert torch.allclose(values["vace_frames"][0], raw.vace_frames, atol=1e-6)
    assert torch.equal(values["vace_mask"][0], raw.vace_mask)

    # model space: ComfyUI's WAN21_Vace.extra_conds normalises each 16-channel chunk
    wan21 = latent_formats.Wan21()
    frames = values["vace_frames"][0]
    model_space = torch.cat([wan21.process_in(frames[:, :16]), wan21.process_in(frames[:, 16:]), values["vace_mask"][0]], 1)
    assert torch.allclose(model_space[0], ours.vace_context, atol=1e-5)
