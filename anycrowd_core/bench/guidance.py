"""`python -m anycrowd_core.bench.guidance`: the cost of one sampling step under plain CFG
(cond + uncond, two model calls) and under cumulative guidance (three conditions, batched as
one call of 3 or run one after another), measured in one run through `animate`.

A step's time is (time of `steps` steps - time of 1 step) / (steps - 1), so encoding,
decoding and set-up cancel out. Sizes: `mini` (AnyCrowd-Mini's architecture at its 128x192,
9-frame scenes) and `small` (a wider random Wan: dim 512, 8 + 4 blocks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..codec import TestCodec
from ..errors import AnyCrowdError, command_main
from ..pipeline import AnimationInputs, SamplingSettings, animate
from ..scenes import make_scene
from ..wan import WanVaceConfig, random_wan_vace

SIZES = {
    "mini": dict(dim=128, ffn_dim=512, num_heads=1, num_layers=6, vace_layers=2, text_dim=64, freq_dim=256),
    "small": dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=8, vace_layers=4, text_dim=64, freq_dim=256),
}
VARIANTS = {
    "plain cfg": dict(guidance="cfg", cfg=3.0),
    "cumulative (batched x3)": dict(guidance="cumulative"),
    "cumulative (3 calls)": dict(guidance="cumulative", batched=False),
}


def step_seconds(model, inputs, text, variant: dict, steps: int, repeats: int) -> float:
    from .. import pipeline

    settings = {k: v for k, v in variant.items() if k != "batched"}
    real = pipeline.cumulative_cfg_denoiser
    if variant.get("batched", True) is False:
        pipeline.cumulative_cfg_denoiser = lambda *a, batched=None: real(*a)
    try:
        def timed(n: int) -> float:
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                animate(model, TestCodec(), inputs, text, text, SamplingSettings(steps=n, **settings))
                best = min(best, time.perf_counter() - started)
            return best

        return (timed(steps) - timed(1)) / (steps - 1)
    finally:
        pipeline.cumulative_cfg_denoiser = real


def run(size: str, steps: int, repeats: int) -> dict:
    cfg = WanVaceConfig(**SIZES[size])
    model = random_wan_vace(cfg, 0).eval()
    scene = make_scene(num_characters=3, num_frames=9, height=128, width=192, seed=0, scenario="swap")
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes)
    text = torch.zeros(1, 8, cfg.text_dim)
    with torch.no_grad():
        times = {name: step_seconds(model, inputs, text, v, steps, repeats) for name, v in VARIANTS.items()}
    base = times["plain cfg"]
    return {"size": size, "threads": torch.get_num_threads(), "device": "cpu",
            "seconds_per_step": {k: round(v, 4) for k, v in times.items()},
            "ratio_to_plain_cfg": {k: round(v / base, 3) for k, v in times.items()}}


@command_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m anycrowd_core.bench.guidance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="mini")
    p.add_argument("--steps", type=int, default=6, help="steps of the long run (the short one has 1)")
    p.add_argument("--repeats", type=int, default=3, help="runs per timing; the fastest counts")
    args = p.parse_args(argv)
    if args.steps < 2 or args.repeats < 1:
        raise AnyCrowdError("--steps must be at least 2 and --repeats at least 1.")
    print(json.dumps(run(args.size, args.steps, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
