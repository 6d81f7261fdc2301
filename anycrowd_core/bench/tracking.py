"""Benchmark of the identity tracker alone (no detector): frames per second on one core.

    python -m anycrowd_core.bench.tracking --people 9 --frames 2000 --json

Input: the `noisy_crowd` scenario (dancers side by side, keypoint noise, dropped and spurious
detections). Threads are limited to 1 and the process is pinned to one core where the OS
allows it. Reports the median of `--repeats` runs of `run_tracker` and its identity switches.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from ..pose.evaluate import score_tracking  # noqa: E402
from ..pose.scenarios import noisy_crowd  # noqa: E402
from ..pose.tracking import run_tracker  # noqa: E402


def run(people: int = 9, frames: int = 2000, repeats: int = 3, seed: int = 0) -> dict:
    """Time the tracker on a `people` x `frames` crowd; returns the numbers as a dict."""
    torch.set_num_threads(1)
    pinned = None
    if hasattr(os, "sched_setaffinity"):
        try:
            cpu = min(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpu})
            pinned = cpu
        except OSError:
            pass
    start = time.perf_counter()
    sc = noisy_crowd(seed, num_people=people, num_frames=frames)
    build_s = time.perf_counter() - start
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_tracker(sc.sequence)
        times.append(time.perf_counter() - start)
    score = score_tracking(sc, result)
    best, median = min(times), statistics.median(times)
    return {
        "people": people, "frames": frames, "detections": sum(f.num_people for f in sc.sequence.frames),
        "repeats": repeats, "median_s": round(median, 4), "best_s": round(best, 4),
        "fps_median": round(frames / median, 1), "fps_best": round(frames / best, 1),
        "us_per_frame": round(1e6 * median / frames, 1), "pinned_cpu": pinned,
        "id_switches": score.id_switches, "tracks": score.tracks, "coverage": round(score.coverage, 4),
        "scenario_build_s": round(build_s, 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Identity tracker throughput on one CPU core.")
    ap.add_argument("--people", type=int, default=9)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.people, args.frames, args.repeats, args.seed)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
