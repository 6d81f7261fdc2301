"""Random Wan 2.1 VACE weights with a trained model's scale, for the demo, tests and benchmarks.

No trained weights ship with this package. These weights keep activations O(1) (fan-in
scaled linears, norms near 1, small biases and modulation) so every code path produces
non-trivial numbers and differences between attention modes show up.
"""

from __future__ import annotations

import torch

from .config import WanVaceConfig
from .loading import load_wan_vace
from .model import WanVaceModel


def random_state_dict(cfg: WanVaceConfig, seed: int = 0, prefix: str = "", dtype=torch.float32) -> dict:
    """A seeded random state dict with exactly the checkpoint keys and shapes of `cfg`."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVaceModel(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if "norm" in key and key.endswith("weight"):
            value = 1 + 0.1 * noise
        elif key.endswith("modulation"):
            value = noise / cfg.dim**0.5
        elif key.endswith("bias"):
            value = 0.02 * noise
        else:  # linear / conv weight: fan-in scaling keeps activations O(1)
            value = noise / shape[1:].numel() ** 0.5
        out[prefix + key] = value.to(dtype)
    return out


def random_wan_vace(cfg: WanVaceConfig, seed: int = 0, dtype=torch.float32, device="cpu") -> WanVaceModel:
    """A WanVaceModel of size `cfg` with seeded random weights (eval mode)."""
    return load_wan_vace(random_state_dict(cfg, seed, dtype=dtype), dtype=dtype, device=device, num_heads=cfg.num_heads)
