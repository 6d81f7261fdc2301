"""LoRA on the Wan 2.1 VACE DiT through peft: which Linear layers, injection, and reading
the adapters back as (A, B, alpha) per module path for export.

Targets are module paths inside a block (`self_attn.q`, `cross_attn.o`, `ffn.0`, ...) in
the DiT blocks (`blocks.N`) and/or VACE blocks (`vace_blocks.N`), as in AnyCrowd app. D.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anycrowd_core.errors import AnyCrowdError

ADAPTER = "default"
BRANCH_PREFIX = {"dit": "blocks", "vace": "vace_blocks"}


@dataclass
class LoraWeights:
    """One adapted Linear: down `A [rank, in]`, up `B [out, rank]`, `alpha` (scale alpha / rank)."""

    A: Tensor
    B: Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


def lora_target_names(model: nn.Module, targets: Sequence[str], branches: Sequence[str]) -> list[str]:
    """Full module paths (e.g. `vace_blocks.1.ffn.2`) of the Linear layers to adapt."""
    prefixes = "|".join(BRANCH_PREFIX[b] for b in branches)
    suffixes = "|".join(re.escape(t) for t in targets)
    pattern = re.compile(rf"^({prefixes})\.\d+\.({suffixes})$")
    names = [n for n, m in model.named_modules() if pattern.match(n) and isinstance(m, nn.Linear)]
    if not names:
        raise AnyCrowdError(
            f"No Linear layer matches LoRA targets {list(targets)} in branches {list(branches)}; "
            "use module paths such as self_attn.q or ffn.0."
        )
    return names


def apply_lora(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    branches: Sequence[str],
    dropout: float = 0.0,
    seed: int | None = None,
) -> list[str]:
    """Freeze `model` and inject peft LoRA layers in place; returns the adapted module paths.

    LoRA A gets peft's Kaiming-uniform init (from `seed` if given, else the global torch
    RNG), B starts at zero, so the adapted model equals the base model at step 0. Adapter
    weights are float32 whatever the base dtype (bf16 adapters lose small updates).
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_target_names(model, targets, branches)
    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    if seed is None:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, layer in lora_layers(model).items():
        layer.lora_A[ADAPTER].float().requires_grad_(True)
        layer.lora_B[ADAPTER].float().requires_grad_(True)
    return names


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module path (without peft / DDP wrappers) -> peft LoraLayer, in model order."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            out[clean_module_path(name)] = module
    return out


def clean_module_path(name: str) -> str:
    """Strip wrapper prefixes (DDP `module.`, our `wan.`, peft `base_model.model.`)."""
    for prefix in ("module.", "wan.", "base_model.model.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


def lora_weights(model: nn.Module) -> dict[str, LoraWeights]:
    """Module path -> detached float32 CPU copies of the adapter (for export / checkpoints)."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[name] = LoraWeights(
            A=layer.lora_A[ADAPTER].weight.detach().float().cpu().clone(),
            B=layer.lora_B[ADAPTER].weight.detach().float().cpu().clone(),
            alpha=float(layer.lora_alpha[ADAPTER]),
        )
    return out
