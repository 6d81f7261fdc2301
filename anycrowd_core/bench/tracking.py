"""Benchmark of the identity tracker alone (no detector): frames per second on one core,
pose only, and with `--colour` also with the colour cue (torso histograms from the frames).

    python -m anycrowd_core.bench.tracking --people 9 --frames 2000 --json
    python -m anycrowd_core.bench.tracking --colour --frames 300 --repeats 5 --json

Input: the `noisy_crowd` scenario at 832x480 (dancers side by side, keypoint noise, dropped
and spurious detections); with `--colour` its rendered pictures (uint8, made before timing).
Threads (numpy, torch, OpenCV) are limited to 1 and the process is pinned to one core where
the OS allows it. Reports, per mode, the median and best of `--repeats` runs of
`run_tracker` and the identity switches, tracks and coverage of the last run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch/OpenCV load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import torch  # noqa: E402

from ..pose.evaluate import score_tracking  # noqa: E402
from ..pose.scenarios import noisy_crowd  # noqa: E402
from ..pose.tracking import run_tracker  # noqa: E402


def _pin() -> int | None:
    """One thread everywhere and, where the OS allows it, one core; returns the core."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        try:
            cpu = min(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpu})
            return cpu
        except OSError:
            pass
    return None


def _time_tracker(scenario, pictures, frames: int, repeats: int) -> dict:
    """Timings and tracking scores of `repeats` runs on the scenario (pictures None = pose only)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_tracker(scenario.sequence, frames=pictures)
        times.append(time.perf_counter() - start)
    score = score_tracking(scenario, result)
    best, median = min(times), statistics.median(times)
    return {
        "median_s": round(median, 4), "best_s": round(best, 4),
        "fps_median": round(frames / median, 1), "fps_best": round(frames / best, 1),
        "us_per_frame": round(1e6 * median / frames, 1),
        "id_switches": score.id_switches, "tracks": score.tracks, "coverage": round(score.coverage, 4),
    }


def run(people: int = 9, frames: int = 2000, repeats: int = 3, seed: int = 0, colour: bool = False) -> dict:
    """Time the tracker on a `people` x `frames` crowd at 832x480: "pose_only" always,
    "appearance" (with the rendered pictures) when `colour`; returns the numbers."""
    pinned = _pin()
    start = time.perf_counter()
    sc = noisy_crowd(seed, num_people=people, num_frames=frames)
    build_s = time.perf_counter() - start
    out = {"people": people, "frames": frames, "size": "832x480", "repeats": repeats, "pinned_cpu": pinned,
           "detections": sum(f.num_people for f in sc.sequence.frames), "scenario_build_s": round(build_s, 2)}
    out["pose_only"] = _time_tracker(sc, None, frames, repeats)
    if colour:
        out["appearance"] = _time_tracker(sc, sc.frames(), frames, repeats)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Identity tracker throughput on one CPU core, pose only and "
                                             "(--colour) with the colour cue.")
    ap.add_argument("--people", type=int, default=9)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colour", action="store_true", help="also time the tracker with the rendered pictures")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.people, args.frames, args.repeats, args.seed, args.colour)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['people']} people, {out['frames']} frames at {out['size']}, {out['detections']} detections, "
          f"median of {out['repeats']} (pinned cpu {out['pinned_cpu']})")
    for label in ("pose_only", "appearance"):
        if label in out:
            r = out[label]
            print(f"  {label:10s}: {r['fps_median']:8.1f} frames/s (best {r['fps_best']:.1f}), "
                  f"{r['us_per_frame']:.0f} us/frame, {r['id_switches']} identity switches, {r['tracks']} tracks, "
                  f"coverage {r['coverage']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
