"""Tracker speed with and without the colour cue: frames per second on one core.

    python -m anycrowd_core.pose.bench_tracking [--people 9] [--frames 300] [--repeats 3] [--json]

Input: the `noisy_crowd` scenario at 832x480 (dancers side by side, keypoint noise, dropped and
spurious detections) and its rendered pictures (uint8, made before timing). Threads are limited
to 1 and the process is pinned to one core where the OS allows it. Prints the median of
`--repeats` runs of `run_tracker` for pose only and with the pictures (torso histograms from
the frames), and the identity switches of each.
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

from .evaluate import score_tracking  # noqa: E402
from .scenarios import noisy_crowd  # noqa: E402
from .tracking import run_tracker  # noqa: E402


def _pin() -> int | None:
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


def run(people: int = 9, frames: int = 300, repeats: int = 3, seed: int = 0) -> dict:
    """Time the tracker on a `people` x `frames` crowd at 832x480; returns the numbers."""
    pinned = _pin()
    sc = noisy_crowd(seed, num_people=people, num_frames=frames)
    pictures = sc.frames()
    out = {"people": people, "frames": frames, "size": "832x480", "repeats": repeats, "pinned_cpu": pinned,
           "detections": sum(f.num_people for f in sc.sequence.frames)}
    for label, pics in (("pose_only", None), ("appearance", pictures)):
        times, result = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            result = run_tracker(sc.sequence, frames=pics)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        score = score_tracking(sc, result)
        out[label] = {"fps_median": round(frames / median, 1), "fps_best": round(frames / min(times), 1),
                      "us_per_frame": round(1e6 * median / frames, 1), "id_switches": score.id_switches,
                      "coverage": round(score.coverage, 4)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Identity tracker throughput on one CPU core, with and without colour.")
    ap.add_argument("--people", type=int, default=9)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.people, args.frames, args.repeats, args.seed)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['people']} people, {out['frames']} frames at {out['size']}, {out['detections']} detections, "
              f"median of {out['repeats']} (pinned cpu {out['pinned_cpu']})")
        for label in ("pose_only", "appearance"):
            r = out[label]
            print(f"  {label:10s}: {r['fps_median']:8.1f} frames/s (best {r['fps_best']:.1f}), "
                  f"{r['us_per_frame']:.0f} us/frame, {r['id_switches']} identity switches, coverage {r['coverage']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
