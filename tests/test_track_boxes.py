"""Per-track boxes for the token layout and the PoseTracks helpers (select, slice)."""

import math

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from anycrowd_core.pose import PoseTracks
from anycrowd_core.pose.scenarios import make_scenario
from anycrowd_core.pose.track_boxes import padded_track_boxes, select_tracks, slice_tracks
from anycrowd_core.pose.tracking import track_people
from anycrowd_core.scenes import make_scene

NAN = float("nan")


def tracks_of(boxes, present, h=100, w=200):
    b = torch.tensor(boxes, dtype=torch.float32)
    m, t = b.shape[:2]
    return PoseTracks(torch.zeros(m, t, 128, 3), b, torch.tensor(present), h, w, list(range(m)))


def test_boxes_are_padded_by_a_fraction_of_their_size():
    tr = tracks_of([[[50, 20, 70, 60]]], [[True]])
    assert padded_track_boxes(tr, pad=0.1)[0, 0].tolist() == pytest.approx([48, 16, 72, 64])


def test_padded_boxes_are_clipped_to_the_frame():
    tr = tracks_of([[[0, 0, 100, 90]]], [[True]])
    assert padded_track_boxes(tr, pad=0.5)[0, 0].tolist() == [0, 0, 150, 100]


def test_absent_frames_are_nan_even_with_a_stale_box():
    tr = tracks_of([[[10, 10, 20, 20], [10, 10, 20, 20], [NAN] * 4]], [[True, False, False]])
    out = padded_track_boxes(tr)
    assert not torch.isnan(out[0, 0]).any() and torch.isnan(out[0, 1:]).all()


def test_box_entirely_outside_the_frame_is_absent():
    tr = tracks_of([[[-50, 10, -10, 50]]], [[True]])
    assert torch.isnan(padded_track_boxes(tr, pad=0.0)).all()


def test_bad_padding_is_refused():
    with pytest.raises(AnyCrowdError, match="padding"):
        padded_track_boxes(tracks_of([[[0, 0, 1, 1]]], [[True]]), pad=-1)


def test_select_reorders_tracks_and_keeps_their_ids():
    tr = tracks_of([[[0, 0, 1, 1]], [[5, 5, 6, 6]], [[9, 9, 10, 10]]], [[True], [True], [False]])
    out = select_tracks(tr, [2, 0])
    assert out.track_ids == [2, 0] and out.boxes[1, 0].tolist() == [0, 0, 1, 1] and out.present[:, 0].tolist() == [False, True]
    with pytest.raises(AnyCrowdError, match="twice"):
        select_tracks(tr, [0, 0])
    with pytest.raises(AnyCrowdError, match="3 tracks"):
        select_tracks(tr, [3])


def test_slice_keeps_every_track_for_a_stable_binding():
    tr = tracks_of([[[0, 0, 1, 1]] * 4, [[NAN] * 4] * 2 + [[2, 2, 3, 3]] * 2], [[True] * 4, [False, False, True, True]])
    seg = slice_tracks(tr, 0, 2)
    assert seg.num_tracks == 2 and seg.num_frames == 2 and not seg.present[1].any()
    with pytest.raises(AnyCrowdError, match="outside"):
        slice_tracks(tr, 2, 9)


def test_tracked_scene_boxes_build_the_token_layout():
    sc = make_scenario("scene_crossing3")
    tracks = track_people(sc.sequence)
    boxes = padded_track_boxes(tracks)
    assert tuple(boxes.shape) == (3, 33, 4)
    scene = make_scene(3, 33, 128, 192, seed=0, scenario="crossing")
    layout = build_token_layout(scene.reference_masks, boxes, [0, 1, 2])
    assert layout.num_tracks == 3 and all(len(v) > 0 for v in layout.vid_tokens)
    # Track k (left to right at frame 0) is scene character k, whose box the padded box covers.
    for k in range(3):
        t = scene.track_boxes[k]
        assert (boxes[k, :, :2] <= t[:, :2] + 1e-4).all() and (boxes[k, :, 2:] >= t[:, 2:] - 1e-4).all()
    assert not math.isnan(float(boxes.sum()))
