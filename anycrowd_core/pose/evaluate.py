"""Identity-tracking evaluation on the scenarios of `scenarios.py`, over several seeds.

    python -m anycrowd_core.pose.evaluate [--seeds 10] [--seed 0] [--only NAME ...]
                                          [--appearance on|off|both] [--json]

Prints per scenario, summed over the seeds, the identity switches (MOT-style IDSW),
fragmentations, missed and false tracks, IDF1 and coverage, then the totals and the identity
switches per 1,000 person-frames; exit code 0. Definitions: docs/pose_tracking.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import AnyCrowdError, command_main
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
    idf1: float = 0.0
    person_frames: int = 0
    idtp: int = 0
    id_true: int = 0
    id_pred: int = 0


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
    idtp, id_true, id_pred = _id_matches(who, present, scenario.in_frame)
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
        idf1=2 * idtp / max(id_true + id_pred, 1), person_frames=int(in_pic), idtp=idtp,
        id_true=id_true, id_pred=id_pred,
    )


def _id_matches(who: np.ndarray, present: np.ndarray, in_frame: np.ndarray) -> tuple[int, int, int]:
    """IDF1's counts (Ristani et al. 2016): identity-true-positive frames under the best
    one-to-one track <-> identity matching, in-picture identity frames, present track frames.
    A track frame counts for identity g where it observed g's detection, or bridges a gap
    between two detections of g."""
    m, num_t = who.shape
    n = in_frame.shape[0]
    if m == 0 or n == 0:
        return 0, int(in_frame.sum()), int(present.sum())
    hits = np.zeros((m, n), dtype=np.int64)
    for k in range(m):
        label = np.where(who[k] >= 0, who[k], -1)
        obs_t = np.flatnonzero(who[k] >= -1)
        for a, b in zip(obs_t[:-1], obs_t[1:]):
            if b - a > 1 and who[k, a] == who[k, b] >= 0 and present[k, a + 1:b].all():
                label[a + 1:b] = who[k, a]
        good = label >= 0
        np.add.at(hits[k], label[good], 1)
    rows, cols = linear_sum_assignment(-hits)
    return int(hits[rows, cols].sum()), int(in_frame.sum()), int(present.sum())


@dataclass
class ScenarioSummary(TrackingScore):
    """A TrackingScore summed over `seeds` runs (IDF1 and coverage pooled over all frames);
    seeds_with_switches: the runs with at least one identity switch."""

    seeds: int = 1
    seeds_with_switches: int = 0


SUMMED = ("identities", "tracks", "frames", "id_switches", "track_swaps", "fragmentations", "missed_tracks",
          "false_tracks", "false_detections_kept", "person_frames", "idtp", "id_true", "id_pred")


def summarize(name: str, runs: list[TrackingScore] | list[ScenarioSummary]) -> ScenarioSummary:
    """Counts summed over `runs`, IDF1 and coverage pooled over all their frames (runs may be
    seeds of one scenario, or scenario summaries for the grand total)."""
    sums = {f: sum(getattr(r, f) for r in runs) for f in SUMMED}
    return ScenarioSummary(
        name=name, seeds=len(runs), **sums,
        seeds_with_switches=sum(r.id_switches > 0 for r in runs),
        idf1=2 * sums["idtp"] / max(sums["id_true"] + sums["id_pred"], 1),
        coverage=sum(r.coverage * r.person_frames for r in runs) / max(sums["person_frames"], 1),
        seconds=round(sum(r.seconds for r in runs), 4),
    )


def evaluate(names=None, seed: int = 0, config: TrackerConfig | None = None, *, seeds: int = 1,
             appearance: bool = False) -> list[TrackingScore]:
    """Run the tracker on each named scenario (all by default) for seeds `seed .. seed+seeds-1`
    and score every run; `appearance` also gives the tracker the scenario's pictures."""
    out = []
    for name in names or list(SCENARIOS):
        for s in range(seed, seed + seeds):
            sc = make_scenario(name, s)
            frames = sc.frames() if appearance else None
            start = time.perf_counter()
            result = run_tracker(sc.sequence, config, frames=frames)
            elapsed = time.perf_counter() - start
            score = score_tracking(sc, result)
            score.seconds = round(elapsed, 4)
            out.append(score)
    return out


def summarize_all(scores: list[TrackingScore]) -> list[ScenarioSummary]:
    names = list(dict.fromkeys(s.name for s in scores))
    return [summarize(n, [s for s in scores if s.name == n]) for n in names]


def format_table(scores: list[TrackingScore] | list[ScenarioSummary]) -> str:
    rows_in = summarize_all(scores) if scores and isinstance(scores[0], TrackingScore) else list(scores)
    head = ("scenario", "seeds", "ids", "tracks", "frames", "IDSW", "swaps", "frag", "missed", "false", "FP kept",
            "IDF1", "coverage")
    rows = [head] + [
        (s.name, s.seeds, s.identities, s.tracks, s.frames, s.id_switches, s.track_swaps, s.fragmentations,
         s.missed_tracks, s.false_tracks, s.false_detections_kept, f"{100 * s.idf1:.1f}%", f"{100 * s.coverage:.1f}%")
        for s in rows_in
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(r)) for r in rows]
    total = summarize("total", rows_in)
    pf = total.person_frames
    worst = min((s.coverage for s in rows_in), default=1.0)
    lines.append(f"total identity switches: {total.id_switches}")
    lines.append(f"person-frames: {pf}; identity switches per 1,000 person-frames: "
                 f"{1000 * total.id_switches / max(pf, 1):.2f}; IDF1 {100 * total.idf1:.2f}%; "
                 f"coverage {100 * total.coverage:.2f}% (lowest scenario {100 * worst:.1f}%)")
    return "\n".join(lines)


@command_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per scenario (seed .. seed+seeds-1)")
    ap.add_argument("--only", nargs="*", help=f"scenario names ({', '.join(SCENARIOS)})")
    ap.add_argument("--appearance", choices=("off", "on", "both"), default="off",
                    help="give the tracker the rendered pictures (its colour cue): off, on, or both tables")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        raise AnyCrowdError(f"--seeds must be at least 1, got {args.seeds}")
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.appearance]
    results = {m: evaluate(args.only, args.seed, seeds=args.seeds, appearance=m) for m in modes}
    if args.json:
        print(json.dumps({("appearance" if m else "pose_only"): [asdict(s) for s in summarize_all(r)]
                          for m, r in results.items()}, indent=1))
    else:
        for m, r in results.items():
            if len(modes) > 1:
                print("with appearance (rendered pictures)" if m else "pose only")
            print(format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
