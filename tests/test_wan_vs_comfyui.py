"""Our WanVaceModel against ComfyUI's VaceWanModel on the same random tiny checkpoint.

Runs only when COMFYUI_PATH points at a ComfyUI checkout (tested with 0.3.64); see
docs/wan_model.md for setting up such a host. Everything is float32 on CPU.
"""

import os
import sys

import pytest
import torch

from anycrowd_core.wan import WanVaceConfig, load_wan_vace
from tiny_wan import random_state_dict, tiny_config, tiny_inputs

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(
    not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to compare against its VaceWanModel"
)
ATOL = 1e-5


@pytest.fixture(scope="module")
def comfy():
    sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args

    args.cpu = True  # must precede comfy.model_management's import: no GPU probing on CPU hosts
    import comfy.ldm.wan.model
    import comfy.ops
    import comfy.sd

    return comfy


def comfy_vace_model(comfy, cfg: WanVaceConfig, state_dict: dict):
    model = comfy.ldm.wan.model.VaceWanModel(
        model_type="vace", patch_size=cfg.patch_size, in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim,
        freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim, num_heads=cfg.num_heads,
        num_layers=cfg.num_layers, vace_layers=cfg.vace_layers, vace_in_dim=cfg.vace_in_dim,
        eps=cfg.eps, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init,
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def run_comfy(model, inputs: dict, strengths: list[float]):
    vace = inputs["vace_context"]
    if vace.ndim == 5:
        vace = vace.unsqueeze(0)
    # ComfyUI's WAN21_Vace stacks contexts on dim 1: [B, N, 96, F, h, w]
    return model(inputs["x"], inputs["t"], inputs["context"], vace_context=vace.movedim(0, 1), vace_strength=strengths)


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    "batch,contexts,strengths,size",
    [(1, 1, [1.0], (3, 4, 6)), (2, 1, [0.6], (2, 6, 4)), (1, 2, [0.7, 1.3], (3, 4, 4))],
)
def test_tiny_model_matches_comfyui_vace_wan_model(comfy, batch, contexts, strengths, size):
    cfg = tiny_config()
    sd = random_state_dict(cfg, seed=3)
    ours = load_wan_vace(sd, dtype=torch.float32, num_heads=cfg.num_heads)
    theirs = comfy_vace_model(comfy, cfg, sd)
    inputs = tiny_inputs(cfg, batch=batch, contexts=contexts, frames=size[0], height=size[1], width=size[2], seed=4)
    with torch.no_grad():
        expected = run_comfy(theirs, inputs, strengths)
        got = ours(**inputs, vace_strength=strengths)
    print(f"max |ours - comfyui| = {max_diff(got, expected):.3g}")
    assert got.shape == expected.shape
    assert max_diff(got, expected) < ATOL


def test_per_frame_timesteps_match_comfyui_wan_model_per_frame_path(comfy):
    # ComfyUI's VaceWanModel takes one timestep per sample; its plain WanModel has the
    # per-frame path. With strength 0 the VACE skips vanish, so both must agree.
    cfg = tiny_config()
    sd = random_state_dict(cfg, seed=5)
    ours = load_wan_vace(sd, dtype=torch.float32, num_heads=cfg.num_heads)
    theirs = comfy.ldm.wan.model.WanModel(
        model_type="t2v", patch_size=cfg.patch_size, in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim,
        freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim, num_heads=cfg.num_heads,
        num_layers=cfg.num_layers, eps=cfg.eps, dtype=torch.float32, device="cpu",
        operations=comfy.ops.disable_weight_init,
    )
    theirs.load_state_dict({k: v for k, v in sd.items() if not k.startswith("vace_")}, strict=True)
    inputs = tiny_inputs(cfg, batch=2, frames=3, seed=6)
    inputs["t"] = torch.tensor([[0.0, 500.0, 999.0], [250.0, 0.0, 10.0]])
    with torch.no_grad():
        expected = theirs(inputs["x"], inputs["t"], inputs["context"])
        got = ours(**inputs, vace_strength=0.0)
    print(f"per-frame t: max |ours - comfyui| = {max_diff(got, expected):.3g}")
    assert max_diff(got, expected) < ATOL


def test_comfyui_loader_detects_tiny_checkpoint_as_vace_and_matches(comfy):
    # ComfyUI's detection fixes head_dim 128 and text_dim 4096, so this tiny model has dim 256.
    cfg = WanVaceConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=4, vace_layers=2)
    sd = random_state_dict(cfg, seed=7, prefix="model.diffusion_model.")
    patcher = comfy.sd.load_diffusion_model_state_dict(dict(sd), model_options={"dtype": torch.float32})
    assert type(patcher.model).__name__ == "WAN21_Vace"
    theirs = patcher.model.diffusion_model.eval()
    ours = load_wan_vace(sd, dtype=torch.float32)  # num_heads inferred as dim // 128, like ComfyUI
    assert ours.config == cfg
    inputs = tiny_inputs(cfg, batch=1, contexts=2, frames=2, height=4, width=4, text_len=7, seed=8)
    with torch.no_grad():
        expected = run_comfy(theirs, inputs, [1.0, 0.5])
        got = ours(**inputs, vace_strength=[1.0, 0.5])
    print(f"via comfy.sd: max |ours - comfyui| = {max_diff(got, expected):.3g}")
    assert max_diff(got, expected) < ATOL
