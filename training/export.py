"""Writing trained adapters as files ComfyUI loads: a LoRA in ComfyUI's key format and the AGF gates.

LoRA keys: `diffusion_model.<module path>.lora_A.weight` / `.lora_B.weight` / `.alpha`
(ComfyUI's "diffusers2" LoRA format, mapped by comfy.lora.model_lora_keys_unet). Gates:
the GateBank state dict. Both carry metadata naming the base model size they fit and, since
adapters record their base (anycrowd_core.adapter_base), its family, size, expert and checkpoint.
They are read back (and size-checked) by anycrowd_core.adapter_files, which the nodes use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from anycrowd_core.adapter_base import AdapterBase
from anycrowd_core.adapter_files import FORMAT_VERSION, GATES_FORMAT, LORA_FORMAT
from anycrowd_core.attention import GateBank
from anycrowd_core.errors import require_finite
from anycrowd_core.files import atomic_output
from anycrowd_core.wan import PRESETS, WanVaceConfig
from anycrowd_core.wan.lora_merge import LORA_PREFIX as PREFIX


def base_model_name(cfg: WanVaceConfig, base: AdapterBase | None = None) -> str:
    """'wan2.1-vace-1.3b' / 'wan2.1-vace-14b' for the released sizes ('wan2.2-vace-fun-a14b'
    for a Wan 2.2 VACE-Fun expert's base), else 'custom'."""
    for key, preset in PRESETS.items():
        if all(getattr(cfg, f) == getattr(preset, f) for f in ("dim", "ffn_dim", "num_layers", "vace_layers")):
            if base is not None and base.family == "wan2.2-vace-fun":
                return f"wan2.2-vace-fun-a{key}"
            return f"wan2.1-vace-{key}"
    return "custom"


def model_metadata(cfg: WanVaceConfig, base: AdapterBase | None = None) -> dict[str, str]:
    """Shapes of the base model (what an adapter must fit) and, when given, its recorded base."""
    return {
        **(base.metadata() if base is not None else {}),
        "base_model": base_model_name(cfg, base),
        "dim": str(cfg.dim),
        "ffn_dim": str(cfg.ffn_dim),
        "num_heads": str(cfg.num_heads),
        "num_layers": str(cfg.num_layers),
        "vace_layers": str(cfg.vace_layers),
        "text_dim": str(cfg.text_dim),
    }


def lora_state_dict(weights: Mapping[str, object]) -> dict[str, Tensor]:
    """ComfyUI-format tensors from `{module path: LoraWeights}` (training.lora.lora_weights)."""
    out = {}
    for path, w in weights.items():
        key = PREFIX + path
        out[f"{key}.lora_A.weight"] = w.A.contiguous()
        out[f"{key}.lora_B.weight"] = w.B.contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(w.alpha))
    return out


def save_lora(path: str | os.PathLike, weights: Mapping[str, object], model_cfg: WanVaceConfig,
              *, rank: int, alpha: float, config_hash: str = "", extra: Mapping[str, str] | None = None,
              base: AdapterBase | None = None) -> Path:
    """Write the LoRA safetensors (atomically) with metadata (`base`: what it was trained on)."""
    meta = {
        "format": LORA_FORMAT,
        "format_version": FORMAT_VERSION,
        **model_metadata(model_cfg, base),
        "rank": str(rank),
        "alpha": str(alpha),
        "config_hash": config_hash,
        "modules": str(len(weights)),
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    return _atomic_save(Path(path), lora_state_dict(weights), meta)


def save_gates(path: str | os.PathLike, gates: GateBank, model_cfg: WanVaceConfig,
               *, config_hash: str = "", extra: Mapping[str, str] | None = None,
               base: AdapterBase | None = None) -> Path:
    """Write the GateBank state dict (float32) with metadata (`base`: what it was trained on)."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in gates.state_dict().items()}
    meta = {
        "format": GATES_FORMAT,
        "format_version": FORMAT_VERSION,
        **model_metadata(model_cfg, base),
        "gate_hidden": str(gates.hidden),
        "dit_gates": str(len(gates.dit)),
        "vace_gates": str(len(gates.vace)),
        "config_hash": config_hash,
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    return _atomic_save(Path(path), tensors, meta)


def save_full_model(path: str | os.PathLike, model: nn.Module, *, config_hash: str = "",
                    extra: Mapping[str, str] | None = None, base: AdapterBase | None = None) -> Path:
    """Write a fully trained Wan 2.1 VACE model (model.training=full) as a checkpoint that
    `load_wan_vace` and ComfyUI load: official key names, float32, with metadata."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "anycrowd-full-model", "format_version": FORMAT_VERSION, **model_metadata(model.config, base),
            "config_hash": config_hash, **{k: str(v) for k, v in (extra or {}).items()}}
    return _atomic_save(Path(path), tensors, meta)


def _atomic_save(path: Path, tensors: dict, meta: dict) -> Path:
    """Refuses NaN/inf (a NaN adapter would load fine and paint black frames), then writes
    through a temporary file, fsynced, renamed."""
    from safetensors.torch import save_file

    for key, tensor in tensors.items():
        require_finite(tensor, f"{path.name}: tensor {key}",
                       "Training diverged; nothing was written. Resume from an earlier checkpoint with a lower optim.lr.")
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    return path
