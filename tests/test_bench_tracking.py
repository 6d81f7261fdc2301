"""`python -m anycrowd_core.bench.tracking`: the one tracker benchmark reports, for pose only
and with `--colour`, the scores of the tracker it times (the numbers docs/benchmarks.md and
docs/pose_tracking.md quote). Run as a subprocess: the benchmark pins its process to one core."""

import json
import subprocess
import sys
from pathlib import Path

from anycrowd_core.pose.evaluate import score_tracking
from anycrowd_core.pose.scenarios import noisy_crowd
from anycrowd_core.pose.tracking import run_tracker

ROOT = Path(__file__).resolve().parents[1]
PEOPLE, FRAMES, SEED = 3, 16, 2


def _bench(*flags: str) -> dict:
    cmd = [sys.executable, "-m", "anycrowd_core.bench.tracking", "--people", str(PEOPLE), "--frames", str(FRAMES),
           "--repeats", "1", "--seed", str(SEED), "--json", *flags]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout)


def _scores(frames=None) -> tuple[int, int, float]:
    sc = noisy_crowd(SEED, num_people=PEOPLE, num_frames=FRAMES)
    score = score_tracking(sc, run_tracker(sc.sequence, frames=sc.frames() if frames else None))
    return score.id_switches, score.tracks, round(score.coverage, 4)


def test_the_tracking_benchmark_reports_the_timed_trackers_scores_pose_only_and_with_colour():
    out = _bench("--colour")
    assert (out["people"], out["frames"], out["size"]) == (PEOPLE, FRAMES, "832x480")
    for mode, pictures in (("pose_only", False), ("appearance", True)):
        r = out[mode]
        assert (r["id_switches"], r["tracks"], r["coverage"]) == _scores(pictures)
        assert r["fps_median"] > 0 and r["best_s"] <= r["median_s"]
