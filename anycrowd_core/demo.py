"""Headless demo: `python -m anycrowd_core.demo --out DIR`.

Runs the whole AnyCrowd data path (decoupling, IILR, token layout, TSDA-patched sampling,
decoding) on a procedural multi-character scene and writes an mp4 and a preview sheet.
No trained AnyCrowd or Wan weights ship with this package, so the demo uses a small
RANDOMLY INITIALISED Wan-VACE-shaped model and a deterministic test codec; it says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .codec import TestCodec
from .errors import AnyCrowdError
from .pipeline import AnimationInputs, SamplingSettings, animate
from .scenes import make_scene
from .video_io import preview_sheet, write_mp4, write_png
from .wan import WanVaceConfig, WanVaceModel, random_wan_vace

NOTICE = (
    "NOTE: no trained weights are used. This demo runs a small randomly initialised "
    "Wan 2.1 VACE-shaped model and a deterministic test codec, so the output video is "
    "noise-like, not an animation. It exercises the full AnyCrowd path end to end; load a "
    "real Wan 2.1 VACE checkpoint through ComfyUI (or the trainer) for real results."
)


def demo_model(seed: int, text_dim: int = 32) -> WanVaceModel:
    """A tiny random Wan 2.1 VACE model (4 DiT blocks, 2 VACE blocks, dim 64)."""
    config = WanVaceConfig(
        dim=64, ffn_dim=128, num_heads=4, num_layers=4, vace_layers=2, text_dim=text_dim, freq_dim=32
    )
    return random_wan_vace(config, seed)


def run_demo(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scene = make_scene(
        num_characters=args.characters, num_frames=args.frames,
        height=args.height, width=args.width, seed=args.seed, scenario=args.scenario,
    )
    inputs = AnimationInputs(
        reference_image=scene.reference_image,
        reference_masks=scene.reference_masks,
        control_video=scene.pose_video,
        track_boxes=scene.track_boxes,
    )
    model = demo_model(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    positive = torch.randn(1, 16, model.config.text_dim, generator=generator)
    negative = torch.randn(1, 16, model.config.text_dim, generator=generator)
    settings = SamplingSettings(
        steps=args.steps, cfg=args.cfg, shift=args.shift, sampler=args.sampler,
        seed=args.seed, mode=args.mode, agf=args.agf,
    )

    def progress(step: int, total: int, x, denoised) -> None:
        print(f"  sampling step {step}/{total}", file=sys.stderr, flush=True)

    result = animate(model, TestCodec(), inputs, positive, negative, settings, callback=progress)

    write_mp4(result.frames, out / "anycrowd_demo.mp4", fps=args.fps)
    write_mp4(scene.pose_video, out / "control_pose.mp4", fps=args.fps)
    sheet = preview_sheet(
        [
            scene.reference_image,
            torch.cat([result.decoupled.identity_images, result.decoupled.background[None]]),
            scene.pose_video,
            result.frames,
        ],
        labels=["reference", "IILR: each identity alone, then the background", "driving pose (control)", "output (random model)"],
        num_columns=6,
    )
    write_png(sheet, out / "preview.png")
    summary = {
        "notice": NOTICE,
        "outputs": ["anycrowd_demo.mp4", "control_pose.mp4", "preview.png"],
        "seconds": round(time.perf_counter() - started, 2),
        "frames": int(result.frames.shape[0]),
        "size": [int(result.frames.shape[1]), int(result.frames.shape[2])],
        **result.info,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for anycrowd_demo.mp4, preview.png, summary.json")
    p.add_argument("--characters", type=int, default=3, help="number of characters in the scene")
    p.add_argument("--frames", type=int, default=17, help="pixel frames, 4n+1")
    p.add_argument("--height", type=int, default=128, help="multiple of 16")
    p.add_argument("--width", type=int, default=192, help="multiple of 16")
    p.add_argument("--scenario", default="crossing", help="procedural scene: crossing, exit_reenter, static")
    p.add_argument("--mode", default="tsda", choices=["tsda", "masked", "global"], help="attention mode")
    p.add_argument("--agf", default="gated", choices=["gated", "mean", "max"], help="fusion in tsda")
    p.add_argument("--sampler", default="euler", help="euler, heun or dpmpp_2m")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=8)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(NOTICE, flush=True)
    try:
        summary = run_demo(args)
    except AnyCrowdError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    print(NOTICE, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
