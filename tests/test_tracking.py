"""Identity tracking: zero identity switches on every provided scenario, and the pieces
(cost, matching, gap bridging, pruning, re-entry, order, smoothing, edge cases)."""

import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose import FramePoses, PoseSequence
from anycrowd_core.pose.evaluate import main as evaluate_main
from anycrowd_core.pose.evaluate import score_tracking
from anycrowd_core.pose.scenarios import HARD_SCENARIOS, SCENARIOS, make_scenario
from anycrowd_core.pose.tracking import (
    Tracker, association_cost, box_iou, match_pairs, run_tracker, track_people,
)

H, W = 480, 832
# A standing figure's 18 body points relative to its box (x, y fractions).
_TEMPLATE = np.array([
    [0.5, 0.1], [0.5, 0.2], [0.3, 0.22], [0.25, 0.4], [0.2, 0.55], [0.7, 0.22], [0.75, 0.4], [0.8, 0.55],
    [0.4, 0.5], [0.4, 0.75], [0.4, 0.98], [0.6, 0.5], [0.6, 0.75], [0.6, 0.98], [0.45, 0.08], [0.55, 0.08],
    [0.4, 0.1], [0.6, 0.1],
])


def person(box, conf=0.9):
    """128-point keypoints `[128, 3]` of a figure filling xyxy `box`."""
    x0, y0, x1, y1 = box
    kp = np.zeros((128, 3), np.float32)
    kp[:18, 0] = x0 + _TEMPLATE[:, 0] * (x1 - x0)
    kp[:18, 1] = y0 + _TEMPLATE[:, 1] * (y1 - y0)
    kp[:18, 2] = conf
    return kp


def frame(boxes, scores=None):
    if not boxes:
        return FramePoses.empty()
    scores = scores or [0.9] * len(boxes)
    return FramePoses(torch.tensor(np.stack([person(b) for b in boxes])), torch.tensor(boxes, dtype=torch.float32),
                      torch.tensor(scores, dtype=torch.float32))


def walker(x0, dx, t, y=100.0, w=100.0, h=250.0):
    x = x0 + dx * t
    return [x, y, x + w, y + h]


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in HARD_SCENARIOS])
def test_scenario_has_zero_identity_switches(name):
    sc = make_scenario(name)
    s = score_tracking(sc, run_tracker(sc.sequence))
    assert (s.id_switches, s.track_swaps) == (0, 0)
    assert s.tracks == s.identities and s.missed_tracks == 0 and s.false_tracks == 0


def test_scenarios_are_seeded():
    a, b = make_scenario("dropped", 3), make_scenario("dropped", 3)
    assert all(torch.equal(fa.boxes, fb.boxes) for fa, fb in zip(a.sequence.frames, b.sequence.frames))


def test_box_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_cost_is_zero_for_the_same_person_and_grows_with_distance():
    box = np.array([[100, 100, 200, 350]], float)
    kp = person(box[0])[None, :18]
    dets = np.array([[100, 100, 200, 350], [110, 100, 210, 350], [300, 100, 400, 350]], float)
    det_kp = np.stack([person(d)[:18] for d in dets])
    cost = association_cost(box, kp[..., :2].astype(float), kp[..., 2] > 0, dets, det_kp[..., :2], det_kp[..., 2] > 0,
                            0.5, 1.0)[0]
    assert cost[0] == pytest.approx(0.0, abs=1e-9)
    assert 0 < cost[1] < cost[2]
    # 10 px shift of a 250 px tall person: keypoint term 10/250, IoU 90*250 / (110*250)
    assert cost[1] == pytest.approx(0.5 * (1 - 90 / 110) + 10 / 250, rel=1e-6)


def test_cost_without_shared_keypoints_falls_back_to_iou():
    box = np.array([[0, 0, 100, 100]], float)
    none = np.zeros((1, 18), bool)
    c = association_cost(box, np.zeros((1, 18, 2)), none, np.array([[50, 0, 150, 100]], float), np.zeros((1, 18, 2)),
                         none, 0.5, 1.0)
    assert c[0, 0] == pytest.approx(1.5 * (1 - 1 / 3))


def test_matching_never_takes_a_bad_pair_to_free_a_good_one():
    # Track 0 fits det 0 well; track 1 only fits det 0. Plain Hungarian would pair 0-1, 1-0.
    cost = np.array([[0.1, 0.7], [0.75, 5.0]])
    rows, cols = match_pairs(cost, 0.8)
    assert list(zip(rows, cols)) == [(0, 0)]


def _greedy(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Nearest-first matching: repeatedly take the cheapest remaining pair."""
    cost = cost.astype(float).copy()
    pairs = []
    while np.isfinite(cost).any() and cost.min() <= max_cost:
        r, c = np.unravel_index(np.argmin(cost), cost.shape)
        pairs.append((int(r), int(c)))
        cost[r, :] = np.inf
        cost[:, c] = np.inf
    return sorted(pairs)


def test_assignment_is_optimal_where_nearest_first_would_swap_identities():
    # Two people side by side, 20 px apart, stand still for 4 frames, then both step right:
    # A by 12 px, B by 14 px. A's new box is nearer to B's old box (8 px) than to A's own
    # (12 px), so nearest-first matching gives B A's detection and leaves A the far one:
    # an identity swap with a higher total cost than the right pairing.
    a, b = [200, 100, 300, 350], [220, 100, 320, 350]
    a_next, b_next = [212, 100, 312, 350], [234, 100, 334, 350]
    tracks = np.array([a, b], float)
    dets = np.array([a_next, b_next], float)
    kp = np.stack([person(x)[:18] for x in tracks])
    det_kp = np.stack([person(x)[:18] for x in dets])
    cost = association_cost(tracks, kp[..., :2].astype(float), kp[..., 2] > 0, dets, det_kp[..., :2].astype(float),
                            det_kp[..., 2] > 0, 0.5, 1.0)
    greedy = _greedy(cost, 0.8)
    assert greedy == [(0, 1), (1, 0)]  # the swap
    assert cost[0, 0] + cost[1, 1] < cost[0, 1] + cost[1, 0]  # ... costs more than keeping each on their own
    assert (cost <= 0.4).all()  # every pair is cheaper than leaving both unmatched: a real 2-vs-2 choice

    frames = [frame([a, b]) for _ in range(4)] + [frame([b_next, a_next]) for _ in range(4)]  # listed B first
    r = run_tracker(PoseSequence(frames, H, W))
    assert r.tracks.num_tracks == 2 and r.observed.all()
    # track 0 is A (left at frame 0): it takes A's detection (index 1 from frame 4 on), B takes B's
    assert r.detection_index[:, :4].tolist() == [[0] * 4, [1] * 4]
    assert r.detection_index[:, 4:].tolist() == [[1] * 4, [0] * 4]
    assert torch.equal(r.tracks.boxes[0, -1], torch.tensor(a_next, dtype=torch.float32))
    assert torch.equal(r.tracks.boxes[1, -1], torch.tensor(b_next, dtype=torch.float32))


def test_short_detector_miss_is_bridged_by_linear_interpolation():
    frames = [frame([walker(100, 10, t)]) if t not in (4, 5, 6) else frame([]) for t in range(12)]
    r = run_tracker(PoseSequence(frames, H, W))
    tr = r.tracks
    assert tr.num_tracks == 1 and tr.present.all()
    assert r.observed[0, 4:7].tolist() == [False] * 3
    assert torch.allclose(tr.boxes[0, 5], torch.tensor(walker(100, 10, 5)))
    assert torch.allclose(tr.keypoints[0, 5, :18], torch.tensor(person(walker(100, 10, 5))[:18]), atol=1e-4)


def test_gap_longer_than_max_gap_is_not_bridged_when_asked():
    frames = [frame([walker(100, 2, t)]) if not 3 <= t < 8 else frame([]) for t in range(14)]
    tr = track_people(PoseSequence(frames, H, W), max_gap=2, bridge_hidden=False)
    assert tr.num_tracks == 1  # found again (re-identified near its predicted place) ...
    assert tr.present[0].tolist() == [True] * 3 + [False] * 5 + [True] * 6  # ... but not bridged


def test_person_hidden_inside_the_frame_longer_than_max_gap_is_bridged():
    frames = [frame([walker(100, 2, t)]) if not 3 <= t < 8 else frame([]) for t in range(14)]
    r = run_tracker(PoseSequence(frames, H, W), max_gap=2)
    assert r.tracks.num_tracks == 1 and r.tracks.present.all()
    assert r.observed[0].tolist() == [True] * 3 + [False] * 5 + [True] * 6
    assert torch.allclose(r.tracks.boxes[0, 5], torch.tensor(walker(100, 2, 5)))


def test_short_spurious_tracks_are_pruned():
    frames = [frame([walker(100, 5, t)] + ([[600, 50, 650, 150]] if t in (3, 4) else [])) for t in range(10)]
    tr = track_people(PoseSequence(frames, H, W))
    assert tr.num_tracks == 1
    assert tr.present.all()


def test_low_score_detections_extend_but_never_start_tracks():
    frames = [frame([walker(100, 5, t), [600, 50, 700, 300]], [0.9, 0.4]) for t in range(6)]
    assert track_people(PoseSequence(frames, H, W)).num_tracks == 1
    frames = [frame([walker(100, 5, t)], [0.9 if t < 2 else 0.35]) for t in range(6)]
    assert track_people(PoseSequence(frames, H, W), min_track_length=2).present[0].all()


def test_exit_and_reentry_keep_the_identity_without_bridging_the_absence():
    # Walks out through the left edge, stays out 20 frames, comes back through it.
    xs = [200 - 40 * t for t in range(8)] + [None] * 20 + [-60 + 40 * t for t in range(8)]
    frames = []
    for x in xs:
        if x is None or x + 100 <= 0:
            frames.append(frame([[500, 100, 600, 350]]))
        else:
            frames.append(frame([[max(x, 0), 100, x + 100, 350], [500, 100, 600, 350]]))
    tr = track_people(PoseSequence(frames, H, W))
    assert tr.num_tracks == 2
    gone = ~tr.present[0]
    assert gone[8:28].all() and tr.present[0, 30:].all()


def test_order_is_left_to_right_where_all_tracks_are_present():
    # Person A starts on the right, B on the left; they swap sides later.
    frames = [frame([walker(600 - 40 * t, 0, 0), walker(100 + 40 * t, 0, 0)]) for t in range(12)]
    tr = track_people(PoseSequence(frames, H, W))
    assert tr.track_ids == [0, 1]
    assert tr.boxes[0, 0, 0] < tr.boxes[1, 0, 0]  # left one first at frame 0
    assert tr.boxes[0, -1, 0] > tr.boxes[1, -1, 0]  # it ends on the right: identity kept


def test_order_falls_back_to_first_appearance_then_x():
    # Never both in the picture: the one on the right appears first, so it comes first.
    frames = [frame([walker(600, 0, 0)]) for _ in range(5)] + [frame([walker(100, 0, 0)]) for _ in range(5)]
    tr = track_people(PoseSequence(frames, H, W))
    assert tr.num_tracks == 2 and tr.boxes[0, 0, 0] == 600 and tr.boxes[1, 5, 0] == 100


def test_output_does_not_depend_on_detection_order():
    sc = make_scenario("cross_group")
    shuffled = []
    gen = torch.Generator().manual_seed(1)
    for f in sc.sequence.frames:
        p = torch.randperm(f.num_people, generator=gen)
        shuffled.append(FramePoses(f.keypoints[p], f.boxes[p], f.scores[p]))
    a = track_people(sc.sequence)
    b = track_people(PoseSequence(shuffled, sc.sequence.height, sc.sequence.width))
    assert torch.equal(a.present, b.present)
    assert torch.allclose(a.boxes, b.boxes, equal_nan=True) and torch.equal(a.keypoints, b.keypoints)


def test_max_tracks_keeps_the_longest():
    frames = [frame([walker(100, 0, 0), walker(400, 0, 0)] + ([walker(700, 0, 0)] if t < 4 else [])) for t in range(10)]
    tr = track_people(PoseSequence(frames, H, W), max_tracks=2)
    assert tr.num_tracks == 2 and tr.boxes[:, 0, 0].tolist() == [100, 400]


def test_smoothing_reduces_jitter_and_keeps_still_points():
    rng = np.random.default_rng(0)
    frames = [frame([list(np.array([100, 100, 200, 350]) + rng.normal(0, 3, 4))]) for _ in range(30)]
    seq = PoseSequence(frames, H, W)
    raw, smooth = track_people(seq), track_people(seq, smoothing=0.7)
    assert smooth.boxes[0, :, 0].std() < 0.6 * raw.boxes[0, :, 0].std()
    still = PoseSequence([frame([[100, 100, 200, 350]]) for _ in range(10)], H, W)
    assert torch.allclose(track_people(still, smoothing=0.7).keypoints, track_people(still).keypoints)


def test_empty_sequence_and_frames_without_people():
    tr = track_people(PoseSequence([], H, W))
    assert tuple(tr.keypoints.shape) == (0, 0, 128, 3) and tr.track_ids == []
    tr = track_people(PoseSequence([FramePoses.empty() for _ in range(5)], H, W))
    assert tuple(tr.boxes.shape) == (0, 5, 4) and tuple(tr.present.shape) == (0, 5)


def test_one_frame_keeps_its_people():
    tr = track_people(PoseSequence([frame([walker(400, 0, 0), walker(100, 0, 0)])], H, W))
    assert tr.num_tracks == 2 and tr.present.all() and tr.boxes[:, 0, 0].tolist() == [100, 400]


def test_stateful_tracker_matches_track_people():
    sc = make_scenario("occlusion")
    tracker = Tracker(sc.sequence.height, sc.sequence.width)
    for f in sc.sequence.frames:
        tracker.update(f.keypoints, f.boxes, f.scores)
    a, b = tracker.finish().tracks, track_people(sc.sequence)
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.present, b.present)


def test_bad_inputs_give_readable_errors():
    with pytest.raises(AnyCrowdError, match="expected \\[P, 128, 3\\]"):
        bad = FramePoses(torch.zeros(1, 18, 3), torch.zeros(1, 4), torch.zeros(1))
        track_people(PoseSequence([bad], H, W))
    with pytest.raises(AnyCrowdError, match="Unknown tracker setting"):
        track_people(PoseSequence([], H, W), max_gapp=3)
    with pytest.raises(AnyCrowdError, match="smoothing"):
        track_people(PoseSequence([], H, W), smoothing=1.5)
    with pytest.raises(AnyCrowdError, match="PoseSequence"):
        track_people([frame([walker(0, 0, 0)])])


def test_evaluation_command_prints_a_table_and_exits_0(capsys):
    assert evaluate_main(["--only", "cross_two", "dropped", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "cross_two" in out and "total identity switches: 0" in out
    assert "IDF1" in out and "identity switches per 1,000 person-frames: 0.00" in out
