"""Benchmark of the attention modes (global / masked / tsda) at one token count.

    python -m anycrowd_core.bench.attention --tokens 8192 --identities 4 --json

Times each mode in one process (warmup, median of repeats) with a real Wan-style layer
(q/k/v/o Linear, q/k RMSNorm, rotary), and measures each mode's peak memory in a fresh
subprocess (CPU: peak-RSS growth over the call, glibc forced to mmap big blocks so freed
memory leaves the process; CUDA: torch peak allocated bytes). Results in docs/tsda.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import Tensor, nn

from ..attention import AnyCrowdAttention, GateBank, SelfAttentionOps
from ..layout import TokenLayout, build_token_layout

MODES = ("global", "masked", "tsda")


class ToySelfAttention(nn.Module):
    """A Wan-shaped self-attention layer: q/k/v/o Linear (+ optional LoRA delta on each),
    RMSNorm on q and k, rotary embedding over the flat token position. For tests/benchmarks."""

    def __init__(self, dim: int, heads: int, lora_rank: int = 0):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
        self.lora = nn.ModuleDict()
        if lora_rank:
            for name in "qkvo":
                self.lora[name] = nn.Sequential(nn.Linear(dim, lora_rank, bias=False),
                                                nn.Linear(lora_rank, dim, bias=False))

    def _proj(self, name: str, x: Tensor) -> Tensor:
        y = getattr(self, name)(x)
        return y + self.lora[name](x) if name in self.lora else y

    def _rope(self, t: Tensor) -> Tensor:
        d = t.shape[-1]
        pos = torch.arange(t.shape[1], device=t.device, dtype=torch.float32)
        freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=t.device, dtype=torch.float32) / d))
        ang = pos[:, None] * freq[None]
        cos, sin = ang.cos()[None, :, None].to(t.dtype), ang.sin()[None, :, None].to(t.dtype)
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        shape = (b, n, self.heads, self.dim // self.heads)
        q = self._rope(self.norm_q(self._proj("q", x)).view(shape))
        k = self._rope(self.norm_k(self._proj("k", x)).view(shape))
        return q, k, self._proj("v", x).view(shape)

    def out(self, a: Tensor) -> Tensor:
        return self._proj("o", a.flatten(2))

    def ops(self, branch: str = "dit", index: int = 0) -> SelfAttentionOps:
        return SelfAttentionOps(self.qkv, self.out, branch, index)


def synthetic_layout(tokens: int, identities: int, frames: int = 81, seed: int = 0) -> TokenLayout:
    """A layout of at least `tokens` tokens (the smallest ~9:16 grid that reaches it):
    `identities` reference frames + background + the latent frames of `frames` pixel
    frames; side-by-side overlapping moving boxes."""
    t_lat = (frames - 1) // 4 + 1
    hw = max(1, math.ceil(tokens / (identities + 1 + t_lat)))
    h = max(1, round(math.sqrt(hw * 9 / 16)))
    w = max(1, math.ceil(hw / h))
    height, width = 16 * h, 16 * w
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    masks = torch.stack([
        ((xx - width / 2) / (0.25 * width)) ** 2 + ((yy - height / 2) / (0.4 * height)) ** 2 <= 1
        for _ in range(identities)
    ])
    slot = width / identities
    boxes = torch.empty(identities, frames, 4)
    for i in range(identities):
        phase = float(torch.rand((), generator=g)) * 6.28
        drift = 0.3 * slot * torch.sin(torch.linspace(0, 3.14, frames) + phase)
        cx = slot * (i + 0.5) + drift
        half = 0.8 * slot  # boxes 1.6 slots wide: neighbours overlap
        boxes[i, :, 0], boxes[i, :, 2] = cx - half, cx + half
        boxes[i, :, 1], boxes[i, :, 3] = 0.1 * height, 0.95 * height
    return build_token_layout(masks, boxes, list(range(identities)))


def _setup(args):
    torch.manual_seed(0)
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    layout = synthetic_layout(args.tokens, args.identities).to(dev)
    layer = ToySelfAttention(args.dim, args.heads).to(dev, dtype)
    gates = GateBank(args.dim, 1, 0).to(dev, dtype)
    for p in gates.parameters():  # a trained-looking, non-trivial gate
        nn.init.normal_(p, std=0.02)
    x = torch.randn(1, layout.num_tokens, args.dim, device=dev, dtype=dtype)
    hooks = {m: AnyCrowdAttention(layout, mode=m, agf="gated", gates=gates) for m in MODES}
    return layout, layer.ops("dit", 0), x, hooks


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe_or_run(args, probe, run) -> int:
    """The benchmarks' entry: `--probe` measures one case in this fresh process and prints one
    JSON line for the parent; otherwise the whole benchmark, printed indented (one line with
    --json)."""
    out = probe(args) if args.probe else run(args)
    print(json.dumps(out) if (args.json or args.probe) else json.dumps(out, indent=2))
    return 0


def _probe(args) -> dict:
    """Peak extra memory of one call of `args.probe` (run inside a fresh process)."""
    layout, ops, x, hooks = _setup(args)
    hook = hooks[args.probe]
    with torch.no_grad():
        hook(x, ops)  # plans, kernels and allocator warm
        _sync(args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            hook(x, ops)
            _sync(args.device)
            return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "method": "cuda_max_allocated"}
        base = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter to the current RSS
        hook(x, ops)
        return {"peak_bytes": (_rss_kib("VmHWM") - base) * 1024, "method": "peak_rss_growth"}


def _memory(args, mode: str) -> int | None:
    cmd = [sys.executable, "-m", "anycrowd_core.bench.attention", "--probe", mode,
           "--tokens", str(args.tokens), "--identities", str(args.identities), "--dim", str(args.dim),
           "--heads", str(args.heads), "--dtype", args.dtype, "--device", args.device]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        sys.stderr.write(res.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"]


def run(args) -> dict:
    layout, ops, x, hooks = _setup(args)
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    with torch.no_grad():
        for mode in MODES:
            hooks[mode](x, ops)
        # modes interleaved so that drift of a shared machine hits them alike
        for _ in range(args.repeats):
            for mode in MODES:
                _sync(args.device)
                t0 = time.perf_counter()
                hooks[mode](x, ops)
                _sync(args.device)
                samples[mode].append(time.perf_counter() - t0)
    times = {m: statistics.median(s) for m, s in samples.items()}
    count = layout.candidate_count
    result = {
        "tokens": layout.num_tokens, "video_tokens": layout.num_video_tokens,
        "identities": layout.num_identities, "grid": list(layout.grid),
        "video_latent_frames": layout.video_frames,
        "overlap_tokens": int((count >= 2).sum()), "max_candidates": int(count.max()),
        "dim": args.dim, "heads": args.heads, "dtype": args.dtype, "device": args.device,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "time_s": {m: round(t, 4) for m, t in times.items()},
        "ratio_to_global": {m: round(times[m] / times["global"], 3) for m in MODES},
    }
    if not args.no_memory:
        mem = {m: _memory(args, m) for m in MODES}
        result["peak_memory_bytes"] = mem
        result["memory_method"] = ("cuda_max_allocated" if args.device.startswith("cuda")
                                   else "peak_rss_growth (fresh process per mode, glibc mmap threshold 64 KiB)")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--identities", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode memory subprocesses")
    p.add_argument("--json", action="store_true", help="print one JSON object on one line (default: indented)")
    p.add_argument("--probe", choices=MODES, help=argparse.SUPPRESS)
    return probe_or_run(p.parse_args(argv), _probe, run)


if __name__ == "__main__":
    raise SystemExit(main())
