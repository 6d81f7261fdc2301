"""Identity-tracking evaluation on the scenarios of `scenarios.py`.

    python -m anycrowd_core.pose.evaluate [--json] [--seed 0] [--only NAME ...]

Prints per scenario the identity switches (MOT-style IDSW), fragmentations, missed and
false tracks and coverage; exit code 0. Definitions: docs/pose_tracking.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import AnyCrowdError
from .scenarios import SCENARIOS, Scenario, make_scenario
from .tracking import TrackerConfig, TrackingResult, run_tracker


@dataclass
class TrackingScore:
    """Counts for one scenario (all 0 is perfect except identities/tracks/coverage).

    id_switches: times an identity's detections move to a different track than the last
        one that held them (MOT IDSW; counted on frames with a detection of it).
    track_swaps: times a track's detections change from one real identity to another (the
        same errors seen from the tracks; a crossing swap counts on both sides). False
        positives picked up on the way are counted in false_detections_kept instead.
    fragmentations: times an identity's coverage stops and resumes while it stays in the
        picture (covered = its detection is on a track, or a track bridges the frame between
        two of its detections).
    missed_tracks: identities covered in fewer than half of their in-picture frames.
    false_tracks: output tracks whose detections are mostly false positives.
    false_detections_kept: false-positive detections that ended up on an output track.
    coverage: covered / in-picture identity frames.
    """

    name: str
    identities: int
    tracks: int
    frames: int
    id_switches: int
    track_swaps: int
    fragmentations: int
    missed_tracks: int
    false_tracks: int
    false_detections_kept: int
    coverage: float
    seconds: float


def score_tracking(scenario: Scenario, result: TrackingResult) -> TrackingScore:
    """Compare a tracker result with the scenario's true identities."""
    det = result.detection_index.numpy()
    present = result.tracks.present.numpy()
    m, num_t = det.shape
    n = scenario.num_identities
    # who[m, t]: identity of the detection track m observed (-1 FP, -2 nothing)
    who = np.full((m, num_t), -2, dtype=np.int64)
    for t in range(num_t):
        obs = det[:, t] >= 0
        who[obs, t] = scenario.identities[t][det[obs, t]]

    id_switches = 0
    covered = np.zeros((n, num_t), dtype=bool)
    for g in range(n):
        last = None
        for t in range(num_t):
            holders = np.flatnonzero(who[:, t] == g)
            if len(holders):
                if last is not None and holders[0] != last:
                    id_switches += 1
                last = holders[0]
                covered[g, t] = True
    track_swaps = 0
    false_tracks = 0
    for k in range(m):
        seen = who[k][who[k] >= -1]
        real = seen[seen >= 0]
        track_swaps += int((real[1:] != real[:-1]).sum())
        if len(seen) and (seen == -1).mean() > 0.5:
            false_tracks += 1
        # Bridged frames cover an identity when the same identity is observed on both sides.
        obs_t = np.flatnonzero(who[k] >= -1)
        for a, b in zip(obs_t[:-1], obs_t[1:]):
            if b - a > 1 and who[k, a] == who[k, b] >= 0 and present[k, a + 1:b].all():
                covered[who[k, a], a + 1:b] = True
    fragmentations = 0
    missed = 0
    for g in range(n):
        inside = scenario.in_frame[g]
        c = covered[g][inside]
        if len(c):
            fragmentations += int(((c[1:].astype(int) - c[:-1].astype(int)) == 1).sum()) if c[0] else \
                max(int(((c[1:].astype(int) - c[:-1].astype(int)) == 1).sum()) - 1, 0)
            if c.mean() < 0.5:
                missed += 1
    in_pic = scenario.in_frame.sum()
    return TrackingScore(
        name=scenario.name, identities=n, tracks=m, frames=num_t, id_switches=id_switches,
        track_swaps=track_swaps, fragmentations=fragmentations, missed_tracks=missed,
        false_tracks=false_tracks, false_detections_kept=int((who == -1).sum()),
        coverage=float(covered[scenario.in_frame].sum() / max(in_pic, 1)), seconds=0.0,
    )


def evaluate(names=None, seed: int = 0, config: TrackerConfig | None = None) -> list[TrackingScore]:
    """Run the tracker on each named scenario (all by default) and score it."""
    out = []
    for name in names or list(SCENARIOS):
        sc = make_scenario(name, seed)
        start = time.perf_counter()
        result = run_tracker(sc.sequence, config)
        elapsed = time.perf_counter() - start
        s = score_tracking(sc, result)
        s.seconds = round(elapsed, 4)
        out.append(s)
    return out


def format_table(scores: list[TrackingScore]) -> str:
    head = ("scenario", "ids", "tracks", "frames", "IDSW", "swaps", "frag", "missed", "false", "FP kept", "coverage")
    rows = [head] + [
        (s.name, s.identities, s.tracks, s.frames, s.id_switches, s.track_swaps, s.fragmentations,
         s.missed_tracks, s.false_tracks, s.false_detections_kept, f"{100 * s.coverage:.1f}%")
        for s in scores
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(r)) for r in rows]
    total = sum(s.id_switches for s in scores)
    lines.append(f"total identity switches: {total}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help=f"scenario names ({', '.join(SCENARIOS)})")
    args = ap.parse_args(argv)
    try:
        scores = evaluate(args.only, args.seed)
    except AnyCrowdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(s) for s in scores], indent=1))
    else:
        print(format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
