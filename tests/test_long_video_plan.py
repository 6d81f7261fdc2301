"""Long-video planners: token-replace segments and latent sliding windows, and the slicing
of per-frame inputs (control, track boxes, per-window layouts)."""

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from anycrowd_core.long_video import (
    DEFAULT_OVERLAP,
    STRATEGIES,
    LongVideoSettings,
    Segment,
    padded_frame_count,
    plan_latent_windows,
    plan_segments,
    plan_windows,
    slice_frames,
    slice_inputs,
    slice_tracks,
    window_track_boxes,
)
from anycrowd_core.pipeline import AnimationInputs
from anycrowd_core.scenes import make_scene

CONFIGS = [(81, 5), (81, 0), (9, 5), (5, 1), (13, 9), (17, 1), (1, 0), (33, 21)]


@pytest.mark.parametrize("seg_frames,overlap", CONFIGS)
def test_every_length_1_to_400_keeps_each_frame_exactly_once(seg_frames, overlap):
    for n in range(1, 401):
        plan = plan_segments(n, seg_frames, overlap)
        written = [f for s in plan for f in range(s.out.start, s.out.stop)]
        assert written == list(range(n)), (n, plan)
        for s in plan:
            assert (s.frames - 1) % 4 == 0 and s.frames <= max(seg_frames, padded_frame_count(n))
            assert s.frames == s.stop - s.start + s.pad
            assert s.keep == slice(s.context_frames, s.frames - s.pad)
            assert s.out == slice(s.start + s.context_frames, s.stop)
            assert 0 <= s.pad <= 3
            assert s.new_frames == s.keep.stop - s.keep.start > 0
            assert s.latent_frames == (s.frames - 1) // 4 + 1


@pytest.mark.parametrize("seg_frames,overlap", CONFIGS)
def test_contexts_are_the_last_overlap_frames_of_the_previous_segment(seg_frames, overlap):
    for n in range(1, 401):
        plan = plan_segments(n, seg_frames, overlap)
        assert plan[0].start == 0 and plan[0].context_frames == 0 and plan[0].context_latent_frames == 0
        for prev, s in zip(plan, plan[1:]):
            assert s.index == prev.index + 1
            assert s.context_frames == overlap
            assert s.start == prev.stop - overlap >= prev.start  # context inside segment s-1
            assert s.context_latent_frames == (overlap - 1) // 4 + 1
            assert prev.pad == 0 and prev.frames == seg_frames  # only the last is short / padded
        last = plan[-1]
        # the last segment is the shortest 4n+1 holding its context and the remaining frames
        assert last.frames == min(seg_frames, padded_frame_count(last.stop - last.start))


def test_worked_example_from_the_docs():
    plan = plan_segments(200)
    rows = [(s.start, s.stop, s.frames, s.pad, s.context_frames, s.keep, s.out) for s in plan]
    assert rows == [
        (0, 81, 81, 0, 0, slice(0, 81), slice(0, 81)),
        (76, 157, 81, 0, 5, slice(5, 81), slice(81, 157)),
        (152, 200, 49, 1, 5, slice(5, 48), slice(157, 200)),
    ]
    assert plan[1].context_latent_frames == 2


@pytest.mark.parametrize("n,frames,pad", [(1, 1, 0), (2, 5, 3), (3, 5, 2), (4, 5, 1), (5, 5, 0), (6, 9, 3)])
def test_short_videos_are_one_padded_segment(n, frames, pad):
    (s,) = plan_segments(n)
    assert (s.start, s.stop, s.frames, s.pad, s.context_frames) == (0, n, frames, pad, 0)


def test_segments_are_frozen():
    s = plan_segments(10)[0]
    assert isinstance(s, Segment)
    with pytest.raises(Exception):
        s.start = 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=0), "positive"),
    (dict(num_frames=10, segment_frames=80), r"4n\+1.*77 or 81"),
    (dict(num_frames=10, overlap_frames=4), r"0 or 4n\+1"),
    (dict(num_frames=10, segment_frames=9, overlap_frames=9), "smaller than segment_frames"),
])
def test_bad_plans_name_the_fix(kwargs, match):
    with pytest.raises(AnyCrowdError, match=match):
        plan_segments(**kwargs)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("window,overlap", [(21, 5), (21, 0), (5, 4), (3, 1), (1, 0), (8, 3)])
def test_windows_cover_every_latent_frame_with_full_windows(window, overlap):
    for total in range(1, 121):
        plan = plan_latent_windows(total, window, overlap)
        covered = torch.zeros(total, dtype=torch.long)
        for w in plan:
            covered[w.start:w.stop] += 1
            assert w.frames == min(window, total)
            assert w.weights().tolist() == [1.0] * w.frames
            assert (w.weights(ramp=True) > 0).all()
        assert (covered >= 1).all()
        assert plan[0].start == 0 and plan[-1].stop == total
        for a, b in zip(plan, plan[1:]):
            assert a.start < b.start and b.start <= a.stop  # no gap
            assert a.right_overlap == b.left_overlap == a.stop - b.start >= min(overlap, a.stop - b.start)
            if b is not plan[-1]:
                assert a.stop - b.start == overlap  # interior steps use the configured overlap
        assert plan[0].left_overlap == 0 and plan[-1].right_overlap == 0


def test_plan_windows_converts_pixel_frames_like_comfyui():
    plan = plan_windows(200, 81, 16)  # 200 frames -> padded 201 -> 51 latent frames
    assert [(w.start, w.stop) for w in plan] == [(0, 21), (17, 38), (30, 51)]
    assert plan_windows(200, 81, 17)[1].start == 16  # ceil(17 / 4) = 5 latent frames
    assert plan_windows(81)[0].stop == 21 and len(plan_windows(81)) == 1
    assert (plan[1].pixel_start, plan[1].pixel_stop) == (65, 149)
    assert (plan[0].pixel_start, plan[0].pixel_stop) == (0, 81)


def test_ramp_weights_rise_and_fall_over_the_overlaps():
    a, b, c = plan_latent_windows(30, 10, 3)[:3]
    assert a.weights(True).tolist()[-3:] == pytest.approx([0.75, 0.5, 0.25])
    assert a.weights(True).tolist()[:7] == [1.0] * 7
    assert b.weights(True).tolist()[:3] == pytest.approx([0.25, 0.5, 0.75])


def test_bad_windows_name_the_fix():
    with pytest.raises(AnyCrowdError, match="smaller than the window"):
        plan_latent_windows(50, 5, 5)
    with pytest.raises(AnyCrowdError, match=r"4n\+1"):
        plan_windows(50, 80, 4)


# ----------------------------------------------------------------------------- segment inputs


def test_slice_tracks_repeats_the_last_box_and_keeps_nan():
    boxes = torch.arange(3 * 7 * 4, dtype=torch.float32).reshape(3, 7, 4)
    boxes[1, 6] = float("nan")
    seg = plan_segments(7, 5, 1)[-1]  # frames 4..6 + 2 padding frames
    assert (seg.start, seg.stop, seg.frames, seg.pad) == (4, 7, 5, 2)
    out = slice_tracks(boxes, seg)
    assert out.shape == (3, 5, 4)
    assert torch.equal(out[0], boxes[0, [4, 5, 6, 6, 6]])
    assert torch.isnan(out[1, 2:]).all() and torch.equal(out[1, :2], boxes[1, 4:6])


def test_slice_inputs_keeps_references_and_slices_control():
    scene = make_scene(num_characters=2, num_frames=13, height=64, width=96, seed=1)
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes, [1, 0])
    seg = plan_segments(13, 9, 5)[1]  # frames 4..12
    part = slice_inputs(inputs, seg)
    assert part.reference_image is inputs.reference_image and part.binding == [1, 0]
    assert torch.equal(part.control_video, scene.pose_video[4:13])
    assert part.track_boxes.shape == (2, 9, 4)


def test_slicing_past_the_video_is_refused():
    with pytest.raises(AnyCrowdError, match="plan with the video's own frame count"):
        slice_frames(torch.zeros(5, 2), plan_segments(9, 9, 0)[0])


def test_identity_absent_from_a_segment_gets_no_video_tokens():
    scene = make_scene(num_characters=2, num_frames=45, height=64, width=96, seed=0, scenario="exit_reenter")
    absent = torch.isnan(scene.track_boxes[0]).any(-1)
    plan = plan_segments(45, 9, 1)
    seg = next(s for s in plan if absent[s.start:s.stop].all())
    layout = build_token_layout(scene.reference_masks, slice_tracks(scene.track_boxes, seg), [0, 1])
    assert layout.vid_tokens[0].numel() == 0 and layout.vid_tokens[1].numel() > 0
    assert layout.ref_tokens[0].numel() > 0  # its reference frame stays
    assert layout.video_frames == seg.latent_frames


@pytest.mark.parametrize("window,overlap", [(3, 1), (4, 2), (2, 0)])
def test_window_layouts_equal_the_whole_clip_layout_restricted_to_the_window(window, overlap):
    scene = make_scene(num_characters=3, num_frames=33, height=64, width=144, seed=2)
    binding = [0, 1, 0]  # identity 0 drives two tracks
    whole = build_token_layout(scene.reference_masks[:2], scene.track_boxes, binding)
    hw = whole.tokens_per_frame

    def per_frame(layout, k):  # identity k's video tokens as a set of (latent frame, token)
        local = layout.vid_tokens[k] - layout.video_start
        return {(int(i) // hw, int(i) % hw) for i in local}

    for win in plan_latent_windows(whole.video_frames, window, overlap):
        boxes, wbind = window_track_boxes(scene.track_boxes, binding, win)
        layout = build_token_layout(scene.reference_masks[:2], boxes, wbind)
        assert layout.video_frames == win.frames
        for k in range(2):
            expected = {(f - win.start, t) for f, t in per_frame(whole, k) if win.start <= f < win.stop}
            assert per_frame(layout, k) == expected


def test_long_video_settings_plan_with_the_strategy_default_overlap():
    assert STRATEGIES == ("token_replace", "sliding_window")
    for strategy in STRATEGIES:
        settings = LongVideoSettings(strategy, segment_frames=21)
        assert settings.overlap == DEFAULT_OVERLAP[strategy]
    assert LongVideoSettings("token_replace", 21).plan(50) == plan_segments(50, 21, 5)
    assert LongVideoSettings("sliding_window", 21, 8).plan(50) == plan_windows(50, 21, 8)
    assert LongVideoSettings("token_replace", 21, 0).overlap == 0  # an explicit 0 is not the default


def test_long_video_settings_refuse_an_unknown_strategy_and_bad_plans():
    with pytest.raises(AnyCrowdError, match="choose one of"):
        LongVideoSettings("context_windows")
    with pytest.raises(AnyCrowdError, match="4n\\+1"):
        LongVideoSettings("token_replace", 80).plan(100)

