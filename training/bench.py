"""Trainer benchmark: optimiser steps per second and peak memory, with and without gradient
checkpointing, printed as JSON. `python -m training.bench [--size tiny|1.3b] [--steps N]`.

Each variant runs in its own process so peak memory (CUDA max allocated, or the process's
peak RSS on CPU) is its own. Samples are procedural scenes encoded with the test codec.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = {
    # tiny: training/configs/tiny.yaml's model and data size
    "tiny": dict(base="random-tiny", height=64, width=96, frames=9, characters=2, text_dim=32, dtype="fp32", mp="no"),
    # the GPU case: Wan 2.1 VACE 1.3B, random weights, bf16, 480x832, 49 frames
    "1.3b": dict(base="random-1.3b", height=480, width=832, frames=49, characters=2, text_dim=4096, dtype="bf16", mp="bf16"),
}


def make_samples(n: int, height: int, width: int, frames: int, characters: int, text_dim: int):
    import torch

    from anycrowd_core.codec import TestCodec
    from anycrowd_core.decoupler import decouple_instances
    from anycrowd_core.iilr import encode_iilr
    from anycrowd_core.latent_format import process_in
    from anycrowd_core.layout import build_token_layout
    from anycrowd_core.scenes import make_scene

    from .dataset import TrainingSample

    codec = TestCodec()
    text = torch.randn(1, 32, text_dim, generator=torch.Generator().manual_seed(0))
    out = []
    for i in range(n):
        scene = make_scene(num_characters=characters, num_frames=frames, height=height, width=width, seed=i)
        dec = decouple_instances(scene.reference_image, scene.reference_masks)
        cond = encode_iilr(codec, dec, scene.pose_video)
        layout = build_token_layout(dec.masks, scene.track_boxes, list(range(characters)), track_masks=scene.track_masks)
        out.append(TrainingSample(process_in(codec.encode(scene.video)), cond.vace_context, layout, text, cond.trim, 1.0, {}))
    return out


def run_variant(size: str, checkpointing: bool, steps: int, warmup: int, out_dir: str) -> dict:
    import torch

    from .config import load_config
    from .trainer import Trainer

    s = SIZES[size]
    cfg = load_config(None, [
        f"model.base={s['base']}", f"model.dtype={s['dtype']}", f"train.mixed_precision={s['mp']}",
        f"model.gradient_checkpointing={str(checkpointing).lower()}", "model.gate_hidden=32" if size == "tiny" else "model.gate_hidden=128",
        "lora.rank=4" if size == "tiny" else "lora.rank=64", "lora.alpha=4" if size == "tiny" else "lora.alpha=64",
        "data.source=procedural", f"train.max_steps={warmup + steps}", "train.progress=false", "train.tensorboard=false",
        "train.checkpoint_every=0", f"output.dir={out_dir}",
    ])
    samples = make_samples(2, s["height"], s["width"], s["frames"], s["characters"], s["text_dim"])
    trainer = Trainer(cfg, dataset=samples, log=lambda *_: None)
    trainer.setup()
    cuda = trainer.accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer.stop_after = warmup + steps
    start = time.perf_counter()
    trainer.train()
    hist = trainer.history
    timed = hist[warmup]["time"] - hist[warmup - 1]["time"] if warmup else None
    span = hist[-1]["time"] - (hist[warmup - 1]["time"] if warmup else start)
    result = {
        "size": size, "gradient_checkpointing": checkpointing, "steps": steps, "warmup_steps": warmup,
        "steps_per_s": steps / span, "first_timed_step_s": timed,
        "tokens": samples[0].layout.num_tokens, "device": str(trainer.accelerator.device),
        "threads": torch.get_num_threads(),
    }
    if cuda:
        result["peak_cuda_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu"] = torch.cuda.get_device_name()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_before_training_mib"] = rss_before
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=tuple(SIZES), default="tiny")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variant", choices=("both", "plain", "checkpointing"), default="both")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="runs/bench")
    args = p.parse_args(argv)
    if args.variant == "both":
        results = []
        for variant in ("plain", "checkpointing"):
            cmd = [sys.executable, "-m", "training.bench", "--size", args.size, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--variant", variant, "--out", f"{args.out}/{variant}"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps({"benchmark": "training step", "results": results}, indent=1))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_variant(args.size, args.variant == "checkpointing", args.steps, args.warmup, args.out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
