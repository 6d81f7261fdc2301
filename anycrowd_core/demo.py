"""Headless demo: `python -m anycrowd_core.demo --out DIR`.

By default it animates a procedural multi-character scene with **AnyCrowd-Mini**, the
miniature trained here in Wan 2.1 VACE's own architecture (docs/mini.md), in four modes:
`global` (the plain VACE baseline), `masked` and `masked+align` (training-free) and `tsda`
(the trained AnyCrowd adapter), and scores how many characters land on the track they are bound to. The
miniature shows the mechanism, not photorealism. `--model random` runs the whole data path
on a randomly initialised model instead (noise-like output, for plumbing checks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .codec import TestCodec, nearest_valid_frame_counts
from .errors import AnyCrowdError, command_main, require_finite
from .files import ensure_output_dir, write_text_atomic
from .pipeline import AnimationInputs, SamplingSettings, animate
from .pose.binding import parse_index_binding
from .sampling import SAMPLERS
from .scenes import SCENARIOS, make_scene
from .video_io import preview_sheet, write_mp4, write_png
from .wan import WanVaceConfig, WanVaceModel, random_wan_vace

MINI_NOTICE = (
    "AnyCrowd-Mini: a 2.6M-parameter Wan 2.1 VACE trained here on procedural stick-figure scenes. "
    "It shows identity-pose binding (each character on its own track), not photorealism."
)
RANDOM_NOTICE = (
    "NOTE: no trained weights are used. This demo runs a small randomly initialised "
    "Wan 2.1 VACE-shaped model and a deterministic test codec, so the output video is "
    "noise-like, not an animation. It exercises the full AnyCrowd path end to end; load a "
    "real Wan 2.1 VACE checkpoint through ComfyUI (or the trainer) for real results."
)
COMPARED_MODES = ("global", "masked", "masked+align", "tsda")


def demo_model(seed: int, text_dim: int = 32) -> WanVaceModel:
    """A tiny random Wan 2.1 VACE model (4 DiT blocks, 2 VACE blocks, dim 64)."""
    config = WanVaceConfig(
        dim=64, ffn_dim=128, num_heads=4, num_layers=4, vace_layers=2, text_dim=text_dim, freq_dim=32
    )
    return random_wan_vace(config, seed)


def _scene(args: argparse.Namespace):
    """The demo's procedural scene; errors name the command-line flags."""
    if args.frames < 1 or (args.frames - 1) % 4:
        lower, upper = nearest_valid_frame_counts(args.frames)
        raise AnyCrowdError(f"--frames {args.frames}: Wan needs 4n+1 frames (5, 9, 13, 17, ...); use --frames {lower}"
                            + (f" or --frames {upper}." if upper != lower else "."))
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value < 16 or value % 16:
            raise AnyCrowdError(f"{flag} {value}: sizes must be multiples of 16 (e.g. {max(16, value // 16 * 16)}).")
    if args.characters < 1:
        raise AnyCrowdError(f"--characters must be at least 1, got {args.characters}.")
    try:
        return make_scene(num_characters=args.characters, num_frames=args.frames, height=args.height,
                          width=args.width, seed=args.seed, scenario=args.scenario)
    except AnyCrowdError as e:  # e.g. too many characters for the width
        raise AnyCrowdError(f"--characters {args.characters} with --width {args.width}: {e} "
                            "Give a larger --width or fewer --characters.") from None


def _preview_columns(num_characters: int) -> int:
    """Columns of the demo's preview sheet: six frames per video, and at least one column per
    identity plus the background, so the "each identity alone" row omits nobody."""
    return max(6, num_characters + 1)


def _binding(args: argparse.Namespace, count: int) -> list[int]:
    """Identity per track from --binding (the index form "2,0,1", parsed by pose.binding)."""
    try:
        return parse_index_binding(args.binding, count, count)
    except AnyCrowdError as e:
        raise AnyCrowdError(f"--binding: {e}") from None


def _labelled(frames: torch.Tensor, label: str) -> np.ndarray:
    """uint8 `[T, H + 16, W, 3]`: the frames under a caption strip."""
    video = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    strip = np.zeros((video.shape[0], 16, video.shape[2], 3), np.uint8)
    for f in strip:
        cv2.putText(f, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, video], axis=1)


def run_mini_demo(args: argparse.Namespace) -> dict:
    """The miniature in four modes on one held-out-style scene, with scores and a comparison."""
    from .bench.binding import evaluate_scene
    from .mini import load_mini

    out = Path(args.out)
    started = time.perf_counter()
    scene = _scene(args)
    binding = _binding(args, scene.num_characters)
    mini = load_mini()
    results = {}
    for mode in COMPARED_MODES:
        print(f"  animating with {mode} ...", file=sys.stderr, flush=True)
        results[mode] = evaluate_scene(scene, mode, binding, args.seed, reference=args.reference, mini=mini,
                                       steps=args.steps)
    tsda = results["tsda"]
    write_mp4(tsda["video"], out / "anycrowd_demo.mp4", fps=args.fps)
    write_mp4(scene.pose_video, out / "control_pose.mp4", fps=args.fps)
    panels = [_labelled(scene.pose_video, "driving pose")]
    panels += [_labelled(results[m]["video"], f"{m}: {results[m]['binding_accuracy']:.0%} bound") for m in COMPARED_MODES]
    write_mp4(np.concatenate(panels, axis=2), out / "comparison.mp4", fps=args.fps)
    decoupled = tsda["decoupled"]
    sheet = preview_sheet(
        [scene.reference_image, torch.cat([decoupled.identity_images, decoupled.background[None]]), scene.pose_video,
         scene.video_for_binding(binding)] + [results[m]["video"] for m in COMPARED_MODES],
        labels=["reference", f"IILR: each identity alone ({args.reference} arrangement), then the background",
                "driving pose (same colours for everyone)", "ground truth for this binding"]
        + [f"{m}: binding accuracy {results[m]['binding_accuracy']:.2f}" for m in COMPARED_MODES],
        num_columns=_preview_columns(scene.num_characters),
    )
    write_png(sheet, out / "preview.png")
    return {
        "model": "AnyCrowd-Mini",
        "notice": MINI_NOTICE,
        "outputs": ["anycrowd_demo.mp4 (tsda)", "comparison.mp4 (pose | global | masked | masked+align | tsda)",
                    "control_pose.mp4",
                    "preview.png"],
        "scene": {"scenario": args.scenario, "characters": scene.num_characters, "frames": scene.num_frames,
                  "height": args.height, "width": args.width, "seed": args.seed, "reference": args.reference,
                  "binding": binding},
        "binding_accuracy": {m: round(results[m]["binding_accuracy"], 4) for m in COMPARED_MODES},
        "chance": round(tsda["chance"], 4),
        "metrics": {m: {k: round(results[m][k], 4) for k in ("bleeding", "silhouette_iou", "background_psnr")}
                    for m in COMPARED_MODES},
        "modes": {"global": "base model, plain VACE attention (baseline)",
                  "masked": "base model, training-free masked attention",
                  "masked+align": "base model, training-free masked attention, each identity first moved onto its "
                                  "bound track's first pose (the decoupler's alignment)",
                  "tsda": "base + AnyCrowd LoRA and gates, TSDA with gated fusion (agf gated)"},
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_random_demo(args: argparse.Namespace) -> dict:
    """The whole data path on a randomly initialised model (noise-like output)."""
    out = Path(args.out)
    started = time.perf_counter()
    scene = _scene(args)
    inputs = AnimationInputs(
        reference_image=scene.reference_image, reference_masks=scene.reference_masks,
        control_video=scene.pose_video, track_boxes=scene.track_boxes, binding=_binding(args, scene.num_characters),
    )
    model = demo_model(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    positive = torch.randn(1, 16, model.config.text_dim, generator=generator)
    negative = torch.randn(1, 16, model.config.text_dim, generator=generator)
    settings = SamplingSettings(
        steps=args.steps or 6, cfg=args.cfg, shift=args.shift, sampler=args.sampler,
        seed=args.seed, mode=args.mode, agf=args.agf,
    )

    def progress(step: int, total: int, x, denoised) -> None:
        print(f"  sampling step {step}/{total}", file=sys.stderr, flush=True)

    result = animate(model, TestCodec(), inputs, positive, negative, settings, callback=progress)
    write_mp4(result.frames, out / "anycrowd_demo.mp4", fps=args.fps)
    write_mp4(scene.pose_video, out / "control_pose.mp4", fps=args.fps)
    sheet = preview_sheet(
        [scene.reference_image, torch.cat([result.decoupled.identity_images, result.decoupled.background[None]]),
         scene.pose_video, result.frames],
        labels=["reference", "IILR: each identity alone, then the background", "driving pose (control)",
                "output (random model)"],
        num_columns=_preview_columns(scene.num_characters),
    )
    write_png(sheet, out / "preview.png")
    info = dict(result.info)
    if args.mode != "tsda":
        info.pop("agf", None)  # fusion is only used by tsda
    return {
        "model": "random", "notice": RANDOM_NOTICE, "outputs": ["anycrowd_demo.mp4", "control_pose.mp4", "preview.png"],
        "seconds": round(time.perf_counter() - started, 2), "frames": int(result.frames.shape[0]),
        "height": int(result.frames.shape[1]), "width": int(result.frames.shape[2]), **info,
    }


def run_demo(args: argparse.Namespace) -> dict:
    """Every flag and the output folder are checked before any model work starts."""
    out = ensure_output_dir(args.out, "--out")
    if args.fps < 1:
        raise AnyCrowdError(f"--fps must be at least 1, got {args.fps}.")
    if args.steps is not None and args.steps < 1:
        raise AnyCrowdError(f"--steps must be at least 1, got {args.steps}.")
    if not 0 <= args.seed < 2**63:
        raise AnyCrowdError(f"--seed must lie in 0 .. 2**63-1, got {args.seed}.")
    for flag in ("cfg", "shift"):
        require_finite(getattr(args, flag), f"--{flag}", "Give a number, e.g. --cfg 3 --shift 5.")
    if args.shift <= 0:
        raise AnyCrowdError(f"--shift must be positive, got {args.shift}; Wan uses 3.0-8.0.")
    summary = run_mini_demo(args) if args.model == "mini" else run_random_demo(args)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the videos, preview.png and summary.json (required)")
    p.add_argument("--model", default="mini", choices=["mini", "random"],
                   help="mini: the trained AnyCrowd-Mini, four modes compared; random: a random model "
                        "(noise-like, a plumbing check) (default: %(default)s)")
    p.add_argument("--characters", type=int, default=3,
                   help="number of characters in the scene (default: %(default)s)")
    p.add_argument("--frames", type=int, default=9,
                   help="pixel frames, 4n+1; the miniature is trained on 9 (default: %(default)s)")
    p.add_argument("--height", type=int, default=128, help="frame height, a multiple of 16 (default: %(default)s)")
    p.add_argument("--width", type=int, default=192, help="frame width, a multiple of 16 (default: %(default)s)")
    p.add_argument("--scenario", default="swap", choices=list(SCENARIOS),
                   help="procedural scene the characters act out (default: %(default)s)")
    p.add_argument("--reference", default="cross", choices=["cross", "self"],
                   help="mini: identities at random positions in the reference (cross) or in the scene's own "
                        "arrangement (self) (default: %(default)s)")
    p.add_argument("--binding", default="",
                   help="identity per track, e.g. 2,0,1 recasts track 0 with identity 2 "
                        "(default: track i <- identity i)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: 10 for --model mini, 6 for --model random)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the scene, the noise and the random model, 0 .. 2**63-1 (default: %(default)s)")
    p.add_argument("--fps", type=int, default=8, help="frame rate of the written mp4 files (default: %(default)s)")
    g = p.add_argument_group("--model random only")
    g.add_argument("--mode", default="masked", choices=["tsda", "masked", "global"],
                   help="attention mode (default: %(default)s)")
    g.add_argument("--agf", default="gated", choices=["gated", "mean", "max"],
                   help="fusion of overlapping identities, used by --mode tsda only (default: %(default)s)")
    g.add_argument("--sampler", default="euler", choices=sorted(SAMPLERS), help="sampler (default: %(default)s)")
    g.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (default: %(default)s)")
    g.add_argument("--shift", type=float, default=5.0,
                   help="flow-matching schedule shift, positive; Wan uses 3.0-8.0 (default: %(default)s)")
    return p.parse_args(argv)


@command_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notice = MINI_NOTICE if args.model == "mini" else RANDOM_NOTICE
    print(notice, flush=True)
    try:
        with torch.no_grad():
            summary = run_demo(args)
    except KeyboardInterrupt:  # files are written atomically: nothing half-written is left behind
        print("interrupted: files already complete in --out are kept, none is half-written.", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    print(notice, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
