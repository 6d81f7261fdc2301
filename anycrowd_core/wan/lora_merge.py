"""ComfyUI-format LoRA tensors applied to the core Wan model: `diffusion_model.<module
path>.lora_A.weight` / `.lora_B.weight` / `.alpha`, the format `training.run` exports and
ComfyUI's LoRA loader reads. Headless inference merges them into the weights here with the
same arithmetic as ComfyUI (W += strength * alpha / rank * B @ A).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import AnyCrowdError

LORA_PREFIX = "diffusion_model."


def lora_modules(lora: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor, float]]:
    """Module path (no prefix) -> (A, B, alpha) from ComfyUI-format LoRA tensors."""
    out = {}
    for key, a in lora.items():
        if key.endswith(".lora_A.weight"):
            base = key[: -len(".lora_A.weight")]
            b = lora[base + ".lora_B.weight"]
            alpha = lora.get(base + ".alpha")
            alpha = float(alpha) if alpha is not None else float(a.shape[0])
            out[base.removeprefix(LORA_PREFIX)] = (a, b, alpha)
    return out


@torch.no_grad()
def merge_lora(model: nn.Module, lora: Mapping[str, Tensor], strength: float = 1.0) -> nn.Module:
    """Add strength * alpha / rank * B @ A to each adapted Linear of a core WanVaceModel, in
    place (headless inference with a trained LoRA; the same arithmetic as ComfyUI's loader)."""
    modules = dict(model.named_modules())
    for path, (a, b, alpha) in lora_modules(lora).items():
        layer = modules.get(path)
        if not isinstance(layer, nn.Linear):
            raise AnyCrowdError(f"LoRA module {path!r} is not a Linear layer of this model; the LoRA is for another model.")
        delta = (b.float() @ a.float()) * (strength * alpha / a.shape[0])
        if delta.shape != layer.weight.shape:
            raise AnyCrowdError(f"LoRA {path!r} has shape {tuple(delta.shape)}, the layer {tuple(layer.weight.shape)}: wrong model size.")
        layer.weight.copy_((layer.weight.float() + delta).to(layer.weight.dtype))
    return model
