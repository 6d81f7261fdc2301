"""AnyCrowd nodes inside a real ComfyUI (skipped unless COMFYUI_PATH is set): loading through
ComfyUI's custom-node loader, the IILR conditioning on the native WAN21_Vace model with the
native KSampler, AnyCrowd Sampler progress/cancel, and the API prompt through ComfyUI's executor.

Tiny random models stand in for the real files; what the executor test substitutes and why is
listed in test_api_prompt_executes_through_comfyuis_executor (and docs/comfyui_nodes.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.video_io import write_mp4, write_png
from comfy_host import (
    assert_progress_reaches, cancel_at_first_progress, comfy_node_registry, load_as_custom_node, progress_calls, requires_comfyui,
    run_api_prompt, text_conditioning, tiny_vace_patcher, tiny_vace_state_dict_file, with_stand_in_encoders,
)
from comfy_vae_stand_in import TestVAE
from pack import REPO

pytestmark = requires_comfyui

# Every class key the issues name (workflows and other packs rely on them), in registration order.
KEYS = (
    "AnyCrowdInstanceDecoupler", "AnyCrowdIILREncode", "AnyCrowdTSDAPatch", "AnyCrowdSampler",
    "AnyCrowdPoseExtractor", "AnyCrowdPoseFromKeypoints", "AnyCrowdMasksFromPoses",
    "AnyCrowdFaceControl", "AnyCrowdLongVideoSampler", "AnyCrowdLoadAdapter", "AnyCrowdMiniLoader",
)
H, W, T = 64, 96, 9


@pytest.fixture(scope="module")
def encoded(pack, scene):
    instances = pack.nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float()
    )[0]
    # one static box per character: the union of its track boxes over the clip
    b = scene.track_boxes.numpy()
    union = np.concatenate([np.nanmin(b[..., :2], 1), np.nanmax(b[..., 2:], 1)], -1)
    boxes = "\n".join(",".join(f"{v:g}" for v in row) for row in union)
    return pack.nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        text_conditioning(1), text_conditioning(2), TestVAE(), instances, scene.pose_video, W, H, T, 1, 1.0, boxes=boxes
    )


# --- loading ----------------------------------------------------------------------------

def test_package_loads_through_comfyuis_custom_node_loader_under_a_hyphenated_name(tmp_path):
    comfy_nodes = load_as_custom_node(tmp_path, KEYS)
    for key in KEYS:
        assert comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[key].startswith("AnyCrowd")


def test_own_conditioning_set_values_equals_comfyuis(pack):
    import node_helpers

    cond = [[torch.zeros(1), {"vace_frames": [1]}], [torch.ones(1), {}]]
    for append in (False, True):
        ours = pack.nodes.comfy_runtime.conditioning_set_values(cond, {"vace_frames": [2], "x": 3}, append=append)
        theirs = node_helpers.conditioning_set_values(cond, {"vace_frames": [2], "x": 3}, append=append)
        assert ours == theirs


def test_resize_fallback_equals_comfyuis_common_upscale(pack, monkeypatch):
    import comfy.utils

    frames = torch.rand(3, 50, 90, 3)
    native = pack.nodes.comfy_runtime.resize_frames(frames, 48, 32)
    monkeypatch.setattr(pack.nodes.comfy_runtime, "_loaded", lambda name: None)
    fallback = pack.nodes.comfy_runtime.resize_frames(frames, 48, 32)
    assert torch.equal(native, fallback)
    assert torch.equal(native, comfy.utils.common_upscale(frames.movedim(-1, 1), 48, 32, "bilinear", "center").movedim(1, -1))


def test_vae_adapter_with_comfyuis_real_wan21_vae_class(pack):
    """Shapes and ranges through comfy.sd.VAE with the real Wan 2.1 VAE architecture (random weights)."""
    import comfy.ldm.wan.vae
    import comfy.sd

    net = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    # ComfyUI's layers skip weight init (uninitialised memory): fill the weights ourselves
    sd = {k: torch.ones_like(v) if "gamma" in k else torch.randn(v.shape, generator=gen) * 0.02 if v.ndim > 1
          else torch.zeros_like(v) for k, v in net.state_dict().items()}
    vae = comfy.sd.VAE(sd=sd)
    codec = pack.nodes.codec_vae.ComfyVAECodec(vae)
    with torch.no_grad():
        z = codec.encode(torch.rand(5, 16, 16, 3))
        frames = codec.decode(z)
    assert z.shape == (16, 2, 2, 2) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert frames.shape == (5, 16, 16, 3) and torch.isfinite(frames).all()
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1


# --- native model and samplers ------------------------------------------------------------

def test_iilr_conditioning_runs_on_the_native_model_with_the_native_ksampler(encoded, model):
    comfy_nodes = comfy_node_registry()
    positive, negative, latent, trim, layout = encoded
    out = comfy_nodes.KSampler().sample(model, 0, 2, 3.0, "euler", "simple", positive, negative, latent)[0]
    assert out["samples"].shape == latent["samples"].shape == (1, 16, trim + 3, H // 8, W // 8)
    assert torch.isfinite(out["samples"]).all()
    # the VACE context reaches the model: without it the result differs
    plain = comfy_nodes.KSampler().sample(model, 0, 2, 3.0, "euler", "simple", text_conditioning(1), text_conditioning(2), latent)[0]
    assert not torch.allclose(plain["samples"], out["samples"])


def sampler_kwargs(encoded, **overrides):
    positive, negative, latent, _trim, layout = encoded
    args = dict(positive=positive, negative=negative, latent=latent, layout=layout, attention_mode="masked",
                agf_mode="gated", seed=3, steps=3, cfg=3.0, sampler_name="euler", scheduler="simple", shift=8.0, denoise=1.0)
    args.update(overrides)
    return args


def test_sampler_global_mode_equals_native_ksampler_then_trim(pack, encoded, model):
    comfy_nodes = comfy_node_registry()
    kw = sampler_kwargs(encoded, attention_mode="global")
    ours = pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **kw)[0]["samples"]
    native = comfy_nodes.KSampler().sample(model, 3, 3, 3.0, "euler", "simple", kw["positive"], kw["negative"], kw["latent"])[0]
    trim = encoded[3]
    assert ours.shape == (1, 16, 3, H // 8, W // 8)
    torch.testing.assert_close(ours, native["samples"][:, :, trim:], rtol=1e-5, atol=1e-5)


def test_sampler_shift_8_is_the_wan_default_and_other_shifts_change_the_schedule(pack, encoded, model):
    sampler = pack.nodes.node_sampler.AnyCrowdSampler()
    default = sampler.sample(model, **sampler_kwargs(encoded, shift=8.0))[0]["samples"]
    keep = sampler.sample(model, **sampler_kwargs(encoded, shift=0.0))[0]["samples"]
    other = sampler.sample(model, **sampler_kwargs(encoded, shift=3.0))[0]["samples"]
    assert torch.equal(default, keep) and not torch.allclose(default, other)


def test_sampler_reports_progress_and_honours_cancel_between_steps(pack, encoded, model):
    import comfy.model_management as mm

    sampler = pack.nodes.node_sampler.AnyCrowdSampler()
    with progress_calls() as calls:
        for mode in ("masked", "tsda"):
            calls.clear()
            out = sampler.sample(model, **sampler_kwargs(encoded, attention_mode=mode))[0]["samples"]
            assert torch.isfinite(out).all()
            assert_progress_reaches(calls, 3)

        cancel_at_first_progress(calls)
        with pytest.raises(mm.InterruptProcessingException):
            sampler.sample(model, **sampler_kwargs(encoded, steps=5))
        assert [c for c in calls if c[1] == 5] == [(1, 5)]


def test_sampler_leaves_the_input_model_unpatched(pack, encoded, model):
    before = dict(model.object_patches)
    pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **sampler_kwargs(encoded, steps=1))
    assert dict(model.object_patches) == before
    assert "anycrowd" not in model.model_options.get("transformer_options", {})


# --- Wan 2.2 VACE-Fun A14B: two experts -------------------------------------------------------

@pytest.fixture(scope="module")
def low_model():
    """A second tiny expert (other random weights, same shapes): the low-noise expert."""
    return tiny_vace_patcher(seed=1)


def switch_step_from_the_schedule(model, steps, boundary, sampler_name, shift=8.0):
    """The high-noise expert's step count computed here, independently of the node: Wan 2.2
    runs it while t = 1000 * sigma >= 1000 * boundary, on the schedule KSamplerAdvanced samples
    ('simple', the model's shift; uni_pc's schedule drops the penultimate sigma of steps + 1)."""
    import comfy.samplers

    assert float(model.get_model_object("model_sampling").shift) == shift
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                     scheduler="simple").sigmas
    return int((sigmas[:-1] >= boundary).sum())


@pytest.mark.parametrize("sampler_name", ["euler", "uni_pc"])
def test_two_expert_sampler_equals_a_ksampler_advanced_chain_of_two_tsda_patches(pack, encoded, model, low_model,
                                                                                sampler_name):
    """The documented native graph: AnyCrowd TSDA Patch on each expert with the same layout, then
    KSamplerAdvanced (high: add noise, steps 0..switch, leftover noise) -> KSamplerAdvanced (low: no
    noise, switch..end). AnyCrowd Sampler with low_noise_model gives exactly its result."""
    comfy_nodes = comfy_node_registry()
    positive, negative, latent, trim, layout = encoded
    steps, boundary = 4, 0.875
    switch = switch_step_from_the_schedule(model, steps, boundary, sampler_name)
    assert 0 < switch < steps  # both experts run (shift 8, euler: sigmas 1, 0.96, 0.89 | 0.73)
    kw = sampler_kwargs(encoded, steps=steps, sampler_name=sampler_name)
    ours = pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **kw, low_noise_model=low_model,
                                                            switch_boundary=boundary)[0]["samples"]
    patch = pack.nodes.node_tsda_patch.AnyCrowdTSDAPatch()
    high_p = patch.patch(model, layout, "masked", "gated", "both")[0]
    low_p = patch.patch(low_model, layout, "masked", "gated", "both")[0]
    advanced = comfy_nodes.KSamplerAdvanced()
    half = advanced.sample(high_p, "enable", 3, steps, 3.0, sampler_name, "simple", positive, negative, latent,
                           0, switch, "enable")[0]
    full = advanced.sample(low_p, "disable", 3, steps, 3.0, sampler_name, "simple", positive, negative, half,
                           switch, 10000, "disable")[0]
    assert torch.equal(ours, full["samples"][:, :, trim:])
    alone = pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **kw)[0]["samples"]
    assert not torch.allclose(ours, alone)  # the low-noise expert did run


def test_two_experts_that_are_one_model_equal_one_continuous_run(pack, encoded, model):
    """One sigma schedule split at the boundary, not two schedules: with the same weights for
    both experts, Euler (no sampler history) gives the single-model run up to the rounding of
    ComfyUI's leftover-noise scaling (x / (1 - sigma), then * (1 - sigma))."""
    kw = sampler_kwargs(encoded, steps=4)
    sampler = pack.nodes.node_sampler.AnyCrowdSampler()
    split = sampler.sample(model, **kw, low_noise_model=model, switch_boundary=0.875)[0]["samples"]
    single = sampler.sample(model, **kw)[0]["samples"]
    torch.testing.assert_close(split, single, rtol=1e-5, atol=1e-5)
    # boundary 0: every step on the high-noise expert, the very calls of the single-model run
    assert torch.equal(sampler.sample(model, **kw, low_noise_model=model, switch_boundary=0.0)[0]["samples"], single)


def test_two_experts_with_cumulative_guidance_split_the_same_schedule(pack, encoded, model):
    kw = sampler_kwargs(encoded, steps=4, guidance="cumulative", ref_cfg=2.0)
    sampler = pack.nodes.node_sampler.AnyCrowdSampler()
    split = sampler.sample(model, **kw, low_noise_model=model, switch_boundary=0.875)[0]["samples"]
    single = sampler.sample(model, **kw)[0]["samples"]
    torch.testing.assert_close(split, single, rtol=1e-5, atol=1e-5)


def test_two_experts_progress_runs_once_over_all_steps(pack, encoded, model, low_model):
    with progress_calls() as calls:
        pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **sampler_kwargs(encoded, steps=4),
                                                         low_noise_model=low_model, switch_boundary=0.875)
    assert_progress_reaches(calls, 4)
    assert all(total == 4 for _value, total in calls)  # the low-noise part continues the same bar


def test_experts_sampling_with_different_shifts_are_refused(pack, encoded, model, low_model):
    shifted_low = pack.nodes.comfy_runtime.apply_shift(low_model, 5.0)
    with pytest.raises(AnyCrowdError, match="different sigma schedules"):
        pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **sampler_kwargs(encoded, shift=0.0),
                                                         low_noise_model=shifted_low)
    # the node's shift widget applies to both experts
    out = pack.nodes.node_sampler.AnyCrowdSampler().sample(model, **sampler_kwargs(encoded, shift=5.0, steps=2),
                                                           low_noise_model=shifted_low)[0]["samples"]
    assert torch.isfinite(out).all()


# --- the API prompt through ComfyUI's executor ----------------------------------------------

def make_test_variant(prompt: dict, *tiny_model_names: str) -> dict:
    """The shipped API prompt with the substitutions that make it run on CPU in seconds:
    - UNETLoader loads a tiny random Wan 2.1 VACE checkpoint (same keys, dim 256) from a temp
      diffusion_models folder registered with folder_paths (the Wan 2.2 VACE-Fun workflow's two
      UNETLoaders, high- then low-noise expert, load two such files with different weights);
    - CLIPLoader is dropped and both CLIPTextEncode nodes become TestTextEncode (umT5-XXL);
    - VAELoader becomes TestVAELoader (real Wan VAE: 127M parameters, ~10 s per tiny encode);
    - length 9 at 96x64 instead of 81 at 832x480, keyframes at frame 8 instead of 80, 2 steps
      (6 with two experts, so that both run: uni_pc at shift 12 puts 5 of 6 steps above 0.875).
    Every AnyCrowd node, LoadImage, LoadImageMask, the mask batching, LoadVideo,
    GetVideoComponents, ImageFromBatch, VAEDecode, CreateVideo and SaveVideo run unchanged."""
    p = with_stand_in_encoders(prompt)
    by_type = {v["class_type"]: k for k, v in p.items()}
    loaders = [k for k, v in p.items() if v["class_type"] == "UNETLoader"]
    assert len(loaders) == len(tiny_model_names)
    for nid, name in zip(loaders, tiny_model_names):
        p[nid]["inputs"]["unet_name"] = name
    enc = p[by_type["AnyCrowdIILREncode"]]["inputs"]
    enc.update(width=W, height=H, length=T, boxes=enc["boxes"].replace("80:", f"{T - 1}:"))
    p[by_type["ImageFromBatch"]]["inputs"]["length"] = T
    sampler = p[by_type["AnyCrowdSampler"]]["inputs"]
    sampler.update(steps=6 if "low_noise_model" in sampler else 2)
    return p


@pytest.mark.parametrize("workflow, experts", [("anycrowd_wan21_vace_1.3B_api.json", 1),
                                               ("anycrowd_wan22_vace_fun_A14B_api.json", 2)])
def test_api_prompt_executes_through_comfyuis_executor(tmp_path, scene, pack, workflow, experts, caplog):
    models = tmp_path / "diffusion_models"
    models.mkdir()
    tiny = [tiny_vace_state_dict_file(models, seed=e, name=f"anycrowd_tiny_wan_vace_{e}.safetensors")
            for e in range(experts)]
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    inputs.mkdir(), outputs.mkdir()
    write_png(scene.reference_image, inputs / "anycrowd_reference.png")
    for k in range(2):
        write_png(scene.reference_masks[k].float()[..., None].expand(H, W, 3), inputs / f"anycrowd_mask_{k}.png")
    write_mp4(scene.pose_video, inputs / "anycrowd_pose.mp4", fps=12)  # not Wan's 16: the output must follow it

    shipped = json.loads((REPO / "workflows" / workflow).read_text())
    prompt = make_test_variant(shipped, *(t.name for t in tiny))
    caplog.set_level("INFO")
    run_api_prompt(pack, prompt, inputs, outputs, {"diffusion_models": models})
    videos = list(outputs.rglob("AnyCrowd*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    from anycrowd_core.video_io import read_video

    frames = read_video(videos[0])
    assert tuple(frames.shape[:3]) == (T, H, W)
    import av

    with av.open(str(videos[0])) as container:  # CreateVideo takes the driving video's frame rate
        assert container.streams.video[0].average_rate == 12
    if experts == 2:  # both experts sampled: 5 high-noise steps, then 1 low-noise step
        assert "high-noise expert for steps 0-5, low-noise expert for steps 5-6" in caplog.text
