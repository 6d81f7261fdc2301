"""User corrections of tracks (swap / merge / drop / split), their syntax errors with a caret,
and tracks saved to and loaded from POSE_KEYPOINT JSON unchanged."""

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.keypoint_format import load_tracks_json, save_tracks_json, tracks_to_pose_keypoint
from anycrowd_core.pose.track_edits import apply_track_edits, check_track_edits_syntax, parse_track_edits
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks

M, T, H, W = 3, 10, 120, 200


def tracks(present=None) -> PoseTracks:
    """Track m sits at x = 20 + 60 m, y = 10 + t: every value tells which track and frame it is."""
    kp = torch.zeros(M, T, NUM_KEYPOINTS, 3)
    boxes = torch.zeros(M, T, 4)
    for m in range(M):
        for t in range(T):
            kp[m, t, :18, 0] = 20 + 60 * m + torch.arange(18.0)
            kp[m, t, :18, 1] = 10 + t
            kp[m, t, :18, 2] = 0.5 + 0.01 * m
            boxes[m, t] = torch.tensor([20 + 60 * m, 10 + t, 40 + 60 * m, 60 + t])
    p = torch.ones(M, T, dtype=torch.bool) if present is None else present
    kp[~p] = 0
    boxes[~p] = float("nan")
    return PoseTracks(kp, boxes, p, H, W, [0, 1, 2])


def test_swap_from_a_frame_exchanges_the_two_tracks_from_there_on():
    src = tracks()
    out = apply_track_edits(src, "swap 0 2 @4")
    assert out.track_ids == [0, 1, 2]
    assert torch.equal(out.keypoints[0, :4], src.keypoints[0, :4]) and torch.equal(out.keypoints[0, 4:], src.keypoints[2, 4:])
    assert torch.equal(out.boxes[2, 4:], src.boxes[0, 4:]) and torch.equal(out.keypoints[1], src.keypoints[1])
    whole = apply_track_edits(src, "swap T0 T2")  # no frame: the whole clip; "T2" as the preview writes it
    assert torch.equal(whole.keypoints[0], src.keypoints[2])


def test_drop_removes_a_track_and_keeps_the_others_ids():
    out = apply_track_edits(tracks(), "drop 1")
    assert out.track_ids == [0, 2] and out.num_tracks == 2
    assert torch.equal(out.keypoints[1], tracks().keypoints[2])


def test_split_moves_the_frames_from_f_on_to_a_new_track_with_the_next_id():
    src = tracks()
    out = apply_track_edits(src, "split 1 @6")
    assert out.track_ids == [0, 1, 2, 3]
    assert out.present[1].tolist() == [True] * 6 + [False] * 4
    assert out.present[3].tolist() == [False] * 6 + [True] * 4
    assert torch.equal(out.keypoints[3, 6:], src.keypoints[1, 6:]) and bool(torch.isnan(out.boxes[3, :6]).all())
    assert float(out.keypoints[1, 6:].abs().sum()) == 0.0


def test_merge_joins_a_split_track_back_and_refuses_overlapping_frames():
    src = tracks()
    out = apply_track_edits(src, "split 1 @6\nmerge 3 into 1")
    assert out.track_ids == [0, 1, 2]
    assert torch.equal(out.keypoints, src.keypoints) and torch.equal(out.present, src.present)
    with pytest.raises(AnyCrowdError, match=r"both present in frame\(s\) 0, 1, 2, 3, 4 \.\.\."):
        apply_track_edits(src, "merge 0 into 1")


def test_edits_apply_in_order_and_empty_text_changes_nothing():
    src = tracks()
    assert apply_track_edits(src, "  \n# nothing\n") is src
    a = apply_track_edits(src, "drop 0; swap 1 2 @3")
    b = apply_track_edits(apply_track_edits(src, "drop 0"), "swap 1 2 @3")
    assert a.track_ids == b.track_ids == [1, 2] and torch.equal(a.keypoints, b.keypoints)


@pytest.mark.parametrize("text, line, column, fragment", [
    ("swap 0 1 @x", 1, 11, "frame number after '@'"),
    ("drop 0\nmerge 3 1", 2, 9, "merge A into B"),
    ("drop 0; jump 2", 1, 9, "unknown command 'jump'"),
    ("split 2", 1, 6, "split 2 @60"),
    ("swap 1 1", 1, 8, "two different tracks"),
    ("drop 1 @4", 1, 1, "takes no frame"),
    ("drop T", 1, 6, "a track id"),
])
def test_syntax_errors_name_the_line_and_put_a_caret_under_the_problem(text, line, column, fragment):
    with pytest.raises(AnyCrowdError) as info:
        check_track_edits_syntax(text)
    msg = str(info.value)
    assert f"line {line}, character {column}:" in msg and fragment in msg
    shown, caret = msg.split("\n")[1:3]
    assert caret.index("^") - 2 == column - 1 and shown.strip() in text


def test_edits_naming_missing_tracks_or_frames_are_refused():
    with pytest.raises(AnyCrowdError, match=r"no track 5 \(tracks now: 0, 1, 2\)"):
        apply_track_edits(tracks(), "drop 5")
    with pytest.raises(AnyCrowdError, match=r"no track 0 \(tracks now: 1, 2\)"):
        apply_track_edits(tracks(), "drop 0; drop 0")
    with pytest.raises(AnyCrowdError, match=r"frame 10 is outside the clip's 10 frames"):
        apply_track_edits(tracks(), "swap 0 1 @10")
    present = torch.ones(M, T, dtype=torch.bool)
    present[2, 5:] = False
    with pytest.raises(AnyCrowdError, match="not present from frame 5 on"):
        apply_track_edits(tracks(present), "split 2 @5")
    with pytest.raises(AnyCrowdError, match="must be text"):
        parse_track_edits(None)


def test_tracks_saved_as_json_load_back_unchanged(tmp_path):
    present = torch.ones(M, T, dtype=torch.bool)
    present[1, 3:5] = False
    src = apply_track_edits(tracks(present), "split 2 @7")
    path = tmp_path / "tracks.json"
    save_tracks_json(src, path)
    back = load_tracks_json(path)
    assert back.track_ids == src.track_ids == [0, 1, 2, 3]
    assert torch.equal(back.present, src.present)
    assert torch.equal(back.keypoints, src.keypoints)  # confidences too
    torch.testing.assert_close(back.boxes, src.boxes, equal_nan=True, rtol=0, atol=0)
    # Other packs still read it as POSE_KEYPOINT: one person dict per track and frame.
    data = tracks_to_pose_keypoint(src)
    assert len(data) == T and len(data[0]["people"]) == 4 and "anycrowd_box" in data[0]["people"][0]
    with pytest.raises(AnyCrowdError, match="Cannot read the tracks file"):
        load_tracks_json(tmp_path / "missing.json")


def test_normalised_export_keeps_boxes_in_pixels_on_load():
    src = tracks()
    data = tracks_to_pose_keypoint(src, normalized=True)
    from anycrowd_core.pose.keypoint_format import pose_keypoint_to_tracks

    back = pose_keypoint_to_tracks(data)
    np.testing.assert_allclose(back.boxes.numpy(), src.boxes.numpy(), atol=1e-4)
