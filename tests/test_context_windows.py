"""ComfyUI's native context windows on a patched MODEL, without a ComfyUI host: the window
layout, the window frames, the reference-first schedule and the refusals, against a
restatement of today's ComfyUI handler (tests/upstream_context_windows.py)."""

from __future__ import annotations

import importlib
from dataclasses import fields

import pytest
import torch

import upstream_context_windows as upstream
from anycrowd_core.attention import AnyCrowdAttention
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout, window_layout
from anycrowd_core.long_video import pad_frames, plan_latent_windows, window_track_boxes
from anycrowd_core.wan import shifted_reference_positions
from pack import load_pack

# through the package name ComfyUI would give us (a top-level `nodes` import shadows ComfyUI's own)
_windows = importlib.import_module(f"{load_pack().__name__}.nodes.context_windows")
WindowFollower, slices_vace_context, window_frames = (
    _windows.WindowFollower, _windows.slices_vace_context, _windows.window_frames)

H = W = 64  # 4 x 4 tokens per latent frame
LATENT_VIDEO = 7  # latent video frames = 25 pixel frames


def scene(frames=4 * (LATENT_VIDEO - 1) + 1):
    """Two identities (left / right half references), boxes walking towards each other so
    that each window's layout differs, plus the background."""
    ref = torch.zeros(2, H, W, dtype=torch.bool)
    ref[0, :, : W // 2] = True
    ref[1, :, W // 2 :] = True
    t = torch.arange(frames, dtype=torch.float32)
    a = torch.stack([t, torch.zeros_like(t), t + 24, torch.full_like(t, 48.0)], -1)
    b = torch.stack([40 - t, 16 + 0 * t, 64 - t, 64 + 0 * t], -1)
    boxes = torch.stack([a, b])
    boxes[1, 9:12] = float("nan")  # track 1 absent for a while
    masks = torch.zeros(2, frames, H, W, dtype=torch.bool)
    for m in range(2):
        for f in range(frames):
            if not torch.isnan(boxes[m, f]).any():
                x0, y0, x1, y1 = boxes[m, f].int().tolist()
                masks[m, f, y0:y1, x0:x1] = True
    return ref, boxes, masks


@pytest.fixture(scope="module")
def layout():
    ref, boxes, masks = scene()
    return build_token_layout(ref, boxes, [0, 1], track_masks=masks)


def same_layout(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "video_groups":
            assert [(s, t.tolist()) for s, t in x] == [(s, t.tolist()) for s, t in y]
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        elif isinstance(x, tuple) and x and isinstance(x[0], torch.Tensor):
            assert all(torch.equal(u, v) for u, v in zip(x, y)), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize("window,overlap", [(3, 1), (4, 2), (5, 3)])
def test_window_layout_is_the_core_layout_of_the_window_boxes(layout, window, overlap):
    """The layout cut from the whole clip's equals the core long-video window layout
    (window_track_boxes + build_token_layout) for every window of a plan."""
    ref, boxes, _ = scene()
    for win in plan_latent_windows(LATENT_VIDEO, window, overlap):
        wb, binding = window_track_boxes(pad_frames(boxes.transpose(0, 1), boxes.shape[1]).transpose(0, 1), [0, 1], win)
        core = build_token_layout(ref, wb, binding)
        cut = window_layout(layout, range(win.start, win.stop))
        same_layout(
            type(cut)(**{**{f.name: getattr(cut, f.name) for f in fields(cut)},
                         "soft_labels": None, "num_tracks": core.num_tracks, "identity_tracks": core.identity_tracks}),
            core,
        )


def test_window_layout_of_the_first_frames_has_the_soft_labels_of_those_frames(layout):
    ref, boxes, masks = scene()
    core = build_token_layout(ref, boxes[:, :9], [0, 1], track_masks=masks[:, :9])
    same_layout(window_layout(layout, range(3)), core)


def test_window_layout_refuses_frames_outside_the_clip(layout):
    with pytest.raises(AnyCrowdError, match="within 0..6"):
        window_layout(layout, [5, 6, 7])


def test_window_frames_put_the_causal_anchor_first():
    win = upstream.IndexListContextWindow([4, 5, 6], dim=2, total_frames=10)
    assert window_frames(win) == [4, 5, 6]
    win.causal_anchor_index = 3
    assert window_frames(win) == [3, 4, 5, 6]
    assert window_frames(win) == win.get_tensor(torch.arange(10)[None, None], dim=2).flatten().tolist()


def test_wan_context_windows_on_a_patched_model_start_every_window_with_the_references(layout):
    handler = upstream.wan_context_windows(context_frames=13, overlap_frames=4)  # 4 latent frames, overlap 1
    follower = WindowFollower(AnyCrowdAttention(layout, "masked"))
    r = layout.num_ref_frames
    ours = follower.windows_with_references(handler, upstream.VaceModel(), (1, 16, r + LATENT_VIDEO, 8, 8))
    assert ours is not handler and handler.context_schedule.func is upstream.create_windows_static_standard
    windows = ours.get_context_windows(None, torch.zeros(1, 16, r + LATENT_VIDEO, 8, 8), {})
    video = upstream.create_windows_static_standard(LATENT_VIDEO, handler, {})
    assert [w.index_list for w in windows] == [[0, 1, 2] + [r + f for f in v] for v in video]
    covered = {f for w in windows for f in w.index_list}
    assert covered == set(range(r + LATENT_VIDEO))


@pytest.mark.parametrize("mode", ["masked", "tsda"])
@pytest.mark.parametrize("shifted", [False, True])
def test_each_window_runs_the_core_model_on_the_core_window(layout, mode, shifted):
    """Through the restated handler (anchor, slicing, publishing), the follower's hook and
    RoPE make the core model compute exactly what it computes on the window's own frames
    and layout: [references | video latents a..b], window-local positions."""
    from tiny_wan import tiny_config, tiny_inputs

    from anycrowd_core.wan import WanVaceModel

    torch.manual_seed(0)
    cfg = tiny_config()
    model = WanVaceModel(cfg).eval()
    r, (h, w) = layout.num_ref_frames, layout.grid
    frames = r + LATENT_VIDEO
    inp = tiny_inputs(cfg, frames=frames, height=2 * h, width=2 * w, seed=5)

    class Rope:  # the follower builds a window's RoPE like the ShiftedRope of the patch
        def __init__(self, lay, embedder=None):
            self.layout, self.embedder = lay, embedder
            self.positions = shifted_reference_positions(lay.num_ref_frames, lay.num_ref_frames + lay.video_frames, h, w)

    follower = WindowFollower(AnyCrowdAttention(layout, mode), Rope(layout) if shifted else None)
    handler = follower.windows_with_references(
        upstream.wan_context_windows(context_frames=13, overlap_frames=8, retain_first_frame=True),
        upstream.VaceModel(), inp["x"].shape)
    options = {"transformer_options": {}}
    conds = [[{"model_conds": {"vace_context": upstream.Cond(inp["vace_context"][:, None])}}]]
    calls = 0
    for window, sub_x, sub_t, sub_conds in handler.window_calls(upstream.VaceModel(), inp["x"], conds, inp["t"], options):
        hook, rope = follower.follow(options["transformer_options"]["context_window"])
        a, b = window.index_list[r] - r, window.index_list[-1] - r + 1
        keep = list(range(r)) + list(range(r + a, r + b))
        with torch.no_grad():
            got = model(sub_x, sub_t, inp["context"], sub_conds[0][0]["model_conds"]["vace_context"].cond[:, 0],
                        attention=hook, rope_positions=None if rope is None else rope.positions)
            core = AnyCrowdAttention(window_layout(layout, range(a, b)), mode)
            positions = shifted_reference_positions(r, len(keep), h, w) if shifted else None
            want = model(inp["x"][:, :, keep], inp["t"], inp["context"], inp["vace_context"][:, :, keep],
                         attention=core, rope_positions=positions)
        assert torch.equal(got, want)
        calls += 1
    assert calls == len(plan_latent_windows(LATENT_VIDEO, 4, 2))


def test_a_window_without_the_references_is_refused_by_name(layout):
    follower = WindowFollower(AnyCrowdAttention(layout, "masked"))
    win = upstream.IndexListContextWindow([5, 6, 7, 8], dim=2, total_frames=10)
    win.causal_anchor_index = 4
    with pytest.raises(AnyCrowdError, match=r"latent frames \[4, 5, 6, 7, 8\].*3 reference frames.*Long Video Sampler"):
        follower.follow(win)


def test_follower_caches_one_hook_per_window(layout):
    follower = WindowFollower(AnyCrowdAttention(layout, "tsda", agf="mean"))
    win = upstream.IndexListContextWindow([0, 1, 2, 5, 6], dim=2, total_frames=10)
    hook, rope = follower.follow(win)
    assert follower.follow(upstream.IndexListContextWindow([0, 1, 2, 5, 6], dim=2, total_frames=10))[0] is hook
    assert rope is None and (hook.mode, hook.agf) == ("tsda", "mean") and hook.layout.video_frames == 2


def test_today_s_handler_cuts_vace_context_and_0_3_64_s_does_not():
    assert slices_vace_context(upstream.wan_context_windows(retain_first_frame=True), upstream.VaceModel())
    old = upstream.IndexListContextHandler0364(upstream.ContextSchedule("s", upstream.create_windows_static_standard),
                                               context_length=4, dim=2)
    assert not slices_vace_context(old, upstream.VaceModel())


def test_a_host_whose_windows_do_not_cut_vace_is_refused_before_sampling(layout):
    old = upstream.IndexListContextHandler0364(upstream.ContextSchedule("s", upstream.create_windows_static_standard),
                                               context_length=4, dim=2)
    follower = WindowFollower(AnyCrowdAttention(layout, "masked"))
    with pytest.raises(AnyCrowdError, match="do not cut the VACE context.*Update ComfyUI.*AnyCrowd Long Video Sampler"):
        follower.windows_with_references(old, upstream.VaceModel(), (1, 16, 10, 8, 8))


def test_windows_over_another_dim_are_refused_and_idle_ones_left_alone(layout):
    follower = WindowFollower(AnyCrowdAttention(layout, "masked"))
    schedule = upstream.ContextSchedule("s", upstream.create_windows_static_standard)
    wide = upstream.IndexListContextHandler(schedule, context_length=4, dim=3)
    with pytest.raises(AnyCrowdError, match="dim 3.*not time"):
        follower.windows_with_references(wide, upstream.VaceModel(), (1, 16, 10, 8, 8))
    idle = upstream.IndexListContextHandler(schedule, context_length=16, dim=0)  # ContextWindowsManual's default dim
    assert follower.windows_with_references(idle, upstream.VaceModel(), (1, 16, 10, 8, 8)) is idle


def test_retaining_a_video_position_is_refused(layout):
    follower = WindowFollower(AnyCrowdAttention(layout, "masked"))
    schedule = upstream.ContextSchedule("s", upstream.create_windows_static_standard)
    handler = upstream.IndexListContextHandler(schedule, context_length=4, dim=2, latent_retain_index_list="0,4")
    with pytest.raises(AnyCrowdError, match=r"positions \[4\]"):
        follower.windows_with_references(handler, upstream.VaceModel(), (1, 16, 10, 8, 8))


def test_window_hooks_share_the_gates_and_their_per_gpu_copies(layout):
    from anycrowd_core.attention import GateBank

    gates = GateBank(32, 2, 1, hidden=4)
    full = AnyCrowdAttention(layout, "tsda", gates=gates)
    hook, _ = WindowFollower(full).follow(upstream.IndexListContextWindow([0, 1, 2, 3, 4], dim=2, total_frames=10))
    copy = GateBank(32, 2, 1, hidden=4)
    full.add_gate_copy(copy)  # registered after the window's hook exists, as a multi-GPU clone does
    assert hook.gates is gates and hook.gate_copies() == [copy]
