"""ComfyUI's native context windows on a patched MODEL, in a real ComfyUI host (COMFYUI_PATH,
0.3.64): 0.3.64's own WAN Context Windows are refused before sampling (its windows do not
cut vace_context); today's handler, restated in tests/upstream_context_windows.py, drives
the real patched model window by window, equal to the core model on each window's layout."""

from __future__ import annotations

import importlib

import pytest
import torch

import upstream_context_windows as upstream
from anycrowd_core.attention import AnyCrowdAttention
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout, window_layout
from comfy_host import requires_comfyui, tiny_vace_config, tiny_vace_state_dict

pytestmark = requires_comfyui
H = W = 64  # 4 x 4 tokens per latent frame
PIXEL_FRAMES = 17  # 5 latent video frames; with 3 reference frames the latent has 8


def make_layout():
    ref = torch.zeros(2, H, W, dtype=torch.bool)
    ref[0, :, : W // 2] = True
    ref[1, :, W // 2 :] = True
    t = torch.arange(PIXEL_FRAMES, dtype=torch.float32)
    boxes = torch.stack([
        torch.stack([t, 0 * t, t + 24, 0 * t + 64], -1),
        torch.stack([40 - t, 0 * t, 64 - t, 0 * t + 64], -1),
    ])
    return build_token_layout(ref, boxes, [0, 1])


@pytest.fixture(scope="module")
def mods(pack):
    return {name: importlib.import_module(f"{pack.__name__}.nodes.{name}") for name in ("comfy_patch", "context_windows")}


@pytest.fixture(scope="module")
def layout():
    return make_layout()


def sampling_inputs(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (1, 16, layout.num_ref_frames + layout.video_frames, 2 * layout.grid[0], 2 * layout.grid[1])
    vace = {"vace_frames": [torch.randn(1, 32, *shape[2:], generator=g)],
            "vace_mask": [torch.rand(1, 64, *shape[2:], generator=g)], "vace_strength": [1.0]}
    text = torch.randn(1, 7, 4096, generator=g)
    return torch.randn(shape, generator=g), torch.zeros(shape), [[text, dict(vace)]], [[text.clone(), dict(vace)]]


def node_output(out):
    return out.args[0] if hasattr(out, "args") else out[0]


def test_0_3_64_wan_context_windows_are_refused_before_the_first_step(comfy, mods, model, layout):
    """0.3.64 has WAN Context Windows but they pass the whole clip's vace_context to every
    window: the patched MODEL refuses before the model runs once, naming our sampler."""
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    patched = mods["comfy_patch"].patch_model(model, layout, mode="masked")
    windowed = node_output(WanContextWindowsManualNode.execute(patched, 9, 4, "standard_static", 1, False, "flat"))
    assert "context_handler" in windowed.model_options
    calls = []
    handle = windowed.model.diffusion_model.register_forward_pre_hook(lambda *a: calls.append(1))
    noise, latent, positive, negative = sampling_inputs(layout)
    try:
        with pytest.raises(AnyCrowdError, match="do not cut the VACE context.*AnyCrowd Long Video Sampler"):
            comfy.sample.sample(windowed, noise, 1, 3.0, "euler", "simple", positive, negative, latent,
                                disable_pbar=True, seed=0)
    finally:
        handle.remove()
    assert calls == []


def test_without_context_windows_sampling_is_unchanged_by_the_wrapper(comfy, mods, model, layout):
    """The OUTER_SAMPLE wrapper leaves a run without a context handler alone."""
    patched = mods["comfy_patch"].patch_model(model, layout, mode="masked")
    bare = patched.clone()
    bare.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, mods["context_windows"].WRAPPER_KEY)
    noise, latent, positive, negative = sampling_inputs(layout)
    runs = [comfy.sample.sample(m, noise, 1, 3.0, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=0)
            for m in (patched, bare)]
    assert torch.equal(*runs)


def test_repatching_keeps_one_wrapper(comfy, mods, model, layout):
    twice = mods["comfy_patch"].patch_model(mods["comfy_patch"].patch_model(model, layout), layout, mode="tsda")
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    assert len(twice.get_wrappers(outer, mods["context_windows"].WRAPPER_KEY)) == 1


@pytest.mark.parametrize("mode,shifted", [("masked", False), ("tsda", False), ("masked", True)])
def test_each_window_of_today_s_handler_equals_the_core_model_on_the_window_layout(comfy, mods, model, layout, mode, shifted):
    """Today's WAN Context Windows (restated), after our wrapper made every window start
    with the references: the real patched ComfyUI model on each window's slice (latent and
    vace_context cut by the handler, the window published in transformer_options) equals
    the core model on [references | window] with the window's layout (and window-local
    shifted RoPE)."""
    from tiny_wan import tiny_inputs

    from anycrowd_core.wan import load_wan_vace, shifted_reference_positions

    cw = mods["context_windows"]
    cfg = tiny_vace_config()
    core = load_wan_vace(tiny_vace_state_dict(seed=0), dtype=torch.float32, num_heads=cfg.num_heads)
    r, (h, w) = layout.num_ref_frames, layout.grid
    inp = tiny_inputs(cfg, frames=r + layout.video_frames, height=2 * h, width=2 * w, seed=3)
    patched = mods["comfy_patch"].patch_model(model, layout, mode=mode, shifted_rope=shifted)
    comfy.model_management.load_models_gpu([patched])
    dm = patched.model.diffusion_model
    options = {"transformer_options": dict(patched.model_options["transformer_options"])}
    follower = options["transformer_options"][cw.FOLLOWER_KEY]
    handler = follower.windows_with_references(
        upstream.wan_context_windows(context_frames=9, overlap_frames=4, retain_first_frame=True),
        patched.model, inp["x"].shape)
    conds = [[{"model_conds": {"vace_context": upstream.Cond(inp["vace_context"][:, None])}}]]
    seen = []
    for window, sub_x, sub_t, sub_conds in handler.window_calls(patched.model, inp["x"], conds, inp["t"], options):
        video = [f - r for f in window.index_list[r:]]
        seen.append(video)
        keep = list(range(r)) + [r + f for f in video]
        with torch.no_grad():
            theirs = dm(sub_x, sub_t, inp["context"], vace_context=sub_conds[0][0]["model_conds"]["vace_context"].cond,
                        vace_strength=[1.0], transformer_options=dict(options["transformer_options"]))
            positions = shifted_reference_positions(r, len(keep), h, w) if shifted else None
            ours = core(inp["x"][:, :, keep], inp["t"], inp["context"], inp["vace_context"][:, :, keep],
                        attention=AnyCrowdAttention(window_layout(layout, video), mode), rope_positions=positions)
        assert torch.allclose(theirs, ours, atol=1e-4), float((theirs - ours).abs().max())
    assert seen == [[0, 1, 2], [2, 3, 4]]  # 9 frames = 3 latent frames, overlap 4 frames = 1


def test_sampling_with_today_s_handler_runs_every_window_with_its_layout(comfy, mods, model, layout):
    """A whole KSampler run on the real host with today's handler (restated) attached like
    the WAN Context Windows node attaches it: the wrapper swaps in the reference-first
    windows, each window's layers get that window's layout, and the result is finite."""
    cw = mods["context_windows"]
    patched = mods["comfy_patch"].patch_model(model, layout, mode="tsda")
    windowed = patched.clone()
    windowed.model_options["context_handler"] = handler = upstream.wan_context_windows(context_frames=9, overlap_frames=4)
    tokens = []
    follower = windowed.model_options["transformer_options"][cw.FOLLOWER_KEY]
    follow = follower.follow
    follower.follow = lambda window: tokens.append(list(window.index_list)) or follow(window)
    try:
        noise, latent, positive, negative = sampling_inputs(layout)
        out = comfy.sample.sample(windowed, noise, 2, 3.0, "euler", "simple", positive, negative, latent,
                                  disable_pbar=True, seed=0)
    finally:
        del follower.follow
    assert torch.isfinite(out).all() and out.shape == latent.shape
    assert {tuple(t) for t in tokens} == {(0, 1, 2, 3, 4, 5), (0, 1, 2, 5, 6, 7)}
    assert handler.context_schedule.func is upstream.create_windows_static_standard  # the user's handler untouched


def test_today_s_windows_on_a_patched_model_equal_our_own_sliding_windows(comfy, mods, model, layout):
    """Flat fusion over the same windows: a KSampler run with today's handler (restated) on
    the patched MODEL gives what our Long Video Sampler's WindowedModelFunction gives,
    [references | window] per window and overlaps averaged by update count."""
    from anycrowd_core.long_video import plan_latent_windows

    lvc = importlib.import_module(mods["comfy_patch"].__name__.replace("comfy_patch", "long_video_comfy"))
    patched = mods["comfy_patch"].patch_model(model, layout, mode="tsda")
    native = patched.clone()
    native.model_options["context_handler"] = upstream.wan_context_windows(context_frames=9, overlap_frames=4)
    ours = patched.clone()
    windows = plan_latent_windows(layout.video_frames, 3, 1)
    hooks = [AnyCrowdAttention(window_layout(layout, range(w.start, w.stop)), "tsda") for w in windows]
    ours.set_model_unet_function_wrapper(lvc.WindowedModelFunction(windows, hooks, layout.num_ref_frames))
    noise, latent, positive, negative = sampling_inputs(layout, seed=4)
    a, b, whole = (comfy.sample.sample(m, noise, 2, 3.0, "euler", "simple", positive, negative, latent,
                                       disable_pbar=True, seed=0) for m in (native, ours, patched))
    assert [(w.start, w.stop) for w in windows] == [(0, 3), (2, 5)]
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert (a - whole).abs().max() > 1e-3  # the windows did change the run
