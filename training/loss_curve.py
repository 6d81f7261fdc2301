"""`python -m training.loss_curve RUN_DIR [RUN_DIR ...] --out curves.png`: the training and
validation loss of runs (read from their TensorBoard logs) drawn as one PNG, one panel per
run, log-scale loss over steps. Drawn with OpenCV so no plotting library is needed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from anycrowd_core.errors import AnyCrowdError, command_main
from anycrowd_core.video_io import write_png


def read_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of a TensorBoard scalar of a training run (its tensorboard/ folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir) / "tensorboard"
    if not folder.is_dir():
        raise AnyCrowdError(f"{folder} does not exist: give the output.dir of a run trained with train.tensorboard=true.")
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(np.pad(values, (window // 2, window - 1 - window // 2), mode="edge"), kernel, mode="valid")


COLOURS = [(30, 90, 200), (220, 100, 20), (40, 160, 60), (170, 40, 170), (120, 120, 120), (200, 40, 40)]
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 15, 30, 40


def _log_axes(img: np.ndarray, title: str, steps: list[int], values: list[float], ticks=(1, 2, 5)):
    """Frame, title and log-scale grid for `values` over `steps` on `img`; returns the
    (step, value) -> pixel mapping, or None (after writing "no data") when nothing is positive."""
    h, w = img.shape[:2]
    points = [v for v in values if v > 0]
    if not points:
        cv2.putText(img, f"{title}: no data", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return None
    lo, hi = math.log10(min(points)), math.log10(max(points))
    hi = hi if hi > lo else lo + 1
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)

    def xy(step, value):
        x = _LEFT + (step - s0) / (s1 - s0) * (w - _LEFT - _RIGHT)
        y = _TOP + (hi - math.log10(max(value, 1e-12))) / (hi - lo) * (h - _TOP - _BOTTOM)
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (_LEFT, _TOP), (w - _RIGHT, h - _BOTTOM), (0, 0, 0), 1)
    for k in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        for m in ticks:
            v = m * 10.0**k
            if lo <= math.log10(v) <= hi:
                _, y = xy(s0, v)
                cv2.line(img, (_LEFT, y), (w - _RIGHT, y), (225, 225, 225), 1)
                cv2.putText(img, f"{v:g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (_LEFT, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return xy


def _curve(img, xy, values: list[tuple[int, float]], colour, window: int) -> None:
    if values:
        sv = _smooth(np.array([v for _, v in values]), window)
        pts = np.array([xy(s, v) for (s, _), v in zip(values, sv)], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)


def _footer(img, text: str) -> None:
    cv2.putText(img, text, (_LEFT, img.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)


def draw_panel(title: str, train: list, val: list, size=(360, 560)) -> np.ndarray:
    """One panel: smoothed training loss (blue), validation loss (orange dots), log scale."""
    img = np.full((*size, 3), 255, np.uint8)
    xy = _log_axes(img, title, [s for s, _ in train + val], [v for _, v in train + val])
    if xy is None:
        return img
    _curve(img, xy, train, COLOURS[0], 9)
    for s, v in val:
        cv2.circle(img, xy(s, v), 4, (255, 120, 0), -1, cv2.LINE_AA)
    steps = [s for s, _ in train + val]
    _footer(img, f"step {min(steps)}..{max(steps)}   blue: train loss (smoothed)   orange: validation")
    return img


def draw_overlay(title: str, series: dict[str, list[tuple[int, float]]], size=(380, 620), window: int = 9) -> np.ndarray:
    """Several smoothed curves (name -> (step, value) pairs) on one log-scale panel, with a
    legend: e.g. the mean training loss of each arm of an experiment."""
    img = np.full((*size, 3), 255, np.uint8)
    everything = [p for vals in series.values() for p in vals]
    xy = _log_axes(img, title, [s for s, _ in everything], [v for _, v in everything], ticks=(1, 2, 3, 5, 7))
    if xy is None:
        return img
    for i, (name, vals) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        _curve(img, xy, vals, colour, window)
        cv2.putText(img, name, (size[1] - _RIGHT - 150, _TOP + 18 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1,
                    cv2.LINE_AA)
    steps = [s for s, _ in everything]
    _footer(img, f"step {min(steps)}..{max(steps)} (smoothed, log scale)")
    return img


@command_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.loss_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="output.dir of each run")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    panels = [draw_panel(Path(r).name, read_scalars(Path(r), "train/loss"), read_scalars(Path(r), "val/loss"))
              for r in args.runs]
    out = Path(args.out)
    write_png(np.concatenate(panels, axis=1), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
