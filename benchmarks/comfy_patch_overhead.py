"""Overhead of the AnyCrowd patch on ComfyUI's native Wan 2.1 VACE model: one denoiser call
(cond + uncond batched, as KSampler runs it) unpatched vs patched, interleaved in one process.

Run: COMFYUI_PATH=$HOME/comfyui $HOME/comfy-venv/bin/python benchmarks/comfy_patch_overhead.py [--json] [--backend NAME]
Target: mode `global` costs <= 1.05x the unpatched call; masked and tsda are reported for information,
each two ways: groups on torch SDPA (`masked`, `tsda`) and groups through ComfyUI's attention function
(`masked_comfy`, `tsda_comfy`: what nodes/comfy_attention.py does for backends not in SDPA_INSTEAD_OF).
--backend sets ComfyUI's attention function (pytorch, sub_quad, split, basic; default: the host's).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # our package as ComfyUI loads it + the host helpers

from anycrowd_core.layout import build_token_layout  # noqa: E402
from comfy_host import COMFYUI_PATH, import_comfy, load_pack_with_comfy, tiny_vace_patcher  # noqa: E402

TARGET = 1.05


def bench_layout(size: int, frames: int):
    """Two identities (left / right halves) with overlapping boxes, plus the background."""
    ref = torch.zeros(2, size, size, dtype=torch.bool)
    ref[0, :, : size // 2] = True
    ref[1, :, size // 2 :] = True
    left, right = [[0, 0, 0.6 * size, size]] * frames, [[0.4 * size, 0, size, size]] * frames
    return build_token_layout(ref, torch.tensor([left, right], dtype=torch.float32), [0, 1])


class BatchSpy:
    """Stands in for the hook in transformer_options and records the batch size it is called with."""

    def __init__(self, hook, batches: set):
        self.hook, self.batches = hook, batches
        self.mode, self.branches = hook.mode, hook.branches

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x, ops):
        self.batches.add(x.shape[0])
        return self.hook(x, ops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--size", type=int, default=128, help="frame width = height in pixels")
    ap.add_argument("--frames", type=int, default=9, help="pixel frames (4n+1)")
    ap.add_argument("--repeats", type=int, default=25, help="interleaved rounds")
    ap.add_argument("--calls", type=int, default=3, help="timed denoiser calls per round and variant")
    ap.add_argument("--backend", default=None, help="ComfyUI attention function for every variant: "
                    "pytorch, sub_quad, split or basic (default: the one the host chose)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: stable timings on a shared CPU; 0: torch's default)")
    args = ap.parse_args()
    if not COMFYUI_PATH:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    comfy = import_comfy()
    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan_model

    if args.backend:  # WanSelfAttention calls the name it imported into comfy.ldm.wan.model
        attention.optimized_attention = wan_model.optimized_attention = getattr(attention, f"attention_{args.backend}")
    pack = load_pack_with_comfy()
    patch_model = importlib.import_module(f"{pack.__name__}.nodes.comfy_patch").patch_model
    comfy_attention = importlib.import_module(f"{pack.__name__}.nodes.comfy_attention")
    exact = comfy_attention.SDPA_INSTEAD_OF

    layout = bench_layout(args.size, args.frames)
    base = tiny_vace_patcher(seed=0)
    variants = {"unpatched": base}
    for mode in ("global", "masked", "tsda"):
        variants[mode] = patch_model(base, layout, mode=mode)
    for mode in ("masked", "tsda"):  # same patch; sampled with every backend sent to ComfyUI
        variants[f"{mode}_comfy"] = patch_model(base, layout, mode=mode)

    g = torch.Generator().manual_seed(0)
    frames = layout.num_ref_frames + layout.video_frames
    shape = (1, 16, frames, 2 * layout.grid[0], 2 * layout.grid[1])
    vace = {"vace_frames": [torch.randn(1, 32, *shape[2:], generator=g)],
            "vace_mask": [torch.rand(1, 64, *shape[2:], generator=g)], "vace_strength": [1.0]}
    positive = [[torch.randn(1, 16, 4096, generator=g), dict(vace)]]
    negative = [[torch.randn(1, 16, 4096, generator=g), dict(vace)]]
    latent, noise = torch.zeros(shape), torch.randn(shape, generator=g)
    sigmas = torch.tensor([0.9, 0.0])
    times: dict[str, list[float]] = {k: [] for k in [*variants, "spy"]}

    def timing_sampler(label: str):
        # A KSAMPLER whose "sampler" times the CFG denoiser (the patched model's whole
        # forward for cond + uncond), i.e. the per-step cost without scheduler overhead.
        def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
            s = sigmas[0] * x.new_ones([x.shape[0]])
            for _ in range(args.calls):
                t0 = time.perf_counter()
                model(x, s, **extra_args)
                times[label].append(time.perf_counter() - t0)
            return x

        return comfy.samplers.KSAMPLER(sample)

    hook_batches: set[int] = set()
    with torch.inference_mode():
        for rnd in range(args.repeats + 1):  # round 0 warms up (plans, allocator) and is dropped
            order = list(variants.items())
            for label, patcher in order if rnd % 2 else order[::-1]:  # alternate to cancel drift
                n = len(times[label])
                comfy_attention.SDPA_INSTEAD_OF = frozenset() if label.endswith("_comfy") else exact
                comfy.sample.sample_custom(patcher, noise, 5.0, timing_sampler(label), sigmas,
                                           positive, negative, latent, disable_pbar=True, seed=0)
                if rnd == 0:
                    del times[label][n:]
        comfy_attention.SDPA_INSTEAD_OF = exact
        # the batch the hook sees: 2 when CFG batches cond + uncond into one forward
        options = variants["masked"].model_options["transformer_options"]
        hook = options["anycrowd"]
        options["anycrowd"] = BatchSpy(hook, hook_batches)
        try:
            comfy.sample.sample_custom(variants["masked"], noise, 5.0, timing_sampler("spy"), sigmas,
                                       positive, negative, latent, disable_pbar=True, seed=0)
        finally:
            options["anycrowd"] = hook

    median_ms = {k: 1000 * statistics.median(times[k]) for k in variants}
    ratio = {k: median_ms[k] / median_ms["unpatched"] for k in variants if k != "unpatched"}
    result = {
        "benchmark": "comfy_patch_overhead",
        "host": f"ComfyUI at {COMFYUI_PATH}, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "comfy_attention": wan_model.optimized_attention.__name__,
        "model": "tiny random Wan 2.1 VACE (dim 256, 4 DiT + 2 VACE blocks) via comfy.sd",
        "tokens": layout.num_tokens,
        "frame": f"{args.size}x{args.size} px, {args.frames} frames + {layout.num_ref_frames} reference frames",
        "hook_batch": sorted(hook_batches),
        "samples_per_variant": len(times["unpatched"]),
        "median_ms": {k: round(v, 3) for k, v in median_ms.items()},
        "ratio_vs_unpatched": {k: round(v, 4) for k, v in ratio.items()},
        "target_global_ratio": TARGET,
        "global_within_target": ratio["global"] <= TARGET,
    }
    if not args.json:
        for k, v in median_ms.items():
            print(f"{k:13s} {v:8.2f} ms" + ("" if k == "unpatched" else f"   x{ratio[k]:.3f}"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
