"""Tiny Wan 2.1 VACE configs, random checkpoints and inputs for fast CPU tests.

Import in tests as `from tiny_wan import tiny_config, random_state_dict, tiny_model, tiny_inputs`.
Random weights come from `anycrowd_core.wan.random_init` (scaled like a trained model's).
"""

from __future__ import annotations

import torch

from anycrowd_core.wan import WanVaceConfig, WanVaceModel, random_state_dict, random_wan_vace  # noqa: F401  (tests import random_state_dict from here)


def tiny_config(**overrides) -> WanVaceConfig:
    """dim 64, 4 heads (head_dim 16), 4 DiT blocks, 2 VACE blocks (at DiT blocks 0 and 2)."""
    base = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=4, vace_layers=2, text_dim=32, freq_dim=32)
    base.update(overrides)
    return WanVaceConfig(**base)


def tiny_model(cfg: WanVaceConfig | None = None, seed: int = 0, dtype=torch.float32) -> WanVaceModel:
    cfg = cfg or tiny_config()
    return random_wan_vace(cfg, seed, dtype=dtype)


def tiny_inputs(
    cfg: WanVaceConfig | None = None,
    batch: int = 1,
    frames: int = 3,
    height: int = 4,
    width: int = 6,
    contexts: int = 1,
    text_len: int = 5,
    seed: int = 1,
) -> dict:
    """Keyword arguments for `model(**inputs)`: latents of frames x height x width (latent units)."""
    cfg = cfg or tiny_config()
    gen = torch.Generator().manual_seed(seed)
    vace = torch.randn(contexts, batch, cfg.vace_in_dim, frames, height, width, generator=gen)
    return dict(
        x=torch.randn(batch, cfg.in_dim, frames, height, width, generator=gen),
        t=torch.rand(batch, generator=gen) * 1000,
        context=torch.randn(batch, text_len, cfg.text_dim, generator=gen),
        vace_context=vace[0] if contexts == 1 else vace,
    )
