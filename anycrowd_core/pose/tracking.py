"""Identity tracking: per-frame detections (`PoseSequence`) -> `PoseTracks` with stable ids.

Hungarian assignment on predicted-box IoU plus motion-compensated keypoint distance, an
alpha-beta (steady-state Kalman) constant-velocity filter on box centre and size, gaps bridged
by interpolation, exits re-identified on re-entry, short tracks pruned. See docs/pose_tracking.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..errors import AnyCrowdError
from .types import BODY_POINTS, NUM_KEYPOINTS, FramePoses, PoseSequence, PoseTracks

_TENTATIVE_GATE = 0.6  # fraction of max_cost a not-yet-confirmed track may match at
KPT_MIN_CONF = 0.3  # keypoints below this confidence are not used for matching (DWPose's draw threshold)
_ACTIVE, _DORMANT, _DEAD = 0, 1, 2
# Box sides as bits, for "left through the left edge, came back through the left edge".
_LEFT, _TOP, _RIGHT, _BOTTOM = 1, 2, 4, 8


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters (frames, fractions of a person's height, or costs in 0..~1.5).

    max_gap: missed frames a track coasts on its motion prediction and that are bridged by
        interpolation when it is found again (bridged frames count as present).
    min_track_length: tracks observed in fewer frames are dropped (false positives); capped
        at the video length so a one-frame video keeps its people.
    iou_weight, kpt_weight: cost = iou_weight * (1 - IoU(predicted box, detection box))
        + kpt_weight * keypoint distance (mean per-point distance / person height, each
        point clipped at 1).
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
    with np.errstate(invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(iou, nan=0.0)


def keypoint_distance(pred: np.ndarray, pred_valid: np.ndarray, det: np.ndarray, det_valid: np.ndarray,
                      scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised keypoint distance `[A, D]` between predicted body points `[A, K, 2]` and
    detected ones `[D, K, 2]`: mean over points visible in both of min(dist / scale_a, 1).
    Also returns the count of shared points `[A, D]` (distance is 1 where it is 0)."""
    diff = pred[:, None] - det[None]
    dist = np.sqrt((diff * diff).sum(-1)) / scale[:, None, None]
    common = pred_valid[:, None] & det_valid[None]
    count = common.sum(-1)
    total = np.where(common, np.minimum(dist, 1.0), 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0), count


def association_cost(pred_boxes: np.ndarray, pred_kpts: np.ndarray, pred_valid: np.ndarray,
                     det_boxes: np.ndarray, det_kpts: np.ndarray, det_valid: np.ndarray,
                     iou_weight: float, kpt_weight: float, scale: np.ndarray | None = None) -> np.ndarray:
    """Cost `[A, D]` of giving detection d to track a (lower is better, 0 = identical).

    iou_weight * (1 - IoU) + kpt_weight * keypoint_distance, with the keypoint term replaced
    by (1 - IoU) where the two share no confident keypoint. scale `[A]` (person height px)
    normalises distances; default: the predicted box height.
    """
    iou = box_iou(pred_boxes, det_boxes)
    if scale is None:
        scale = pred_boxes[:, 3] - pred_boxes[:, 1]
    scale = np.maximum(scale, 1.0)
    kd, count = keypoint_distance(pred_kpts, pred_valid, det_kpts, det_valid, scale)
    kd = np.where(count > 0, kd, 1.0 - iou)
    return iou_weight * (1.0 - iou) + kpt_weight * kd


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

    update(keypoints [D, 128, 3], boxes [D, 4], scores [D]) (numpy or torch, pixels) returns
    the internal track number given to each detection (-1 = none); `finish()` prunes, bridges,
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
        self.obs_t: list[list[int]] = []
        self.obs_det: list[list[int]] = []
        self.obs_new_segment: list[list[bool]] = []  # True: re-entry / re-identification, not bridged

    # ---- state storage -------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self.pos)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("pos", "vel", "rel", "rel_valid", "last_t", "n_obs", "seg_obs", "first_t", "first_sides",
                     "sides", "status", "score_sum"):
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
    def update(self, keypoints, boxes, scores) -> np.ndarray:
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
        return self._step(kp[:, :BODY_POINTS], bx.astype(np.float64), sc, offset)

    def _step(self, body: np.ndarray, boxes: np.ndarray, scores: np.ndarray, offset: int) -> np.ndarray:
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
        confirmed = self.n_obs[:n] >= cfg.min_track_length
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

        # Stage 1: active tracks vs all usable detections, on the motion prediction.
        active = np.flatnonzero(status == _ACTIVE)
        free_det = np.ones(len(dets), dtype=bool)
        if len(active):
            state, _ = self._predict(active, t)
            # Detector boxes stop at the frame edge: clip the prediction the same way.
            pred_boxes = self._clip(_to_xyxy(state))
            pred_kp = state[:, None, :2] + self.rel[active]
            cost = association_cost(pred_boxes, pred_kp, self.rel_valid[active], det_boxes, det_xy, det_valid,
                                    cfg.iou_weight, cfg.kpt_weight, state[:, 3])
            # Gate on the cost itself; rank with a small penalty per missed frame so a track
            # seen in the last frame wins a tie against one coasting blind through the same
            # place (someone walking behind a person who stands still).
            missed_a = np.minimum(t - self.last_t[active] - 1, cfg.max_gap)
            # (Capped at max_cost so a feasible pair always beats leaving both unmatched.)
            ranked = np.minimum(cost + cfg.coast_penalty * missed_a[:, None], cfg.max_cost)
            # Confirmed tracks choose first; tentative ones (maybe spurious) get what is left.
            confirmed_a = self.n_obs[active] >= cfg.min_track_length
            # A tentative track has no velocity yet and real people move smoothly, so it gets a
            # tighter gate: spurious boxes that pop up near each other do not chain into a track.
            for group, gate in ((np.flatnonzero(confirmed_a), cfg.max_cost),
                                (np.flatnonzero(~confirmed_a), _TENTATIVE_GATE * cfg.max_cost)):
                cand = np.flatnonzero(free_det)
                if len(group) == 0 or len(cand) == 0:
                    continue
                sub = np.ix_(group, cand)
                rows, cols = match_pairs(ranked[sub], cfg.max_cost, feasible=cost[sub] <= gate)
                if len(rows):
                    tr_idx, c = active[group[rows]], cand[cols]
                    self._observe(tr_idx, dets[c], det_boxes[c], det_xy[c], det_valid[c],
                                  scores[dets[c]], t, offset, new_segment=False)
                    assign[dets[c]] = tr_idx
                    free_det[c] = False

        # Stage 2: confident unmatched detections start new (tentative) tracks.
        starters = np.flatnonzero(free_det & (scores[dets] >= cfg.new_track_score))
        if len(starters):
            new = np.arange(n, n + len(starters))
            self._grow(n + len(starters))
            self.n = n + len(starters)
            self.status[new] = _ACTIVE
            self.vel[new] = 0.0
            self.n_obs[new] = 0
            self.seg_obs[new] = 0
            self.score_sum[new] = 0.0
            self.rel_valid[new] = False
            self.first_t[new] = t
            self.first_sides[new] = _sides(det_boxes[starters], self.height, self.width, cfg.edge_margin)
            for _ in new:
                self.obs_t.append([])
                self.obs_det.append([])
                self.obs_new_segment.append([])
            self._observe(new, dets[starters], det_boxes[starters], det_xy[starters], det_valid[starters],
                          scores[dets[starters]], t, offset, new_segment=True)
            assign[dets[starters]] = new

        # Stage 3: a track confirmed in this frame may be a person coming back: one who left
        # through the edge it entered by, or who was lost inside the frame. Checking at
        # confirmation rather than at the first detection lets a half-visible entrant show
        # more of itself first, and keeps short spurious tracks from stealing identities.
        fresh = np.flatnonzero((self.n_obs[: self.n] == cfg.min_track_length) & (self.last_t[: self.n] == t))
        if len(fresh):
            status = self.status[: self.n]
            old_ok = (self.n_obs[: self.n] >= cfg.min_track_length) & (self.last_t[: self.n] < self.first_t[fresh].max())
            exited = (status == _ACTIVE) & (self.sides[: self.n] != 0)
            lost = np.flatnonzero(((status == _DORMANT) | exited) & old_ok)
            if len(lost):
                cost = self._reentry_cost(lost, fresh, t)
                rows, cols = match_pairs(cost, cfg.reentry_max_cost)
                for old, young in zip(lost[rows].tolist(), fresh[cols].tolist()):
                    self._merge(old, young)
                    assign[assign == young] = old
        return assign

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
        state, _ = self._predict(old, t)
        state[:, 0] = np.clip(state[:, 0], 0, self.width)
        state[:, 1] = np.clip(state[:, 1], 0, self.height)
        dist = np.hypot(cur[None, :, 0] - state[:, None, 0], cur[None, :, 1] - state[:, None, 1]) / h[:, None]
        cost = np.where((tr_sides != 0)[:, None], edge_cost, dist + size)
        cost = cost + 1e-4 * (t - self.last_t[old])[:, None]  # ties: the most recently seen
        if cfg.reentry_gap is not None:
            cost = np.where(self.first_t[young][None] - self.last_t[old][:, None] - 1 > cfg.reentry_gap, np.inf, cost)
        return np.where(self.last_t[old][:, None] < self.first_t[young][None], cost, np.inf)

    def _merge(self, old: int, young: int) -> None:
        """Append track `young`'s observations and state to `old` (a person came back)."""
        for name in ("pos", "vel", "rel", "rel_valid", "last_t", "seg_obs", "sides"):
            getattr(self, name)[old] = getattr(self, name)[young]
        self.n_obs[old] += self.n_obs[young]
        self.score_sum[old] += self.score_sum[young]
        self.status[old], self.status[young] = _ACTIVE, _DEAD
        self.n_obs[young] = 0
        self.obs_t[old] += self.obs_t[young]
        self.obs_det[old] += self.obs_det[young]
        self.obs_new_segment[old] += self.obs_new_segment[young]
        self.obs_t[young], self.obs_det[young], self.obs_new_segment[young] = [], [], []

    def _observe(self, tracks, det_global_local, det_boxes, det_xy, det_valid, det_scores, t, offset, new_segment):
        """Filter update of `tracks` with their detections (indices local to this frame)."""
        cfg = self.cfg
        z = _to_cxcywh(det_boxes)
        seg = np.zeros(len(tracks), dtype=np.int64) if new_segment else self.seg_obs[tracks]
        restart = seg == 0
        dt = np.maximum(t - self.last_t[tracks], 1)[:, None].astype(np.float64)
        prior = self.pos[tracks]
        pred = prior + self.vel[tracks] * np.minimum(dt, cfg.max_gap + 1)
        r = z - pred
        # A partly hidden person's box is only its visible part: measure the centre's motion
        # on the keypoints seen in both (robust to occlusion) and keep the size unless the
        # detection shows (nearly) every point the track knows.
        common = det_valid & self.rel_valid[tracks]
        n_common = common.sum(1)
        shift = det_xy - (pred[:, None, :2] + self.rel[tracks])
        kp_r = np.where(common[..., None], shift, 0.0).sum(1) / np.maximum(n_common, 1)[:, None]
        use_kp = n_common >= 3
        r[:, :2] = np.where(use_kp[:, None], kp_r, r[:, :2])
        complete = n_common >= 0.8 * self.rel_valid[tracks].sum(1)
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
        self.pos[tracks] = pos
        self.vel[tracks] = vel
        self.rel[tracks] = np.where(det_valid[..., None], det_xy - pos[:, None, :2], self.rel[tracks])
        self.rel_valid[tracks] |= det_valid
        self.last_t[tracks] = t
        self.n_obs[tracks] += 1
        self.seg_obs[tracks] = seg + 1
        self.score_sum[tracks] += det_scores
        self.sides[tracks] = _sides(det_boxes, self.height, self.width, cfg.edge_margin)
        for k, d in zip(tracks.tolist(), det_global_local.tolist()):
            self.obs_t[k].append(t)
            self.obs_det[k].append(d + offset)
            self.obs_new_segment[k].append(bool(new_segment))

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
    min_len = min(cfg.min_track_length, max(num_t, 1))
    keep = [k for k in range(tr.n) if len(tr.obs_t[k]) >= min_len]
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
        gap = np.flatnonzero((d > 1) & (d <= cfg.max_gap + 1) & ~np.asarray(tr.obs_new_segment[k][1:]))
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


def run_tracker(seq: PoseSequence, config: TrackerConfig | None = None, **params) -> TrackingResult:
    """Track every person of `seq` and return the tracks with the detection assignment."""
    _check_sequence(seq)
    tr = Tracker(seq.height, seq.width, config, **params)
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
    for c in counts:
        tr._step(body[start:start + c], boxes64[start:start + c], scores[start:start + c], start)
        start += c
    return _assemble(tr, kps, boxes, scores, counts)


def track_people(
    seq: PoseSequence,
    *,
    max_gap: int = 8,
    min_track_length: int = 3,
    iou_weight: float = 0.5,
    kpt_weight: float = 1.0,
    smoothing: float = 0.0,
    max_tracks: int | None = None,
    **more,
) -> PoseTracks:
    """Per-frame detections -> tracks with stable identities, ordered left to right.

    Bridged frames (a short detector miss inside a track) are interpolated and marked
    present; frames where a person left the picture are absent. Other settings
    (`max_cost`, `new_track_score`, `reentry_gap`, ...): see `TrackerConfig`.
    """
    names = {f.name for f in fields(TrackerConfig)}
    unknown = sorted(set(more) - names)
    if unknown:
        raise AnyCrowdError(f"Unknown tracker setting(s) {unknown}; known: {sorted(names)}.")
    cfg = TrackerConfig(max_gap=max_gap, min_track_length=min_track_length, iou_weight=iou_weight,
                        kpt_weight=kpt_weight, smoothing=smoothing, max_tracks=max_tracks, **more)
    return run_tracker(seq, cfg).tracks
