"""`python -m training.procedural_dataset --out DIR`: a small multi-character dataset from
the core's procedural scenes, written as real files in the training manifest format.

For the tiny end-to-end example and tests. Clips rotate through every supported input
variant (mp4 or PNG-frame clips, mask folders or arrays, reference image or frame, pose
video or keypoints, given or derived boxes) so one run exercises all of `training.prepare`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from anycrowd_core.errors import AnyCrowdError, command_main
from anycrowd_core.scenes import SCENARIOS, make_scene
from anycrowd_core.video_io import write_mp4, write_png

MANIFEST = "manifest.jsonl"


def _write_mask_png(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise AnyCrowdError(f"could not write {str(path)!r}; check the folder is writable.")


def clip_parameters(index: int, seed: int = 0, min_characters: int = 2, max_characters: int = 4) -> dict:
    """make_scene arguments of clip `index`: characters cycle through min..max, scenarios
    through `anycrowd_core.scenes.SCENARIOS`, scene seed = seed * 1000 + index."""
    counts = list(range(min_characters, max_characters + 1))
    return {"characters": counts[index % len(counts)], "scenario": SCENARIOS[index % len(SCENARIOS)],
            "seed": seed * 1000 + index}


def write_clip(out: Path, index: int, *, frames: int, height: int, width: int, characters: int,
               scenario: str, seed: int) -> dict:
    """Render one scene into `out/clip_<index>/` and return its manifest entry (paths
    relative to `out`). Variant by index: even clips use an mp4, a mask folder, the scene's
    reference image and a pose video; odd clips an array of masks, a reference frame,
    keypoints and a tracks JSON; every fourth clip (index % 4 == 3) is a PNG-frame folder."""
    scene = make_scene(num_characters=characters, num_frames=frames, height=height, width=width,
                       seed=seed, scenario=scenario)
    name = f"clip_{index:03d}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    entry: dict = {"id": name}

    if index % 4 == 3:
        for t, frame in enumerate(scene.video):
            write_png(frame, folder / "frames" / f"{t:05d}.png")
        entry["clip"] = f"{name}/frames"
    else:
        write_mp4(scene.video, folder / "video.mp4")
        entry["clip"] = f"{name}/video.mp4"

    track_masks = scene.track_masks.numpy()  # [M, T, H, W]
    if index % 2 == 0:
        for k in range(track_masks.shape[0]):
            for t in range(track_masks.shape[1]):
                _write_mask_png(track_masks[k, t], folder / "masks" / f"{k}" / f"{t:05d}.png")
        entry["masks"] = f"{name}/masks"
        write_png(scene.reference_image, folder / "reference.png")
        for k, m in enumerate(scene.reference_masks.numpy()):
            _write_mask_png(m, folder / "reference_masks" / f"{k}.png")
        entry["reference_image"] = f"{name}/reference.png"
        entry["reference_masks"] = f"{name}/reference_masks"
        write_mp4(scene.pose_video, folder / "pose.mp4")
        entry["pose_video"] = f"{name}/pose.mp4"
    else:
        np.savez_compressed(folder / "masks.npz", masks=track_masks.astype(np.uint8))
        entry["masks"] = f"{name}/masks.npz"
        # a frame where every character is visible (the scenes guarantee frame 0 is one)
        visible = track_masks.reshape(*track_masks.shape[:2], -1).any(-1).all(0)
        candidates = np.flatnonzero(visible)
        rng = np.random.default_rng(seed)
        entry["reference_frame"] = int(candidates[rng.integers(len(candidates))]) if len(candidates) else 0
        np.save(folder / "keypoints.npy", scene.keypoints.numpy().astype(np.float32))
        entry["keypoints"] = f"{name}/keypoints.npy"
        boxes = scene.track_boxes.numpy()
        tracks = [[None if np.isnan(b).any() else [float(v) for v in b] for b in track] for track in boxes]
        (folder / "tracks.json").write_text(json.dumps(tracks))
        entry["tracks"] = f"{name}/tracks.json"
    return entry


def generate(out, clips: int = 8, frames: int = 17, height: int = 64, width: int = 96, seed: int = 0,
             min_characters: int = 2, max_characters: int = 4) -> Path:
    """Write `clips` procedural clips and `out/manifest.jsonl`; returns the manifest path.
    Character counts cycle through min..max, scenarios through `anycrowd_core.scenes.SCENARIOS`."""
    if clips < 1:
        raise AnyCrowdError(f"--clips must be at least 1, got {clips}.")
    if not 1 <= min_characters <= max_characters:
        raise AnyCrowdError("need 1 <= --min-characters <= --max-characters.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(clips):
        entry = write_clip(out, i, frames=frames, height=height, width=width,
                           **clip_parameters(i, seed, min_characters, max_characters))
        lines.append(json.dumps(entry))
    manifest = out / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@command_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.procedural_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 4n+1")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-characters", type=int, default=2)
    p.add_argument("--max-characters", type=int, default=4)
    args = p.parse_args(argv)
    manifest = generate(args.out, args.clips, args.frames, args.height, args.width, args.seed,
                        args.min_characters, args.max_characters)
    print(f"wrote {args.clips} clips and {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
