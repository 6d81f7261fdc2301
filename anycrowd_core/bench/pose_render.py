"""Benchmark of the pose renderer: frames per second of the VACE control video (body + hands +
face, 128 points per person) and of the identity preview, on one CPU thread.

    python -m anycrowd_core.bench.pose_render --json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import cv2
import numpy as np
import torch

from ..pose.render import render_identity_preview, render_pose_video
from ..pose.types import FACE, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND, PoseTracks
from ..scenes import make_scene


def synthetic_tracks(num_people: int, num_frames: int, height: int, width: int, seed: int = 0) -> PoseTracks:
    """Whole-body tracks of a procedural crossing scene: its 18 body points plus 68 face points
    on an ellipse around the head and 21-point fans at each wrist (plausible DWPose-like load)."""
    scene = make_scene(num_characters=num_people, num_frames=num_frames, height=height, width=width, seed=seed)
    body = scene.keypoints.double().numpy()  # [M, T, 18, 3]
    m, t = body.shape[:2]
    kp = np.zeros((m, t, NUM_KEYPOINTS, 3))
    kp[:, :, :18] = body
    head = (body[:, :, 16, :2] + body[:, :, 17, :2]) / 2
    r = np.linalg.norm(body[:, :, 16, :2] - body[:, :, 17, :2], axis=-1)[..., None] * 0.35 + 1
    ang = np.linspace(0, 2 * math.pi, 68, endpoint=False)
    face = np.stack([head[..., None, 0] + r * np.cos(ang), head[..., None, 1] + 1.2 * r * np.sin(ang)], -1)
    kp[:, :, FACE, :2] = face
    kp[:, :, FACE, 2] = (body[:, :, [0], 2] > 0)
    fan = np.linspace(-0.8, 0.8, 5)
    for part, wrist, elbow in ((LEFT_HAND, 7, 6), (RIGHT_HAND, 4, 3)):
        w, e = body[:, :, wrist, :2], body[:, :, elbow, :2]
        d = w - e
        length = np.linalg.norm(d, axis=-1, keepdims=True) + 1e-6
        base = np.arctan2(d[..., 1], d[..., 0])
        pts = [w]
        for f in fan:
            a = base + f
            for s in (0.15, 0.3, 0.42, 0.52):
                pts.append(w + s * length * np.stack([np.cos(a), np.sin(a)], -1))
        kp[:, :, part, :2] = np.stack(pts, 2)
        kp[:, :, part, 2] = (body[:, :, [wrist], 2] > 0)
    boxes = scene.track_boxes.double()
    present = ~torch.isnan(boxes[..., 0])
    return PoseTracks(torch.from_numpy(kp).float(), boxes.float(), present, height, width, list(range(m)))


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(people=(4, 9), frames: int = 81, height: int = 480, width: int = 832, repeats: int = 3) -> dict:
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        results = [_measure(p, frames, height, width, repeats) for p in people]
    finally:  # leave the caller's thread settings as they were
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    return {"results": results, "threads": 1, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "opencv": cv2.__version__}


def _measure(p: int, frames: int, height: int, width: int, repeats: int) -> dict:
    """fps of the control video (plain and light-head) and of the preview for p people."""
    tracks = synthetic_tracks(p, frames, height, width)
    video = torch.rand(frames, height, width, 3)
    row = {"people": p, "frames": frames, "height": height, "width": width}
    row["control_fps"] = frames / _time(lambda: render_pose_video(tracks), repeats)
    row["control_light_head_fps"] = frames / _time(lambda: render_pose_video(tracks, light_head=True), repeats)
    row["preview_fps"] = frames / _time(lambda: render_identity_preview(video, tracks), repeats)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, nargs="+", default=[4, 9])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    out = run(tuple(a.people), a.frames, a.height, a.width, a.repeats)
    if a.json:
        print(json.dumps(out, indent=2))
        return
    for r in out["results"]:
        print(f"{r['people']} people, {r['width']}x{r['height']}: control {r['control_fps']:.1f} fps, "
              f"light head {r['control_light_head_fps']:.1f} fps, preview {r['preview_fps']:.1f} fps")


if __name__ == "__main__":
    main()
