"""Identity tracking: per-frame detections (`PoseSequence`) -> `PoseTracks` with stable ids.

Hungarian assignment on predicted-box IoU plus motion-compensated keypoint distance, each term
weighted by how reliable it is, sudden jumps gated against the motion model, an optional torso
colour cue from the frames, an alpha-beta (steady-state Kalman) constant-velocity filter on
box centre and size, gaps bridged by interpolation, exits re-identified on re-entry, short
tracks pruned. See docs/pose_tracking.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..errors import AnyCrowdError
from .appearance import (
    HIST_SIZE, frame_as_uint8, histogram_distance, torso_clearance, torso_histograms, torso_regions,
)
from .types import BODY_POINTS, NUM_KEYPOINTS, FramePoses, PoseSequence, PoseTracks

_TENTATIVE_GATE = 0.6  # fraction of max_cost a not-yet-confirmed track may match at
# Colour distance typical of the same person seen twice (pose, lighting, a little background in
# the crop): a pair at this distance pays nothing for colour, nearer earns a bonus, farther pays.
APPEARANCE_SAME = 0.25
KPT_MIN_CONF = 0.3  # keypoints below this confidence are not used for matching (DWPose's draw threshold)
_ACTIVE, _DORMANT, _DEAD = 0, 1, 2
# Box sides as bits, for "left through the left edge, came back through the left edge".
_LEFT, _TOP, _RIGHT, _BOTTOM = 1, 2, 4, 8


def colour_cost(weight: float, hist_a: np.ndarray, ok_a: np.ndarray, hist_b: np.ndarray, ok_b: np.ndarray,
                clear: np.ndarray | None = None) -> np.ndarray:
    """The appearance term `[A, B]` of an assignment cost: histogram distance minus
    APPEARANCE_SAME where both sides have a colour, scaled by `clear` (how much of each B
    torso is free of other people's boxes: a partly covered one counts less), 0 elsewhere."""
    both = ok_a[:, None] & ok_b[None, :]
    scale = 1.0 if clear is None else (0.4 + 0.6 * clear)[None, :]
    return weight * np.where(both, (histogram_distance(hist_a, hist_b) - APPEARANCE_SAME) * scale, 0.0)


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters (frames, fractions of a person's height, or costs in 0..~1.5).

    max_gap: missed frames a track coasts on its motion prediction and that are bridged by
        interpolation when it is found again (bridged frames count as present).
    min_track_length: tracks observed in fewer frames are dropped (false positives); capped
        at the video length so a one-frame video keeps its people.
    iou_weight, kpt_weight: weights of the box term (1 - IoU(predicted box, detection box))
        and the keypoint term (mean per-point distance / person height, each point clipped at
        1), each further weighted by its reliability (see `association_cost`).
    max_cost: pairs costing more are never matched.
    min_score: detections scoring below are ignored.
    new_track_score: detections scoring below may extend a track but never start one.
    smoothing: 0 = off; s in (0, 1) = zero-phase exponential smoothing of keypoints and
        boxes with factor s (higher = smoother), within each present stretch of a track.
    max_tracks: keep at most this many tracks (the longest observed); None = all.
    reentry_gap: frames after which a track that left (or was lost) can no longer be picked
        up again; None = any time in the video.
    reentry_max_cost: gate of the re-entry cost (offset along the exit edge / height +
        |log height ratio|).
    edge_margin: a box within this fraction of the frame size of an edge touches that edge.
    alpha, beta: position and velocity gains of the alpha-beta filter.
    coast_penalty: added to a pair's cost per frame the track went unobserved, for ranking
        only (the max_cost gate uses the plain cost): recently seen tracks win ties.
    jump_gate, jump_gate_growth: a detection whose keypoints sit farther from the track's
        predicted keypoints than (jump_gate + jump_gate_growth x frames unobserved) x the
        person's height is a sudden jump the motion model rules out: never matched.
    hidden_gate: a track unobserved in the last frame only takes a detection costing at most
        hidden_gate x max_cost.
    hidden_reentry_max_cost: gate of the re-identification cost of a track lost inside the
        picture (hidden for longer than max_gap).
    bridge_hidden: a track lost inside the picture for longer than max_gap and found again
        inside it (a person hidden behind others) is bridged over the gap (interpolated, marked
        present); False: absent while unseen.
    hidden_pickup_max_cost: gate of picking a hidden track (lost inside the picture) up
        again with a detection near its predicted stretch (distance / height + |log height
        ratio|), before any new track starts there (with bridge_hidden).
    suspect_extra: extra observations a track needs before it counts (and may take over a
        lost identity) when it was born next to where a hidden track is predicted (a stray
        detection near a hidden person is not that person).
    appearance: use the torso colour cue when frames are given.
    appearance_weight: weight of the colour distance (Bhattacharyya, 0..1, minus
        APPEARANCE_SAME) in the costs; a torso partly under another person's box counts less.
    appearance_rate: update rate of each track's running-average histogram.
    """

    max_gap: int = 8
    min_track_length: int = 3
    iou_weight: float = 0.5
    kpt_weight: float = 1.0
    max_cost: float = 0.8
    min_score: float = 0.1
    new_track_score: float = 0.5
    smoothing: float = 0.0
    max_tracks: int | None = None
    reentry_gap: int | None = None
    reentry_max_cost: float = 0.8
    edge_margin: float = 0.02
    alpha: float = 0.8
    beta: float = 0.3
    coast_penalty: float = 0.05
    jump_gate: float = 0.2
    hidden_gate: float = 0.8
    hidden_reentry_max_cost: float = 0.8
    bridge_hidden: bool = True
    hidden_pickup_max_cost: float = 0.3
    jump_gate_growth: float = 0.02
    suspect_extra: int = 2
    appearance: bool = True
    appearance_weight: float = 1.0
    appearance_rate: float = 0.1

    def __post_init__(self):
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise AnyCrowdError(f"Tracker setting {what}.")

        need(int(self.max_gap) == self.max_gap and self.max_gap >= 0,
             f"max_gap must be a whole number >= 0, got {self.max_gap!r}")
        need(int(self.min_track_length) == self.min_track_length and self.min_track_length >= 1,
             f"min_track_length must be a whole number >= 1, got {self.min_track_length!r}")
        need(self.iou_weight >= 0 and self.kpt_weight >= 0 and self.iou_weight + self.kpt_weight > 0,
             f"iou_weight and kpt_weight must be >= 0 and not both 0, got {self.iou_weight}, {self.kpt_weight}")
        need(self.max_cost > 0, f"max_cost must be > 0, got {self.max_cost}")
        need(0 <= self.smoothing < 1, f"smoothing must be in [0, 1) (0 = off, 0.5 = moderate), got {self.smoothing}")
        need(self.max_tracks is None or (int(self.max_tracks) == self.max_tracks and self.max_tracks >= 1),
             f"max_tracks must be None or a whole number >= 1, got {self.max_tracks!r}")
        need(self.reentry_gap is None or self.reentry_gap >= 0,
             f"reentry_gap must be None or >= 0, got {self.reentry_gap!r}")
        need(0 <= self.edge_margin < 0.5, f"edge_margin must be in [0, 0.5), got {self.edge_margin}")
        need(0 < self.alpha <= 1 and 0 <= self.beta <= 1,
             f"alpha must be in (0, 1] and beta in [0, 1], got {self.alpha}, {self.beta}")
        need(self.jump_gate > 0 and self.jump_gate_growth >= 0,
             f"jump_gate must be > 0 and jump_gate_growth >= 0, got {self.jump_gate}, {self.jump_gate_growth}")
        need(0 < self.hidden_gate <= 1, f"hidden_gate must be in (0, 1], got {self.hidden_gate}")
        need(int(self.suspect_extra) == self.suspect_extra and self.suspect_extra >= 0,
             f"suspect_extra must be a whole number >= 0, got {self.suspect_extra!r}")
        need(self.appearance_weight >= 0, f"appearance_weight must be >= 0, got {self.appearance_weight}")
        need(0 < self.appearance_rate <= 1, f"appearance_rate must be in (0, 1], got {self.appearance_rate}")


@dataclass
class TrackingResult:
    """Tracker output with the assignment behind it (for evaluation and debugging).

    tracks: the `PoseTracks` (M tracks in their final left-to-right order).
    detection_index: int64 `[M, T]` index of the detection in `frames[t]` that track m
        observed, -1 where it observed none (absent or bridged).
    observed: bool `[M, T]` detection_index >= 0 (present & ~observed = bridged).
    """

    tracks: PoseTracks
    detection_index: Tensor
    observed: Tensor


def _sides(boxes: np.ndarray, height: int, width: int, margin: float) -> np.ndarray:
    """Bitmask of the frame edges each xyxy box `[N, 4]` touches."""
    mx, my = margin * width, margin * height
    return (
        (boxes[:, 0] <= mx) * _LEFT + (boxes[:, 1] <= my) * _TOP
        + (boxes[:, 2] >= width - mx) * _RIGHT + (boxes[:, 3] >= height - my) * _BOTTOM
    ).astype(np.int64)


def _pick(app, idx):
    return None if app is None else tuple(a[idx] for a in app)


def _to_cxcywh(b: np.ndarray) -> np.ndarray:
    return np.stack([(b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def _to_xyxy(s: np.ndarray) -> np.ndarray:
    hw, hh = s[:, 2] * 0.5, s[:, 3] * 0.5
    return np.stack([s[:, 0] - hw, s[:, 1] - hh, s[:, 0] + hw, s[:, 1] + hh], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU `[A, B]` of xyxy boxes `[A, 4]` and `[B, 4]`; 0 for empty boxes and NaN rows."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    ok = union > 0  # False for empty boxes and NaN rows (comparisons with NaN are False)
    iou = np.divide(inter, union, out=np.zeros_like(union, dtype=np.float64), where=ok)
    return np.where(np.isnan(iou), 0.0, iou)


def keypoint_distance(pred: np.ndarray, pred_valid: np.ndarray, det: np.ndarray, det_valid: np.ndarray,
                      scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised keypoint distance `[A, D]` between predicted body points `[A, K, 2]` and
    detected ones `[D, K, 2]`: mean over points visible in both of min(dist / scale_a, 1).
    Also returns the count of shared points `[A, D]` (distance is 1 where it is 0)."""
    kd, count, _ = _keypoint_terms(pred, pred_valid, det, det_valid, scale)
    return kd, count


def _keypoint_terms(pred, pred_valid, det, det_valid, scale):
    """keypoint_distance's (distance, shared count) and the mean shift `[A, D, 2]` px of the
    shared points (detection minus prediction), from one pass over the point pairs."""
    diff = det[None] - pred[:, None]
    dist = np.sqrt((diff * diff).sum(-1)) / scale[:, None, None]
    common = pred_valid[:, None] & det_valid[None]
    count = common.sum(-1)
    total = np.where(common, np.minimum(dist, 1.0), 0.0).sum(-1)
    shift = np.where(common[..., None], diff, 0.0).sum(2) / np.maximum(count, 1)[..., None]
    return np.where(count > 0, total / np.maximum(count, 1), 1.0), count, shift


KPT_RELIABLE = 6  # shared confident body points at which the keypoint term is fully trusted


def association_cost(pred_boxes: np.ndarray, pred_kpts: np.ndarray, pred_valid: np.ndarray,
                     det_boxes: np.ndarray, det_kpts: np.ndarray, det_valid: np.ndarray,
                     iou_weight: float, kpt_weight: float, scale: np.ndarray | None = None,
                     box_reliability: np.ndarray | None = None, _terms=None) -> np.ndarray:
    """Cost `[A, D]` of giving detection d to track a (lower is better, 0 = identical).

    A weighted mean of the box term (1 - IoU) and the keypoint term (keypoint_distance, replaced
    by 1 - IoU where the two share no confident keypoint), scaled to iou_weight + kpt_weight:
    cost = (wb (1 - IoU) + wk kd) (iou_weight + kpt_weight) / (wb + wk), with
    wb = iou_weight x box_reliability `[A, D]` (default 1: a box cut by the frame edge or a track
    whose box keeps changing shape with the pose is less telling) and wk = kpt_weight x
    min(shared points / KPT_RELIABLE, 1). With both terms reliable this is
    iou_weight (1 - IoU) + kpt_weight kd. scale `[A]` (person height px) normalises
    distances; default: the predicted box height.
    """
    iou = box_iou(pred_boxes, det_boxes)
    if scale is None:
        scale = pred_boxes[:, 3] - pred_boxes[:, 1]
    scale = np.maximum(scale, 1.0)
    kd, count = _terms[:2] if _terms is not None else keypoint_distance(pred_kpts, pred_valid, det_kpts, det_valid, scale)
    kd = np.where(count > 0, kd, 1.0 - iou)
    wb = iou_weight * (1.0 if box_reliability is None else box_reliability)
    wk = kpt_weight * np.minimum(count / KPT_RELIABLE, 1.0)
    wsum = wb + wk
    mixed = (wb * (1.0 - iou) + wk * kd) * (iou_weight + kpt_weight) / np.where(wsum > 0, wsum, 1.0)
    return np.where(wsum > 0, mixed, (iou_weight + kpt_weight) * (1.0 - iou))


def _jump(count: np.ndarray, mean: np.ndarray, scale: np.ndarray, pred_boxes: np.ndarray,
          det_boxes: np.ndarray) -> np.ndarray:
    """How far `[A, D]` (in person heights) detection d sits from track a's prediction: the
    length of the mean shift `mean` `[A, D, 2]` of the `count` body points seen in both (at
    least 3), else of the box centres."""
    pc = (pred_boxes[:, None, :2] + pred_boxes[:, None, 2:]) * 0.5
    dc = (det_boxes[None, :, :2] + det_boxes[None, :, 2:]) * 0.5
    shift = np.where((count >= 3)[..., None], mean, dc - pc)
    return np.sqrt((shift * shift).sum(-1)) / np.maximum(scale, 1.0)[:, None]


def match_pairs(cost: np.ndarray, max_cost: float, feasible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching of rows to columns in which rows and columns may stay unmatched;
    only `feasible` pairs (default: cost <= max_cost) costing at most `max_cost` are taken.

    Plain `linear_sum_assignment` must match min(A, D) pairs and so would accept a bad pair
    to free a good one elsewhere; padding with "unmatched" slots at max_cost / 2 each avoids it.
    """
    a, d = cost.shape
    if a == 0 or d == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ok = (cost <= max_cost) if feasible is None else (feasible & (cost <= max_cost))
    big = 4.0 * max_cost * (a + d) + 1.0
    aug = np.full((a + d, d + a), big)
    aug[:a, :d] = np.where(ok, cost, big)
    slot = 0.5 * max_cost + 1e-6  # a pair costing exactly max_cost still beats two empty slots
    aug[np.arange(a), d + np.arange(a)] = slot
    aug[a + np.arange(d), np.arange(d)] = slot
    aug[a:, d:] = 0.0
    rows, cols = linear_sum_assignment(aug)
    keep = (rows < a) & (cols < d)
    rows, cols = rows[keep], cols[keep]
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


class Tracker:
    """Frame-by-frame tracker; `track_people` drives it over a whole `PoseSequence`.

    update(keypoints [D, 128, 3], boxes [D, 4], scores [D], frame=None) (numpy or torch,
    pixels; frame: the picture `[H, W, 3]`, uint8 or 0..1, for the colour cue) returns the
    internal track number given to each detection (-1 = none); `finish()` prunes, bridges,
    smooths and orders the tracks and returns a `TrackingResult`.
    """

    def __init__(self, height: int, width: int, config: TrackerConfig | None = None, **params):
        if height < 1 or width < 1:
            raise AnyCrowdError(f"Tracker needs a positive frame size, got {width}x{height}.")
        self.cfg = config if config is not None else TrackerConfig(**params)
        if config is not None and params:
            raise AnyCrowdError("Give either a TrackerConfig or keyword settings, not both.")
        self.height, self.width = int(height), int(width)
        self.t = 0
        self._seen = 0  # detections seen so far (global detection index offset)
        self._frames_kp: list[np.ndarray] = []
        self._frames_box: list[np.ndarray] = []
        self._frames_score: list[np.ndarray] = []
        cap = 16
        self.n = 0
        self.pos = np.zeros((cap, 4))  # filtered cx, cy, w, h
        self.vel = np.zeros((cap, 4))  # per frame
        self.rel = np.zeros((cap, BODY_POINTS, 2))  # body points relative to the filtered centre
        self.rel_valid = np.zeros((cap, BODY_POINTS), dtype=bool)
        self.last_t = np.zeros(cap, dtype=np.int64)
        self.n_obs = np.zeros(cap, dtype=np.int64)
        self.seg_obs = np.zeros(cap, dtype=np.int64)  # observations since the last (re)start
        self.first_t = np.zeros(cap, dtype=np.int64)  # frame a track was started
        self.first_sides = np.zeros(cap, dtype=np.int64)  # edges its first box touched
        self.sides = np.zeros(cap, dtype=np.int64)  # edges touched at the last observation
        self.status = np.zeros(cap, dtype=np.int64)
        self.score_sum = np.zeros(cap)
        self.need = np.zeros(cap, dtype=np.int64)  # observations to be confirmed
        self.box_ok = np.zeros(cap, dtype=bool)  # box model taken from a box not cut by the frame
        self.box_jitter = np.zeros(cap)  # running mean of |log size change| between observations
        self.first_pos = np.zeros((cap, 2))  # centre at the first observation of the segment
        self.hist = np.zeros((cap, HIST_SIZE), dtype=np.float32)  # running torso colour histogram
        self.hist_ok = np.zeros(cap, dtype=bool)
        self.obs_t: list[list[int]] = []
        self.obs_det: list[list[int]] = []
        self.obs_new_segment: list[list[bool]] = []  # True: re-entry / re-identification, not bridged
        self.obs_bridge: list[list[bool]] = []  # True: re-identified inside the frame (hidden): bridged

    # ---- state storage -------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self.pos)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("pos", "vel", "rel", "rel_valid", "last_t", "n_obs", "seg_obs", "first_t", "first_sides",
                     "sides", "status", "score_sum", "need", "box_ok", "box_jitter", "first_pos", "hist", "hist_ok"):
            old = getattr(self, name)
            arr = np.zeros((new,) + old.shape[1:], dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def _predict(self, idx: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        dt = np.minimum(t - self.last_t[idx], self.cfg.max_gap + 1)[:, None]
        state = self.pos[idx] + self.vel[idx] * dt
        state[:, 2:] = np.maximum(state[:, 2:], 1.0)
        return state, dt

    def _clip(self, b: np.ndarray) -> np.ndarray:
        b[:, 0::2] = np.clip(b[:, 0::2], 0, self.width)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, self.height)
        return b

    # ---- one frame -----------------------------------------------------------------
    def update(self, keypoints, boxes, scores, frame=None) -> np.ndarray:
        """Assign the detections of the next frame; returns track numbers `[D]` (-1 = none)."""
        kp, bx, sc = (np.asarray(a.detach().cpu().float().numpy() if isinstance(a, Tensor) else a, dtype=np.float32)
                      for a in (keypoints, boxes, scores))
        d = len(bx)
        if kp.shape != (d, NUM_KEYPOINTS, 3) or bx.shape != (d, 4) or sc.shape != (d,):
            raise AnyCrowdError(
                f"Tracker.update got keypoints {kp.shape}, boxes {bx.shape}, scores {sc.shape}; expected "
                f"[P, {NUM_KEYPOINTS}, 3], [P, 4], [P] for the P people of the frame."
            )
        self._frames_kp.append(kp)
        self._frames_box.append(bx)
        self._frames_score.append(sc)
        offset = self._seen
        self._seen += len(bx)
        picture = frame_as_uint8(frame) if frame is not None and self.cfg.appearance else None
        return self._step(kp[:, :BODY_POINTS], bx.astype(np.float64), sc, offset, picture)

    def _step(self, body: np.ndarray, boxes: np.ndarray, scores: np.ndarray, offset: int,
              picture: np.ndarray | None = None) -> np.ndarray:
        cfg, t = self.cfg, self.t
        self.t += 1
        n_det = len(boxes)
        assign = np.full(n_det, -1, dtype=np.int64)
        n = self.n
        status = self.status[:n]
        missed = t - self.last_t[:n] - 1
        # Tracks that coasted past max_gap leave the normal matching; confirmed ones wait for re-entry.
        # Tentative tracks (not yet min_track_length observations) die at their first miss,
        # so chains of unrelated spurious boxes cannot add up to a track.
        confirmed = self.n_obs[:n] >= self.need[:n]
        status[(status == _ACTIVE) & ~confirmed & (missed >= 1)] = _DEAD
        expire = (status == _ACTIVE) & (missed >= cfg.max_gap + 1)
        status[expire] = _DORMANT
        if cfg.reentry_gap is not None:
            status[(status == _DORMANT) & (missed > cfg.reentry_gap)] = _DEAD

        good = (scores >= cfg.min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        good &= np.isfinite(boxes).all(1)
        dets = np.flatnonzero(good)
        if len(dets) == 0:
            return assign
        det_boxes = boxes[dets]
        det_xy = body[dets, :, :2].astype(np.float64)
        det_valid = body[dets, :, 2] >= KPT_MIN_CONF
        det_sides = _sides(det_boxes, self.height, self.width, cfg.edge_margin)
        app = None
        if picture is not None:
            regions = torso_regions(body[dets])
            hists, hist_ok = torso_histograms(picture, body[dets], regions)
            # A torso crop under another person's box may mix two people's colours: it counts
            # less in the cost (never nothing: a mix is still nearer its own person) and only a
            # clear view feeds the track's running histogram.
            clear = torso_clearance(regions, det_boxes) * hist_ok
            app = (hists, hist_ok, clear)

        # Stage 1: active tracks vs all usable detections, on the motion prediction.
        active = np.flatnonzero(status == _ACTIVE)
        free_det = np.ones(len(dets), dtype=bool)
        if len(active):
            state, _ = self._predict(active, t)
            # Detector boxes stop at the frame edge: clip the prediction the same way.
            full = _to_xyxy(state)
            pred_boxes = self._clip(full.copy())
            pred_kp = state[:, None, :2] + self.rel[active]
            # How much to trust the box term: a box cut by the frame edge (the detection's or
            # the prediction's) shows only part of the person, and a track whose box keeps
            # changing shape with the pose (stride, arms) predicts its box poorly.
            area_full = np.maximum((full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1]), 1.0)
            area_clip = (pred_boxes[:, 2] - pred_boxes[:, 0]) * (pred_boxes[:, 3] - pred_boxes[:, 1])
            cut = (area_clip < 0.9 * area_full)[:, None] | (det_sides != 0)[None, :]
            box_rel = np.where(cut, 0.3, 1.0) / (1.0 + self.box_jitter[active] / 0.15)[:, None]
            terms = _keypoint_terms(pred_kp, self.rel_valid[active], det_xy, det_valid, np.maximum(state[:, 3], 1.0))
            cost = association_cost(pred_boxes, pred_kp, self.rel_valid[active], det_boxes, det_xy, det_valid,
                                    cfg.iou_weight, cfg.kpt_weight, state[:, 3], box_rel, _terms=terms)
            if app is not None:
                cost = cost + colour_cost(cfg.appearance_weight, self.hist[active], self.hist_ok[active],
                                          app[0], app[1], app[2])
            # Gate on the cost itself; rank with a small penalty per missed frame so a track
            # seen in the last frame wins a tie against one coasting blind through the same
            # place (someone walking behind a person who stands still).
            missed_a = np.minimum(t - self.last_t[active] - 1, cfg.max_gap)
            # A sudden jump away from the motion model is another person or a stray detection:
            # a hidden track stays unmatched rather than run off with it.
            jump = _jump(terms[1], terms[2], state[:, 3], pred_boxes, det_boxes)
            in_reach = jump <= (cfg.jump_gate + cfg.jump_gate_growth * missed_a)[:, None]
            # (Capped at max_cost so a feasible pair always beats leaving both unmatched.)
            ranked = np.minimum(cost + cfg.coast_penalty * missed_a[:, None], cfg.max_cost)
            # Confirmed tracks choose first; tentative ones (maybe spurious) get what is left.
            confirmed_a = self.n_obs[active] >= cfg.min_track_length
            # A tentative track has no velocity yet and real people move smoothly, so it gets a
            # tighter gate: spurious boxes that pop up near each other do not chain into a track.
            # A hidden (coasting) track also only takes a close match: a stray detection near it
            # costs more than the person showing again, and leaving it unmatched costs nothing.
            gate_a = cfg.max_cost * np.where(missed_a > 0, cfg.hidden_gate, 1.0)
            gate_a = np.where(confirmed_a, gate_a, _TENTATIVE_GATE * cfg.max_cost)
            for group in (np.flatnonzero(confirmed_a), np.flatnonzero(~confirmed_a)):
                cand = np.flatnonzero(free_det)
                if len(group) == 0 or len(cand) == 0:
                    continue
                sub = np.ix_(group, cand)
                feasible = (cost[sub] <= gate_a[group][:, None]) & in_reach[sub]
                rows, cols = match_pairs(ranked[sub], cfg.max_cost, feasible=feasible)
                if len(rows):
                    tr_idx, c = active[group[rows]], cand[cols]
                    self._observe(tr_idx, dets[c], det_boxes[c], det_xy[c], det_valid[c],
                                  scores[dets[c]], t, offset, new_segment=False, app=_pick(app, c))
                    assign[dets[c]] = tr_idx
                    free_det[c] = False

        # Stage 1b: a person hidden for longer than max_gap (lost inside the picture) is picked up
        # again by its own track where it shows close to its predicted stretch, even by a weak
        # (partly covered) detection, instead of starting a new track that must first be confirmed.
        if cfg.bridge_hidden and free_det.any():
            waiting = np.flatnonzero(self._lost_inside(n, t) & (self.n_obs[:n] >= self.need[:n]))
            cand = np.flatnonzero(free_det & (det_valid.sum(1) >= KPT_RELIABLE))
            if len(waiting) and len(cand):
                z = _to_cxcywh(det_boxes[cand])
                h = np.maximum(self.pos[waiting, 3], 1.0)
                cost = self._stretch_distance(waiting, np.full(len(cand), t), z[:, :2]) / h[:, None]
                cost = cost + np.abs(np.log(np.maximum(z[None, :, 3], 1.0) / h[:, None]))
                if app is not None:
                    cost = cost + colour_cost(cfg.appearance_weight, self.hist[waiting], self.hist_ok[waiting],
                                              app[0][cand], app[1][cand], app[2][cand])
                rows, cols = match_pairs(cost, cfg.hidden_pickup_max_cost)
                if len(rows):
                    tr_idx, c = waiting[rows], cand[cols]
                    self.status[tr_idx] = _ACTIVE
                    self._observe(tr_idx, dets[c], det_boxes[c], det_xy[c], det_valid[c], scores[dets[c]], t,
                                  offset, new_segment=True, app=_pick(app, c))
                    for k in tr_idx.tolist():
                        self.obs_bridge[k][-1] = True
                    assign[dets[c]] = tr_idx
                    free_det[c] = False

        # Stage 2: confident unmatched detections start new (tentative) tracks.
        starters = np.flatnonzero(free_det & (scores[dets] >= cfg.new_track_score))
        if len(starters):
            new = np.arange(n, n + len(starters))
            self._grow(n + len(starters))
            self.n = n + len(starters)
            self.need[new] = cfg.min_track_length
            hidden = np.flatnonzero((((self.status[:n] == _ACTIVE) & (self.last_t[:n] < t)) | self._lost_inside(n, t))
                                    & (self.n_obs[:n] >= self.need[:n]))
            if len(hidden) and cfg.suspect_extra:
                # Born where a hidden (coasting) person is predicted: maybe that person, maybe a
                # stray detection; it must prove itself longer before it counts.
                hs, _ = self._predict(hidden, t)
                c = _to_cxcywh(det_boxes[starters])
                near = np.hypot(c[:, None, 0] - hs[None, :, 0], c[:, None, 1] - hs[None, :, 1]) < hs[None, :, 3]
                self.need[new] += cfg.suspect_extra * near.any(1)
            self.status[new] = _ACTIVE
            self.vel[new] = 0.0
            self.n_obs[new] = 0
            self.seg_obs[new] = 0
            self.score_sum[new] = 0.0
            self.rel_valid[new] = False
            self.first_t[new] = t
            self.first_sides[new] = _sides(det_boxes[starters], self.height, self.width, cfg.edge_margin)
            self.box_ok[new] = False
            self.box_jitter[new] = 0.0
            self.hist_ok[new] = False
            for _ in new:
                self.obs_t.append([])
                self.obs_det.append([])
                self.obs_new_segment.append([])
                self.obs_bridge.append([])
            self._observe(new, dets[starters], det_boxes[starters], det_xy[starters], det_valid[starters],
                          scores[dets[starters]], t, offset, new_segment=True, app=_pick(app, starters))
            assign[dets[starters]] = new

        # Stage 3: a track confirmed in this frame may be a person coming back: one who left
        # through the edge it entered by, or who was lost inside the frame. Checking at
        # confirmation rather than at the first detection lets a half-visible entrant show
        # more of itself first, and keeps short spurious tracks from stealing identities.
        fresh = np.flatnonzero((self.n_obs[: self.n] == self.need[: self.n]) & (self.last_t[: self.n] == t))
        if len(fresh):
            status = self.status[: self.n]
            old_ok = (self.n_obs[: self.n] >= self.need[: self.n]) & (self.last_t[: self.n] < self.first_t[fresh].max())
            exited = (status == _ACTIVE) & (self.sides[: self.n] != 0)
            lost = np.flatnonzero(((status == _DORMANT) | exited) & old_ok)
            if len(lost):
                cost = self._reentry_cost(lost, fresh, t)
                rows, cols = match_pairs(cost, cfg.reentry_max_cost)
                for old, young in zip(lost[rows].tolist(), fresh[cols].tolist()):
                    # Lost inside the picture and found inside it: the person was hidden all
                    # along, so the gap is bridged like a short miss.
                    hidden = cfg.bridge_hidden and self.sides[old] == 0 and self.first_sides[young] == 0
                    self._merge(old, young, hidden)
                    assign[assign == young] = old
        return assign

    def _lost_inside(self, n: int, t: int) -> np.ndarray:
        """bool `[n]`: tracks lost inside the picture (dormant, not gone out at an edge), within
        reentry_gap frames of their last observation: the hidden people of stage 1b and 2."""
        lost = (self.status[:n] == _DORMANT) & (self.sides[:n] == 0)
        if self.cfg.reentry_gap is not None:
            lost &= t - self.last_t[:n] - 1 <= self.cfg.reentry_gap
        return lost

    def _stretch_distance(self, old: np.ndarray, at: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Distance `[L, P]` px of points xy `[P, 2]` seen at frames `at` `[P]` from where each
        lost track `old[l]` can be: a hidden person is somewhere between where the motion model
        puts it after max_gap frames and where constant velocity over the whole gap would
        (people slow down behind others)."""
        cfg = self.cfg
        gap = at[None, :] - self.last_t[old][:, None]  # [L, P]
        near = self.pos[old][:, None, :2] + self.vel[old][:, None, :2] * np.minimum(gap, cfg.max_gap + 1)[..., None]
        far = self.pos[old][:, None, :2] + self.vel[old][:, None, :2] * gap[..., None]
        lim = np.array([self.width, self.height], dtype=np.float64)
        near, far = np.clip(near, 0, lim), np.clip(far, 0, lim)
        seg = far - near
        u = ((xy[None] - near) * seg).sum(-1) / np.maximum((seg * seg).sum(-1), 1e-9)
        closest = near + np.clip(u, 0, 1)[..., None] * seg
        return np.hypot(*(xy[None] - closest).transpose(2, 0, 1))

    def _reentry_cost(self, old: np.ndarray, young: np.ndarray, t: int) -> np.ndarray:
        """Cost `[L, Y]` of continuing lost track `old[l]` with newly confirmed track `young[y]`.

        A track that left touching an edge can only come back through that edge (the young
        track's first box touches it): cost = offset along the edge / height + |log height
        ratio|. A track lost inside the frame (long occlusion): distance from where its
        motion model puts it now / height + |log height ratio|. Inf where the two overlap in time.
        """
        cfg = self.cfg
        last = self.pos[old]
        h = np.maximum(last[:, 3], 1.0)
        cur = self.pos[young]
        size = np.abs(np.log(np.maximum(cur[None, :, 3], 1.0) / h[:, None]))
        tr_sides, entry = self.sides[old], self.first_sides[young]
        along_y = np.abs(cur[None, :, 1] - last[:, None, 1]) / h[:, None]  # left/right edges
        along_x = np.abs(cur[None, :, 0] - last[:, None, 0]) / h[:, None]  # top/bottom edges
        lr = (tr_sides[:, None] & entry[None, :] & (_LEFT | _RIGHT)) != 0
        tb = (tr_sides[:, None] & entry[None, :] & (_TOP | _BOTTOM)) != 0
        edge_cost = np.where(lr, along_y, np.where(tb, along_x, np.inf)) + size
        # The young track must have been near the lost one's predicted stretch from its first
        # frame on, not only now: a stray box that drifts near the prediction is not it.
        dist = self._stretch_distance(old, np.full(len(young), t), cur[:, :2]) / h[:, None]
        dist_first = self._stretch_distance(old, self.first_t[young], self.first_pos[young]) / h[:, None]
        inside = np.maximum(dist, dist_first) + size
        # Lost inside the picture (hidden): it shows again where its motion model says, or not at all.
        inside = np.where(inside <= cfg.hidden_reentry_max_cost, inside, np.inf)
        cost = np.where((tr_sides != 0)[:, None], edge_cost, inside)
        if self.hist_ok[old].any() and self.hist_ok[young].any():
            cost = cost + colour_cost(cfg.appearance_weight, self.hist[old], self.hist_ok[old],
                                      self.hist[young], self.hist_ok[young])
        cost = cost + 1e-4 * (t - self.last_t[old])[:, None]  # ties: the most recently seen
        if cfg.reentry_gap is not None:
            cost = np.where(self.first_t[young][None] - self.last_t[old][:, None] - 1 > cfg.reentry_gap, np.inf, cost)
        return np.where(self.last_t[old][:, None] < self.first_t[young][None], cost, np.inf)

    def _merge(self, old: int, young: int, hidden: bool = False) -> None:
        """Append track `young`'s observations and state to `old` (a person came back);
        `hidden`: it never left the picture, so the gap between the two is bridged."""
        for name in ("pos", "vel", "rel", "rel_valid", "last_t", "seg_obs", "sides", "box_ok", "box_jitter"):
            getattr(self, name)[old] = getattr(self, name)[young]
        if self.hist_ok[young]:
            self.hist[old] = self.hist[young] if not self.hist_ok[old] else 0.5 * (self.hist[old] + self.hist[young])
            self.hist_ok[old] = True
        self.obs_bridge[young][0] = bool(hidden)
        self.n_obs[old] += self.n_obs[young]
        self.score_sum[old] += self.score_sum[young]
        self.status[old], self.status[young] = _ACTIVE, _DEAD
        self.n_obs[young] = 0
        self.obs_t[old] += self.obs_t[young]
        self.obs_det[old] += self.obs_det[young]
        self.obs_new_segment[old] += self.obs_new_segment[young]
        self.obs_bridge[old] += self.obs_bridge[young]
        self.obs_t[young], self.obs_det[young], self.obs_new_segment[young], self.obs_bridge[young] = [], [], [], []

    def _observe(self, tracks, det_global_local, det_boxes, det_xy, det_valid, det_scores, t, offset, new_segment,
                 app=None):
        """Filter update of `tracks` with their detections (indices local to this frame);
        `app`: (histograms, valid, clean weight) of those detections for the colour cue."""
        cfg = self.cfg
        box_z = _to_cxcywh(det_boxes)
        rel, rel_valid, box_ok = self.rel[tracks], self.rel_valid[tracks], self.box_ok[tracks]
        seg = np.zeros(len(tracks), dtype=np.int64) if new_segment else self.seg_obs[tracks]
        restart = seg == 0
        dt = np.maximum(t - self.last_t[tracks], 1)[:, None].astype(np.float64)
        prior = self.pos[tracks]
        pred = prior + self.vel[tracks] * np.minimum(dt, cfg.max_gap + 1)
        r = box_z - pred
        # A partly hidden person's box is only its visible part: measure the centre's motion
        # on the keypoints seen in both (robust to occlusion) and keep the size unless the
        # detection shows (nearly) every point the track knows.
        common = det_valid & rel_valid
        n_common = common.sum(1)
        shift = det_xy - (pred[:, None, :2] + rel)
        kp_r = np.where(common[..., None], shift, 0.0).sum(1) / np.maximum(n_common, 1)[:, None]
        use_kp = n_common >= 3
        r[:, :2] = np.where(use_kp[:, None], kp_r, r[:, :2])
        complete = n_common >= 0.8 * rel_valid.sum(1)
        r[:, 2:] = np.where(complete[:, None] | ~use_kp[:, None], r[:, 2:], 0.0)
        z = pred + r
        pos = np.where(restart[:, None], z, pred + cfg.alpha * r)
        second = seg == 1
        vel = np.where(second[:, None], (z - prior) / dt, self.vel[tracks] + cfg.beta * r / dt)
        vel = np.where(restart[:, None], 0.0, vel)
        # Size is a random walk, not extrapolated: box size jitters with arm poses and partial
        # views, and a size velocity coasting through a gap blows up.
        vel[:, 2:] = 0.0
        pos[:, 2:] = np.maximum(pos[:, 2:], 1.0)
        # The box model (centre and size) of a track born half out of the frame comes from a
        # cut box; the keypoints only move it. Once a whole box is seen, take centre and size
        # from it (keypoints keep their place), and keep pulling the centre gently towards the
        # box centre, so the predicted box stays where the detector puts boxes.
        sides = _sides(det_boxes, self.height, self.width, cfg.edge_margin)
        whole = (sides == 0) & (complete | ~use_kp)
        if not restart.all():
            jit = np.abs(np.log(np.maximum(box_z[:, 2:], 1.0) / np.maximum(pred[:, 2:], 1.0))).sum(1)
            upd = whole & ~restart & box_ok
            jitter = self.box_jitter[tracks]
            self.box_jitter[tracks] = np.where(upd, 0.8 * jitter + 0.2 * jit, jitter)
        gain = np.where(box_ok, 0.2, 1.0)[:, None]
        moved = np.where(whole[:, None], gain * (box_z[:, :2] - pos[:, :2]), 0.0)
        pos[:, :2] += moved
        pos[:, 2:] = np.where((whole & ~box_ok)[:, None], box_z[:, 2:], pos[:, 2:])
        self.box_ok[tracks] = box_ok | whole
        self.pos[tracks] = pos
        self.vel[tracks] = vel
        self.rel[tracks] = np.where(det_valid[..., None], det_xy - pos[:, None, :2], rel - moved[:, None])
        self.rel_valid[tracks] = rel_valid | det_valid
        self.last_t[tracks] = t
        self.n_obs[tracks] += 1
        self.seg_obs[tracks] = seg + 1
        self.score_sum[tracks] += det_scores
        self.sides[tracks] = sides
        if new_segment:
            self.first_pos[tracks] = pos[:, :2]
        if app is not None:
            hists, ok, clean = app
            rate = cfg.appearance_rate * np.where(clean > 0.7, clean, 0.0)
            first = ok & ~self.hist_ok[tracks] & (clean > 0.7)
            old = self.hist[tracks]
            blend = (1 - rate)[:, None] * old + rate[:, None] * hists
            self.hist[tracks] = np.where(first[:, None], hists, np.where((ok & self.hist_ok[tracks])[:, None], blend, old))
            self.hist_ok[tracks] |= first
        for k, d in zip(tracks.tolist(), det_global_local.tolist()):
            self.obs_t[k].append(t)
            self.obs_det[k].append(d + offset)
            self.obs_new_segment[k].append(bool(new_segment))
            self.obs_bridge[k].append(False)

    # ---- whole video ---------------------------------------------------------------
    def finish(self) -> TrackingResult:
        """Prune, bridge, smooth and order the tracks of all frames seen so far."""
        kps = np.concatenate(self._frames_kp) if self._frames_kp else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        boxes = np.concatenate(self._frames_box) if self._frames_box else np.zeros((0, 4), np.float32)
        scores = np.concatenate(self._frames_score) if self._frames_score else np.zeros(0, np.float32)
        return _assemble(self, kps, boxes, scores, [len(b) for b in self._frames_box])


def _assemble(tr: Tracker, kps: np.ndarray, boxes: np.ndarray, scores: np.ndarray, counts: list[int]) -> TrackingResult:
    cfg, num_t = tr.cfg, tr.t
    k_points = kps.shape[1] if kps.ndim == 3 else NUM_KEYPOINTS
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # A track counts once confirmed (its own requirement, capped at the video length).
    keep = [k for k in range(tr.n) if len(tr.obs_t[k]) and len(tr.obs_t[k]) >= min(int(tr.need[k]), max(num_t, 1))]
    if cfg.max_tracks is not None and len(keep) > cfg.max_tracks:
        # The longest tracks win; ties: higher mean score, then the earlier start.
        keep.sort(key=lambda k: (-len(tr.obs_t[k]), -tr.score_sum[k] / len(tr.obs_t[k]), tr.obs_t[k][0], k))
        keep = sorted(keep[: cfg.max_tracks])
    m = len(keep)

    det_global = np.full((m, num_t), -1, dtype=np.int64)
    for i, k in enumerate(keep):
        det_global[i, tr.obs_t[k]] = tr.obs_det[k]
    observed = det_global >= 0
    out_kp = np.zeros((m, num_t, k_points, 3), dtype=np.float32)
    out_box = np.full((m, num_t, 4), np.nan, dtype=np.float32)
    out_kp[observed] = kps[det_global[observed]]
    out_box[observed] = boxes[det_global[observed]]

    # Bridge gaps closed by normal matching (<= max_gap missed frames); not re-entries.
    gm, gt, g0, g1, gw = [], [], [], [], []
    for i, k in enumerate(keep):
        ts = np.asarray(tr.obs_t[k])
        if len(ts) < 2:
            continue
        d = np.diff(ts)
        gap = np.flatnonzero((d > 1) & (((d <= cfg.max_gap + 1) & ~np.asarray(tr.obs_new_segment[k][1:]))
                                        | np.asarray(tr.obs_bridge[k][1:])))
        if len(gap) == 0:
            continue
        lens = d[gap] - 1
        start = np.repeat(ts[gap], lens)
        end = np.repeat(ts[gap + 1], lens)
        step = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) + 1
        gm.append(np.full(len(step), i))
        gt.append(start + step)
        g0.append(start)
        g1.append(end)
        gw.append(step / (end - start))
    present = observed.copy()
    if gm:
        gm, gt, g0, g1 = (np.concatenate(a) for a in (gm, gt, g0, g1))
        w = np.concatenate(gw).astype(np.float32)
        i0, i1 = det_global[gm, g0], det_global[gm, g1]
        out_box[gm, gt] = (1 - w)[:, None] * boxes[i0] + w[:, None] * boxes[i1]
        a, b = kps[i0], kps[i1]
        both = (a[..., 2] > 0) & (b[..., 2] > 0)
        xy = (1 - w)[:, None, None] * a[..., :2] + w[:, None, None] * b[..., :2]
        conf = np.minimum(a[..., 2], b[..., 2])
        out_kp[gm, gt] = np.where(both[..., None], np.concatenate([xy, conf[..., None]], -1), 0.0)
        present[gm, gt] = True

    if cfg.smoothing > 0 and m:
        _smooth(out_kp, out_box, present, cfg.smoothing)

    # Deterministic order: left to right where all tracks are first present together,
    # else by first appearance then x.
    cx = (out_box[..., 0] + out_box[..., 2]) * 0.5
    if m:
        together = np.flatnonzero(present.all(0))
        if len(together):
            order = np.argsort(cx[:, together[0]], kind="stable")
        else:
            first = present.argmax(1)
            order = np.lexsort((cx[np.arange(m), first], first))
    else:
        order = np.zeros(0, dtype=np.int64)
    local = np.where(observed, det_global - offsets[:num_t][None], -1)

    tracks = PoseTracks(
        keypoints=torch.from_numpy(np.ascontiguousarray(out_kp[order])),
        boxes=torch.from_numpy(np.ascontiguousarray(out_box[order])),
        present=torch.from_numpy(np.ascontiguousarray(present[order])),
        height=tr.height, width=tr.width, track_ids=list(range(m)),
    )
    return TrackingResult(tracks, torch.from_numpy(np.ascontiguousarray(local[order])),
                          torch.from_numpy(np.ascontiguousarray(observed[order])))


def _smooth(kp: np.ndarray, box: np.ndarray, present: np.ndarray, s: float) -> None:
    """Zero-phase (forward then backward) exponential smoothing in place, restarting at every
    absent frame or missing keypoint so nothing is pulled across a gap."""
    a = 1.0 - s
    for data, valid in ((kp[..., :2], np.broadcast_to((kp[..., 2] > 0)[..., None], kp[..., :2].shape)),
                        (box, np.broadcast_to(present[..., None], box.shape))):
        num_t = data.shape[1]
        for steps in (range(num_t), range(num_t - 1, -1, -1)):
            state, state_ok = None, None
            for t in steps:
                x, ok = data[:, t], valid[:, t]
                if state is None:
                    state, state_ok = x.copy(), ok.copy()
                else:
                    state = np.where(ok & state_ok, a * x + (1 - a) * state, x)
                    state_ok = ok.copy()
                data[:, t] = np.where(ok, state, x)


def _check_sequence(seq: PoseSequence) -> None:
    if not isinstance(seq, PoseSequence):
        raise AnyCrowdError(
            f"track_people needs a PoseSequence (per-frame detections), got {type(seq).__name__}."
        )
    for t, f in enumerate(seq.frames):
        if not isinstance(f, FramePoses):
            raise AnyCrowdError(f"Frame {t} of the pose sequence is a {type(f).__name__}, not FramePoses.")
        p = f.boxes.shape[0] if f.boxes.dim() == 2 else -1
        if (f.boxes.dim() != 2 or f.boxes.shape[1] != 4 or f.keypoints.dim() != 3
                or tuple(f.keypoints.shape[1:]) != (NUM_KEYPOINTS, 3) or f.keypoints.shape[0] != p
                or tuple(f.scores.shape) != (p,)):
            raise AnyCrowdError(
                f"Frame {t} of the pose sequence has keypoints {tuple(f.keypoints.shape)}, boxes "
                f"{tuple(f.boxes.shape)}, scores {tuple(f.scores.shape)}; expected [P, {NUM_KEYPOINTS}, 3], "
                f"[P, 4], [P] for the P people of the frame (pad missing face/hand points with confidence 0)."
            )


def _check_frames(frames, seq: PoseSequence):
    shape = tuple(frames.shape) if hasattr(frames, "shape") else None
    want = (len(seq.frames), seq.height, seq.width)
    if shape is None or len(shape) != 4 or shape[:3] != want or shape[3] < 3:
        raise AnyCrowdError(
            f"The frames for the colour cue must be [T, H, W, 3] = [{want[0]}, {want[1]}, {want[2]}, 3] like the "
            f"poses, got {shape if shape is not None else type(frames).__name__}: pass the video the poses come from "
            "(or none for pose-only tracking)."
        )
    return frames


def run_tracker(seq: PoseSequence, config: TrackerConfig | None = None, frames=None, **params) -> TrackingResult:
    """Track every person of `seq` and return the tracks with the detection assignment.

    frames: the video `[T, H, W, 3]` (uint8, or 0..1 floats; numpy or torch) for the colour
    cue (used unless the config says appearance=False); None: pose only."""
    _check_sequence(seq)
    tr = Tracker(seq.height, seq.width, config, **params)
    pictures = _check_frames(frames, seq) if frames is not None and tr.cfg.appearance else None
    frames = seq.frames
    counts = [f.num_people for f in frames]
    if frames and sum(counts):
        kps = torch.cat([f.keypoints for f in frames]).float().numpy()
        boxes = torch.cat([f.boxes for f in frames]).float().numpy()
        scores = torch.cat([f.scores for f in frames]).float().numpy()
    else:
        kps = np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        boxes = np.zeros((0, 4), np.float32)
        scores = np.zeros(0, np.float32)
    body = kps[:, :BODY_POINTS]
    boxes64 = boxes.astype(np.float64)
    start = 0
    for t, c in enumerate(counts):
        picture = frame_as_uint8(pictures[t]) if pictures is not None and c else None
        tr._step(body[start:start + c], boxes64[start:start + c], scores[start:start + c], start, picture)
        start += c
    return _assemble(tr, kps, boxes, scores, counts)


def track_people(seq: PoseSequence, *, frames=None, **settings) -> PoseTracks:
    """Per-frame detections -> tracks with stable identities, ordered left to right.

    Bridged frames (a short detector miss inside a track) are interpolated and marked
    present; frames where a person left the picture are absent. `frames`: the video for the
    colour cue (see `run_tracker`). `settings`: any `TrackerConfig` field (`max_gap`,
    `min_track_length`, `smoothing`, `max_tracks`, `max_cost`, `appearance`, ...), its
    defaults otherwise.
    """
    names = {f.name for f in fields(TrackerConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise AnyCrowdError(f"Unknown tracker setting(s) {unknown}; known: {sorted(names)}.")
    cfg = TrackerConfig(**settings)
    return run_tracker(seq, cfg, frames).tracks
