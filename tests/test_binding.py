"""Specification of track -> identity binding: automatic modes and the binding syntax."""

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from anycrowd_core.pose.binding import (
    auto_binding,
    bind_tracks,
    binding_text_problem,
    box_iou,
    is_index_binding,
    parse_binding,
    parse_index_binding,
    resolve_binding,
    suggest_bindings,
)
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks
from anycrowd_core.scenes import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=3, num_frames=17, height=128, width=192, seed=0)


def scene_tracks(s, order=None, ids=None):
    """PoseTracks of a scene's characters (optionally reordered / renumbered)."""
    order = list(range(s.num_characters)) if order is None else list(order)
    kp = torch.zeros(len(order), s.num_frames, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = s.keypoints[order]
    boxes = s.track_boxes[order].clone()
    present = ~torch.isnan(boxes[..., 0])
    return PoseTracks(kp, boxes, present, 128, 192, list(ids) if ids is not None else list(range(len(order))))


def test_left_to_right_matches_track_order_to_reference_order(scene):
    tracks = scene_tracks(scene, order=[2, 0, 1])  # track 0 is the rightmost character at frame 0
    b = auto_binding(tracks, 3, scene.reference_masks)
    assert b.identities == [2, 0, 1] and b.sources == [0, 1, 2]
    # reference masks given in another order: identity k is the k-th mask, whatever its position
    masks = scene.reference_masks[[1, 2, 0]]
    b = auto_binding(tracks, 3, masks)
    assert b.identities == [1, 2, 0]
    # no reference boxes: identities are taken as already left to right
    assert auto_binding(tracks, 3).identities == [2, 0, 1]


def test_left_to_right_uses_the_first_frame_where_all_tracks_are_visible():
    s = make_scene(num_characters=3, num_frames=17, seed=3, scenario="exit_reenter")
    tracks = scene_tracks(s)
    tracks.present[0, :2] = False  # character 0 only appears later
    tracks.boxes[0, :2] = float("nan")
    b = auto_binding(tracks, 3, s.reference_masks)
    assert b.identities == [0, 1, 2]


def test_overlap_binds_by_box_iou_at_the_reference_frame(scene):
    tracks = scene_tracks(scene)
    # the reference frame is the LAST frame (characters have swapped sides), identities listed
    # in a shuffled order: only box overlap recovers the right binding.
    perm = [1, 2, 0]
    ref_boxes = scene.track_boxes[perm, 16]
    b = auto_binding(tracks, 3, ref_boxes, mode="overlap", reference_frame=16)
    assert b.identities == [2, 0, 1]  # track t <-> the identity whose box is its box
    assert auto_binding(tracks, 3, ref_boxes, mode="left_to_right").identities != b.identities


def test_overlap_refuses_boxes_that_do_not_overlap(scene):
    tracks = scene_tracks(scene)
    far = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 3)
    with pytest.raises(AnyCrowdError, match="left_to_right"):
        auto_binding(tracks, 3, far, mode="overlap")
    with pytest.raises(AnyCrowdError, match="needs the reference boxes"):
        auto_binding(tracks, 3, mode="overlap")


@pytest.mark.parametrize("num_identities", [2, 4, 5])
def test_count_mismatch_suggests_a_binding_that_works(scene, num_identities):
    tracks = scene_tracks(scene, order=[2, 0, 1])
    with pytest.raises(AnyCrowdError) as err:
        auto_binding(tracks, num_identities)
    msg = str(err.value)
    assert f"3 motion tracks but {num_identities} reference identities" in msg
    suggestion = msg.split('e.g. "')[1].split('"')[0]
    b = parse_binding(suggestion, tracks, num_identities)  # the suggestion is valid as given
    assert sorted(set(b.identities)) == list(range(num_identities))


def test_suggestions_for_more_tracks_offer_one_to_many_and_dropping(scene):
    tracks = scene_tracks(scene, order=[2, 0, 1])
    assert suggest_bindings(tracks, 2) == ["A=1, B=2, A=0", "A=1, B=2"]
    assert suggest_bindings(tracks, 5) == ["A=1, B=2, C=0, D=1@+0.25w, E=2@-0.25w"]


def test_recasting_any_permutation(scene):
    tracks = scene_tracks(scene)
    b = parse_binding("A=2, B=0, C=1", tracks, 3)
    assert b.identities == [0, 1, 2] and b.sources == [2, 0, 1] and b.unbound == []
    assert torch.equal(b.tracks.keypoints, tracks.keypoints[[2, 0, 1]])
    assert torch.equal(b.boxes.isnan(), tracks.boxes[[2, 0, 1]].isnan())


def test_one_to_many_in_either_spelling(scene):
    tracks = scene_tracks(scene)
    a = parse_binding("A=0+1, B=2", tracks, 2)
    b = parse_binding("a = 0; A = 1\nB = 2", tracks, 2)
    assert a.identities == b.identities == [0, 0, 1] and a.sources == b.sources == [0, 1, 2]


def test_many_to_one_places_shifted_copies(scene):
    tracks = scene_tracks(scene)
    b = parse_binding("A=1, B=1@+0.25w, C=1@-30px+0.1h", tracks, 3)
    assert b.identities == [0, 1, 2] and b.sources == [1, 1, 1] and b.unbound == [0, 2]
    assert b.offsets.tolist() == [[0.0, 0.0], [48.0, 0.0], [-30.0, pytest.approx(12.8)]]
    src = tracks.keypoints[1]
    copy = b.tracks.keypoints[1]
    inside = (src[..., 2] > 0) & (src[..., 0] + 48 <= 191)
    assert torch.allclose(copy[..., 0][inside], src[..., 0][inside] + 48)
    assert torch.equal(copy[..., 1][inside], src[..., 1][inside])
    left = (src[..., 2] > 0) & (src[..., 0] + 48 > 191)
    assert (copy[..., 2][left] == 0).all()  # pushed out of the frame: not visible
    box = b.boxes[1]
    assert float(box[..., 2].max()) <= 192  # clipped to the frame
    assert b.tracks.track_ids == [0, 1, 2]


def test_a_copy_pushed_fully_out_of_frame_is_absent(scene):
    tracks = scene_tracks(scene)
    b = parse_binding("A=0, B=0@+1w", tracks, 2)
    assert not b.tracks.present[1].any() and torch.isnan(b.boxes[1]).all()
    assert float(b.tracks.keypoints[1, ..., 2].max()) == 0.0


def test_canonical_string_round_trips(scene):
    tracks = scene_tracks(scene, ids=[3, 5, 9])
    text = "B=5, A=3+9@ -0.2w +10py"
    b = parse_binding(text, tracks, 2)
    assert b.to_string() == "B=5, A=3@-0.2w+10py, A=9@-0.2w+10py"
    again = parse_binding(b.to_string(), tracks, 2)
    assert again.identities == b.identities and again.sources == b.sources == [1, 0, 2]
    assert torch.equal(again.offsets, b.offsets)
    assert b.labels() == ["B T5", "A T3-0.2w+10py", "A T9-0.2w+10py"]


@pytest.mark.parametrize("text, pos, words", [
    ("A=0, B=", 8, "expected a track number"),
    ("A=0 B=1", 5, "separate clauses with ','"),
    ("AB=1", 2, "single letter"),
    ("A=x", 3, "expected a track number"),
    ("A=0@+0.3", 9, "offset unit"),
    ("A 0", 3, "expected '='"),
    ("1=A", 1, "identity letter"),
    ("A=0@", 5, "expected an offset"),
    ("A=0@+0.1w 0.2h", 11, "'+' or '-'"),
])
def test_syntax_errors_point_at_the_problem(scene, text, pos, words):
    with pytest.raises(AnyCrowdError) as err:
        parse_binding(text, scene_tracks(scene), 3)
    msg = str(err.value)
    assert f"at character {pos}:" in msg and words in msg
    line, caret = msg.splitlines()[1:3]
    assert line.strip() == text and caret.index("^") - 2 == pos - 1  # caret under the character
    assert 'Examples: "A=0, B=1"' in msg


def test_semantic_errors_are_readable(scene):
    tracks = scene_tracks(scene)
    with pytest.raises(AnyCrowdError, match=r"identity D does not exist: the reference has 3 identities \(A, B, C\)"):
        parse_binding("D=0", tracks, 3)
    with pytest.raises(AnyCrowdError, match="track 7 does not exist; the tracks are 0, 1, 2"):
        parse_binding("A=7", tracks, 1)
    same = r"both placed on track 0 at the same position; shift one copy, e\.g\. B=0@\+0\.3w"
    with pytest.raises(AnyCrowdError, match=same):
        parse_binding("A=0, B=0", tracks, 2)
    with pytest.raises(AnyCrowdError, match="bound to track 1 twice"):
        parse_binding("A=1, A=1", tracks, 1)
    with pytest.raises(AnyCrowdError) as err:
        parse_binding("A=0", tracks, 3)
    msg = str(err.value)
    assert "Identities B, C are not bound" in msg
    fix = msg.split('add e.g. "')[1].split('"')[0]
    assert parse_binding("A=0, " + fix, tracks, 3).identities == [0, 1, 2]
    with pytest.raises(AnyCrowdError, match="empty"):
        parse_binding("  ", tracks, 3)


def test_resolve_switches_between_auto_and_explicit(scene):
    tracks = scene_tracks(scene)
    assert resolve_binding("", tracks, 3).identities == [0, 1, 2]
    assert resolve_binding("auto", tracks, 3).identities == [0, 1, 2]
    assert resolve_binding(None, tracks, 3).identities == [0, 1, 2]
    assert resolve_binding("A=1, B=2, C=0", tracks, 3).sources == [1, 2, 0]


def test_binding_feeds_the_token_layout(scene):
    tracks = scene_tracks(scene)
    b = parse_binding("A=0, B=0@+0.3w, C=2", tracks, 3)
    layout = build_token_layout(scene.reference_masks, b.boxes, b.identities)
    assert layout.num_identities == 3 and layout.num_tracks == 3


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [np.nan] * 4])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10]])
    iou = box_iou(a, b)
    assert iou[0].tolist() == [pytest.approx(1 / 3), 1.0] and iou[1].tolist() == [0.0, 0.0]


def test_index_form_gives_one_identity_per_track_in_track_order():
    assert is_index_binding("0, 1;2") and is_index_binding("") and not is_index_binding("A=0")
    assert parse_index_binding("1,0 1", 3, 2) == [1, 0, 1]
    assert parse_index_binding("", 2, 2) == [0, 1]  # empty: track i -> identity i
    with pytest.raises(AnyCrowdError, match="3 box tracks but 2 characters"):
        parse_index_binding("", 3, 2)
    with pytest.raises(AnyCrowdError, match="has 1 entries but there are 2 box tracks"):
        parse_index_binding("0", 2, 2)
    with pytest.raises(AnyCrowdError, match=r"refers to characters \[5\]"):
        parse_index_binding("0,5", 2, 2)
    with pytest.raises(AnyCrowdError, match=r"there are 2 tracks \(ids \[4, 7\]\).*'A=4, B=7'"):
        parse_index_binding("0", 2, 2, track_ids=[4, 7])


def test_bind_tracks_reads_the_index_form_as_the_same_binding_in_the_syntax(scene):
    tracks = scene_tracks(scene, ids=[4, 7, 9])
    by_index = bind_tracks("2,0,1", tracks, 3)
    by_syntax = parse_binding("C=4, A=7, B=9", tracks, 3)
    assert by_index.identities == by_syntax.identities == [2, 0, 1]
    assert by_index.sources == by_syntax.sources and by_index.to_string() == by_syntax.to_string()
    assert bind_tracks("", tracks, 3, scene.reference_masks).identities == \
        auto_binding(tracks, 3, scene.reference_masks).identities


def test_binding_text_problem_checks_the_syntax_only():
    for fine in ("", "  ", "auto", "0,1,0", "A=0, B=1@+0.3w", "Z=99"):
        assert binding_text_problem(fine) is None
    problem = binding_text_problem("A=0, B")
    assert problem is not None and "not a list of character indices" in problem and "expected '='" in problem

