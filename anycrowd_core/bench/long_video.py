"""Benchmark of the long-video samplers: time and peak memory against video length.

    python -m anycrowd_core.bench.long_video --json

For each strategy (token_replace, sliding_window) and each length (2, 4, 6, 8 token-replace
segments of 81 frames: 157, 309, 461, 613 frames) one fresh subprocess (threads=1 by
default) warms up on a short clip, then animates the full length with the tiny random
demo model and the test codec, recording wall and process CPU time (the CPU time is less
disturbed by other load on a shared machine) and peak RSS. Results: docs/long_video.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

from ..long_video import DEFAULT_OVERLAP, STRATEGIES
from .attention import _rss_kib, probe_or_run


def _frames_for(segments: int, segment_frames: int, overlap: int) -> int:
    """Video length that token replace splits into exactly `segments` full segments."""
    return segment_frames + (segments - 1) * (segment_frames - overlap)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS (VmHWM) := current RSS


class _MemoryProbe(nn.Module):
    """Wraps the model: tracks the process's peak RSS over the whole run and, separately,
    the largest RSS growth during one model call (what one segment/window costs on the
    device: activations), resetting the kernel's peak counter around each call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.peak_kib = _rss_kib("VmHWM")
        self.call_peak_kib = 0
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.peak_kib = max(self.peak_kib, _rss_kib("VmHWM"))
        before = _rss_kib("VmRSS")
        _reset_peak()
        out = self.inner(*args, **kwargs)
        hwm = _rss_kib("VmHWM")
        self.call_peak_kib = max(self.call_peak_kib, hwm - before)
        self.peak_kib = max(self.peak_kib, hwm)
        self.calls += 1
        return out


def _inputs(num_frames: int, height: int, width: int, identities: int):
    """A procedural scene of 81 frames played forwards and backwards to `num_frames`."""
    from ..pipeline import AnimationInputs
    from ..scenes import make_scene

    period = 81
    scene = make_scene(num_characters=identities, num_frames=period, height=height, width=width, seed=0)
    p = torch.arange(num_frames) % (2 * (period - 1))
    idx = torch.where(p < period, p, 2 * (period - 1) - p)
    return AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video[idx].contiguous(),
                           scene.track_boxes[:, idx].contiguous())


def _probe(args) -> dict:
    """One strategy at one length, inside a fresh process."""
    from ..codec import TestCodec
    from ..demo import demo_model
    from ..long_video_sampling import animate_long
    from ..pipeline import SamplingSettings

    torch.set_num_threads(args.threads)
    model = demo_model(seed=0)
    text = torch.randn(1, 8, model.config.text_dim, generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings(steps=args.steps, cfg=1.0, mode=args.mode, seed=0)
    kwargs = dict(strategy=args.probe, segment_frames=args.segment_frames, overlap_frames=args.overlap)
    with torch.no_grad():
        animate_long(model, TestCodec(), _inputs(9, args.height, args.width, args.identities), text, None, settings,
                     **kwargs)  # kernels, allocator and lazy imports warm
    inputs = _inputs(args.frames, args.height, args.width, args.identities)
    base = _rss_kib("VmRSS")
    _reset_peak()
    probe = _MemoryProbe(model)
    t0, c0 = time.perf_counter(), time.process_time()
    result = animate_long(probe, TestCodec(), inputs, text, None, settings, **kwargs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = max(probe.peak_kib, _rss_kib("VmHWM"))
    out_bytes = result.frames.numel() * result.frames.element_size()
    growth = (peak - base) * 1024
    return {
        "strategy": args.probe, "frames": args.frames, "units": len(result.plan), "time_s": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "model_calls": probe.calls, "peak_rss_growth_bytes": growth, "output_bytes": out_bytes,
        "working_bytes": growth - out_bytes, "model_call_peak_bytes": probe.call_peak_kib * 1024,
        "process_peak_rss_bytes": peak * 1024,
    }


def _run_probe(args, strategy: str, frames: int) -> dict:
    cmd = [sys.executable, "-m", "anycrowd_core.bench.long_video", "--probe", strategy, "--frames", str(frames),
           "--height", str(args.height), "--width", str(args.width), "--steps", str(args.steps),
           "--mode", args.mode, "--identities", str(args.identities), "--threads", str(args.threads),
           "--segment-frames", str(args.segment_frames)]
    if args.overlap is not None:
        cmd += ["--overlap", str(args.overlap)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"probe {strategy} at {frames} frames failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = a x + b and its coefficient of determination R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    b = my - a * mx
    ss_res = sum((y - (a * x + b)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope_s_per_frame": a, "intercept_s": b, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def run(args) -> dict:
    out = {"settings": {"height": args.height, "width": args.width, "steps": args.steps, "mode": args.mode,
                        "identities": args.identities, "threads": args.threads, "cfg": 1.0,
                        "segment_frames": args.segment_frames, "model": "demo_model (dim 64, 4+2 blocks)",
                        "codec": "TestCodec"},
           "memory_method": "peak RSS growth over the call in a fresh process (glibc mmap threshold 64 KiB); "
                            "working = growth - output frames; model_call_peak = largest RSS growth inside one "
                            "model call (one segment / window: what a device would hold)"}
    tr_overlap = DEFAULT_OVERLAP["token_replace"] if args.overlap is None else args.overlap
    lengths = [_frames_for(k, args.segment_frames, tr_overlap) for k in args.segments]
    for strategy in args.strategies:
        rows = [_run_probe(args, strategy, f) for f in lengths]
        for k, row in zip(args.segments, rows):
            row["token_replace_segments"] = k
        fit = linear_fit([r["frames"] for r in rows], [r["time_s"] for r in rows])
        cpu_fit = linear_fit([r["frames"] for r in rows], [r["cpu_s"] for r in rows])
        first, last = rows[0], rows[-1]
        out[strategy] = {
            "overlap_frames": DEFAULT_OVERLAP[strategy] if args.overlap is None else args.overlap,
            "rows": rows, "time_fit": {k: round(v, 5) for k, v in fit.items()},
            "cpu_time_fit": {k: round(v, 5) for k, v in cpu_fit.items()},
            "working_ratio_last_to_first": round(last["working_bytes"] / first["working_bytes"], 3),
            "model_call_peak_ratio_last_to_first": round(last["model_call_peak_bytes"] / first["model_call_peak_bytes"], 3),
            "process_peak_ratio_last_to_first": round(last["process_peak_rss_bytes"] / first["process_peak_rss_bytes"], 3),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--segments", nargs="+", type=int, default=[2, 4, 6, 8],
                   help="lengths, as the number of full token-replace segments")
    p.add_argument("--segment-frames", type=int, default=81)
    p.add_argument("--overlap", type=int, default=None, help="pixel frames (default: 5 token replace, 16 windows)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--mode", default="masked", choices=["tsda", "masked", "global"])
    p.add_argument("--identities", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on one line")
    p.add_argument("--probe", choices=STRATEGIES, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    return probe_or_run(p.parse_args(argv), _probe, run)


if __name__ == "__main__":
    raise SystemExit(main())
