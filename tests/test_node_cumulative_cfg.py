"""AnyCrowd Cumulative CFG: the three conditions it builds from IILR Encode's conditioning
(neutral references, neutral control), its input checks, and, in a real ComfyUI host, the
GUIDER running One-to-All's formula through ComfyUI's own batching and samplers."""

import sys
from types import SimpleNamespace

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from comfy_host import import_comfy, requires_comfyui, tiny_vace_patcher
from pack import load_pack

pack = load_pack()
node_mod = pack.nodes.node_cumulative_cfg
R = 3  # reference latent frames


def vace_conditioning(frames=5, streams=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    options = {"vace_frames": [torch.randn(1, 32, frames, 4, 4, generator=g) for _ in range(streams)],
               "vace_mask": [torch.rand(1, 64, frames, 4, 4, generator=g) for _ in range(streams)],
               "vace_strength": [1.0] * streams}
    return [[torch.randn(1, 7, 16, generator=g), options]]


def test_pose_condition_neutralises_only_the_reference_frames_of_every_stream():
    cond = vace_conditioning(streams=2)
    before = [v.clone() for v in cond[0][1]["vace_frames"]]
    neutral = torch.arange(16.0)
    out = pack.nodes.guidance.neutral_vace(cond, R, neutral, control=False, name="positive")
    for vf, old in zip(out[0][1]["vace_frames"], before):
        assert torch.equal(vf[0, :16, :R], neutral.view(16, 1, 1, 1).expand(16, R, 4, 4))
        assert torch.equal(vf[0, 16:, :R], neutral.view(16, 1, 1, 1).expand(16, R, 4, 4))
        assert torch.equal(vf[:, :, R:], old[:, :, R:])
    assert all(torch.equal(a, b) for a, b in zip(cond[0][1]["vace_frames"], before)), "the input is not mutated"
    assert out[0][1]["vace_mask"] is cond[0][1]["vace_mask"] and out[0][0] is cond[0][0]


def test_unconditional_neutralises_references_and_control():
    out = pack.nodes.guidance.neutral_vace(vace_conditioning(), R, torch.zeros(16), control=True, name="negative")
    assert out[0][1]["vace_frames"][0].abs().sum() == 0


def test_conditioning_without_vace_frames_is_refused_naming_the_input():
    with pytest.raises(AnyCrowdError, match="negative has no VACE frames.*IILR Encode"):
        pack.nodes.guidance.neutral_vace([[torch.zeros(1, 2, 3), {}]], R, torch.zeros(16), control=True, name="negative")


def test_a_layout_with_more_reference_frames_than_the_conditioning_is_refused():
    with pytest.raises(AnyCrowdError, match="same AnyCrowd IILR Encode"):
        pack.nodes.guidance.neutral_vace(vace_conditioning(frames=3), R, torch.zeros(16), control=False, name="positive")


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0])
def test_bad_scales_are_refused_before_any_work(scale):
    from test_comfy_patch_host import make_layout
    from test_node_load_adapter import fake_model

    with pytest.raises(AnyCrowdError, match="ref_scale"):
        node_mod.AnyCrowdCumulativeCFG().get_guider(fake_model(), vace_conditioning(), vace_conditioning(),
                                                   make_layout(), 1.5, scale)


# ---------------------------------------------------------------- in a real ComfyUI


@pytest.fixture(scope="module")
def host():
    comfy = import_comfy()
    from test_comfy_patch_host import Inputs, make_layout

    host_pack = __import__("comfy_host").load_pack_with_comfy()
    nodes = sys.modules[f"{host_pack.__name__}.nodes"]
    layout = make_layout()
    patched = nodes.comfy_patch.patch_model(tiny_vace_patcher(seed=0), layout, mode="masked")
    return SimpleNamespace(comfy=comfy, nodes=nodes, layout=layout, model=patched, inp=Inputs(layout, seed=4))


def predictions(host, guider, sigma=0.6):
    """guider.predict_noise at one noisy latent, inside ComfyUI's own sampling set-up."""
    comfy, inp = host.comfy, host.inp
    seen = []

    def sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None):
        seen.append(model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args))
        return x

    sampler = comfy.samplers.KSAMPLER(sampler_function)
    guider.sample(inp.noise, inp.latent, sampler, torch.tensor([sigma, 0.0]), disable_pbar=True, seed=0)
    return seen[0]


@requires_comfyui
def test_guider_follows_one_to_alls_formula_through_comfyuis_batching(host):
    node = host.nodes.node_cumulative_cfg.AnyCrowdCumulativeCFG()
    inp, comfy = host.inp, host.comfy

    def guided(pose, ref):
        return predictions(host, node.get_guider(host.model, inp.positive, inp.negative, host.layout, pose, ref)[0])

    def alone(cond):  # one condition through ComfyUI's plain guider at cfg 1 (the positive only)
        plain = comfy.samplers.CFGGuider(host.model)
        plain.set_conds(cond, cond)
        plain.set_cfg(1.0)
        return predictions(host, plain)

    neutral = host.model.model.process_latent_out(torch.zeros(1, 16, 1, 1, 1)).flatten()
    r = host.layout.num_ref_frames
    middle = host.nodes.guidance.neutral_vace(inp.positive, r, neutral, control=False, name="positive")
    uncond = host.nodes.guidance.neutral_vace(inp.negative, r, neutral, control=True, name="negative")
    u, p, f = alone(uncond), alone(middle), alone(inp.positive)
    assert (p - f).abs().max() > 1e-4 and (u - p).abs().max() > 1e-4  # the three conditions differ
    assert torch.allclose(guided(1.0, 1.0), f, atol=1e-5)
    assert torch.allclose(guided(0.0, 0.0), u, atol=1e-5)
    assert torch.allclose(guided(2.0, 1.5), u + 2.0 * (p - u) + 1.5 * (f - p), atol=1e-4)


@requires_comfyui
def test_guider_samples_like_sampler_custom_advanced(host):
    comfy, inp = host.comfy, host.inp
    node = host.nodes.node_cumulative_cfg.AnyCrowdCumulativeCFG()
    guider = node.get_guider(host.model, inp.positive, inp.negative, host.layout, 1.5, 1.5)[0]
    sigmas = comfy.samplers.calculate_sigmas(host.model.get_model_object("model_sampling"), "simple", 3)
    sampler = comfy.samplers.sampler_object("euler")
    out = guider.sample(inp.noise, inp.latent, sampler, sigmas, disable_pbar=True, seed=0)
    assert out.shape == inp.latent.shape and torch.isfinite(out).all()


@requires_comfyui
def test_anycrowd_sampler_cumulative_option_runs_the_guider(host):
    inp = host.inp
    base = tiny_vace_patcher(seed=0)
    node = host.nodes.node_sampler.AnyCrowdSampler()

    def run(guidance, cfg, ref_cfg):
        return node.sample(base, inp.positive, inp.negative, {"samples": inp.latent}, host.layout, "masked", "gated",
                           0, 2, cfg, "euler", "simple", 0.0, 1.0, guidance=guidance, ref_cfg=ref_cfg)[0]["samples"]

    plain = run("cfg", 1.0, 1.5)
    unit = run("cumulative", 1.0, 1.0)  # u + (p - u) + (f - p) = f: the plain cfg-1 result
    assert torch.allclose(unit, plain, atol=1e-4)
    guided = run("cumulative", 2.0, 1.5)
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-3
    with pytest.raises(AnyCrowdError, match="guidance 'pix2pix' is not available"):
        run("pix2pix", 1.0, 1.0)
