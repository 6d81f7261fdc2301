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

from anycrowd_core.errors import AnyCrowdError
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


def draw_panel(title: str, train: list, val: list, size=(360, 560)) -> np.ndarray:
    """One panel: smoothed training loss (blue), validation loss (orange dots), log scale."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    points = [v for _, v in train + val if v > 0]
    if not points:
        cv2.putText(img, f"{title}: no data", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return img
    lo, hi = math.log10(min(points)), math.log10(max(points))
    hi = hi if hi > lo else lo + 1
    steps = [s for s, _ in train + val]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)

    def xy(step, value):
        x = left + (step - s0) / (s1 - s0) * (w - left - right)
        y = top + (hi - math.log10(max(value, 1e-12))) / (hi - lo) * (h - top - bottom)
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for k in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**k
            if lo <= math.log10(v) <= hi:
                _, y = xy(s0, v)
                cv2.line(img, (left, y), (w - right, y), (225, 225, 225), 1)
                cv2.putText(img, f"{v:g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    if train:
        st = np.array([s for s, _ in train])
        sv = _smooth(np.array([v for _, v in train]), 9)
        cv2.polylines(img, [np.array([xy(s, v) for s, v in zip(st, sv)], np.int32)], False, (30, 90, 200), 2, cv2.LINE_AA)
    for s, v in val:
        cv2.circle(img, xy(s, v), 4, (255, 120, 0), -1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {s0}..{s1}   blue: train loss (smoothed)   orange: validation", (left, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


COLOURS = [(30, 90, 200), (220, 100, 20), (40, 160, 60), (170, 40, 170), (120, 120, 120), (200, 40, 40)]


def draw_overlay(title: str, series: dict[str, list[tuple[int, float]]], size=(380, 620), window: int = 9) -> np.ndarray:
    """Several smoothed curves (name -> (step, value) pairs) on one log-scale panel, with a
    legend: e.g. the mean training loss of each arm of an experiment."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    points = [v for vals in series.values() for _, v in vals if v > 0]
    if not points:
        cv2.putText(img, f"{title}: no data", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return img
    lo, hi = math.log10(min(points)), math.log10(max(points))
    hi = hi if hi > lo else lo + 1
    steps = [s for vals in series.values() for s, _ in vals]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)

    def xy(step, value):
        x = left + (step - s0) / (s1 - s0) * (w - left - right)
        y = top + (hi - math.log10(max(value, 1e-12))) / (hi - lo) * (h - top - bottom)
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for k in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        for m in (1, 2, 3, 5, 7):
            v = m * 10.0**k
            if lo <= math.log10(v) <= hi:
                _, y = xy(s0, v)
                cv2.line(img, (left, y), (w - right, y), (225, 225, 225), 1)
                cv2.putText(img, f"{v:g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, vals) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if vals:
            st = np.array([s for s, _ in vals])
            sv = _smooth(np.array([v for _, v in vals]), window)
            cv2.polylines(img, [np.array([xy(s, v) for s, v in zip(st, sv)], np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (w - right - 150, top + 18 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1,
                    cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {s0}..{s1} (smoothed, log scale)", (left, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (0, 0, 0), 1, cv2.LINE_AA)
    return img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.loss_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="output.dir of each run")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    try:
        panels = [draw_panel(Path(r).name, read_scalars(Path(r), "train/loss"), read_scalars(Path(r), "val/loss"))
                  for r in args.runs]
    except AnyCrowdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        write_png(np.concatenate(panels, axis=1), out)
    except AnyCrowdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
