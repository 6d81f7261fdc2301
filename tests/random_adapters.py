"""Seeded random adapters for tests: LoRA weights on the trainer's targets and gate banks whose
gates act (every parameter drawn, as after training), in the formats `training.export` saves.

Import in tests as `from random_adapters import random_gates, random_lora`.
"""

from __future__ import annotations

import torch

from anycrowd_core.attention import GateBank
from training.config import LORA_TARGETS
from training.lora import LoraWeights, lora_target_names


def random_lora(model, rank: int = 4, alpha: float = 8.0, seed: int = 0) -> dict[str, LoraWeights]:
    """LoRA weights for every LORA_TARGETS layer of `model`'s DiT and VACE blocks (a meta-device
    model gives the shapes): A scaled by 1/sqrt(in features), B by 0.05, from a generator seeded
    with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    out = {}
    for path in lora_target_names(model, LORA_TARGETS, ("dit", "vace")):
        w = modules[path].weight
        out[path] = LoraWeights(A=torch.randn(rank, w.shape[1], generator=gen) / w.shape[1] ** 0.5,
                                B=torch.randn(w.shape[0], rank, generator=gen) * 0.05, alpha=alpha)
    return out


def random_gates(dim: int, layers: int, vace_layers: int, hidden: int, std: float = 0.5, seed: int = 0) -> GateBank:
    """A GateBank for `layers` DiT and `vace_layers` VACE blocks of width `dim` with every
    parameter drawn from N(0, std), after torch.manual_seed(seed) (the bank's own init draws from
    the global generator too)."""
    torch.manual_seed(seed)
    gates = GateBank(dim, layers, vace_layers, hidden=hidden)
    for p in gates.parameters():
        torch.nn.init.normal_(p, std=std)
    return gates
