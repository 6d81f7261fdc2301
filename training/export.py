"""Trained adapters as files ComfyUI loads: a LoRA in ComfyUI's key format and the AGF gates.

LoRA keys: `diffusion_model.<module path>.lora_A.weight` / `.lora_B.weight` / `.alpha`
(ComfyUI's "diffusers2" LoRA format, mapped by comfy.lora.model_lora_keys_unet). Gates:
the GateBank state dict. Both carry metadata naming the base model size they fit and, since
adapters record their base (training.adapter_base), its family, size, expert and checkpoint.
No peft import here: this module is also used by the ComfyUI node AnyCrowdLoadAdapter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from anycrowd_core.attention import GateBank
from anycrowd_core.errors import AnyCrowdError, require_finite
from anycrowd_core.files import atomic_output
from anycrowd_core.wan import PRESETS, WanVaceConfig
from anycrowd_core.wan.lora_merge import LORA_PREFIX as PREFIX
from anycrowd_core.wan.lora_merge import lora_modules, merge_lora  # noqa: F401  (public here too)

from .adapter_base import AdapterBase

FORMAT_VERSION = "1"
LORA_FORMAT = "anycrowd-lora"
GATES_FORMAT = "anycrowd-gates"
SIZE_KEYS = ("dim", "num_layers", "vace_layers")  # what makes an adapter fit a model


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


def lora_state_dict(weights: Mapping[str, "object"]) -> dict[str, Tensor]:
    """ComfyUI-format tensors from `{module path: LoraWeights}` (training.lora.lora_weights)."""
    out = {}
    for path, w in weights.items():
        key = PREFIX + path
        out[f"{key}.lora_A.weight"] = w.A.contiguous()
        out[f"{key}.lora_B.weight"] = w.B.contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(w.alpha))
    return out


def save_lora(path: str | os.PathLike, weights: Mapping[str, "object"], model_cfg: WanVaceConfig,
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


# ---------------------------------------------------------------- loading


@dataclass
class AdapterFiles:
    """What `load_adapter_files` returns.

    lora: ComfyUI-format LoRA tensors (`diffusion_model.*.lora_A.weight` ...) ready for
      `comfy.lora.load_lora` / `merge_lora`, or None. gates: a GateBank (float32, CPU)
      holding the trained gating blocks, or None. metadata: {'lora': {...}, 'gates': {...}}.
    """

    lora: dict[str, Tensor] | None
    gates: GateBank | None
    metadata: dict


def _size_of(model_config) -> dict[str, int]:
    if isinstance(model_config, WanVaceConfig):
        return {k: int(getattr(model_config, k)) for k in SIZE_KEYS}
    if isinstance(model_config, Mapping) and all(k in model_config for k in SIZE_KEYS):
        return {k: int(model_config[k]) for k in SIZE_KEYS}
    raise AnyCrowdError(
        "load_adapter_files needs the model's size: a WanVaceConfig or a mapping with "
        f"{', '.join(SIZE_KEYS)}."
    )


def _describe(size: Mapping, name: str | None = None) -> str:
    label = name if name and name != "custom" else "a Wan 2.1 VACE model"
    return f"{label} (dim {size['dim']}, {size['num_layers']} blocks, {size['vace_layers']} VACE blocks)"


def _trained_on(meta: Mapping) -> str | None:
    """The recorded base in words (None for a file that does not record it)."""
    base = AdapterBase.from_metadata(meta)
    return None if base is None else base.describe()


def _read(path, kind: str, expected_format: str) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AnyCrowdError(f"AnyCrowd {kind} file {str(path)!r} does not exist; check the path.")
    if path.suffix.lower() != ".safetensors":
        raise AnyCrowdError(f"{path.name}: AnyCrowd {kind} files are .safetensors (pickle is never loaded).")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise AnyCrowdError(f"{path} is not a readable safetensors file ({e}); copy it again.") from e
    fmt = meta.get("format")
    if fmt != expected_format:
        other = {LORA_FORMAT: "LoRA", GATES_FORMAT: "gates"}.get(fmt or "")
        hint = f" It is an AnyCrowd {other} file: swap the two inputs." if other else ""
        raise AnyCrowdError(
            f"{path.name} is not an AnyCrowd {kind} file (metadata format {fmt!r}).{hint} "
            f"Pick the *_{'lora' if kind == 'LoRA' else 'gates'}.safetensors written by `python -m training.run`."
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise AnyCrowdError(
            f"{path.name} has AnyCrowd {kind} format version {meta.get('format_version')!r}; this package reads "
            f"version {FORMAT_VERSION}. Update the package or re-export the adapter."
        )
    _check_finite(tensors, path, kind)
    return tensors, meta


class NonFiniteAdapter(AnyCrowdError):
    """An adapter file holds NaN/inf: patched in, it turns every sampled frame into NaN."""


def _check_finite(tensors: dict[str, Tensor], path: Path, kind: str) -> None:
    bad = [key for key, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteAdapter(
            f"The AnyCrowd {kind} file {path.name} holds NaN or infinite values in {len(bad)} tensor(s) (e.g. "
            f"{bad[0]}): the training run diverged or the file is damaged. Pick another file, or re-export the "
            "adapter from an earlier checkpoint of the run."
        )


def _check_size(meta: dict, want: dict, path, kind: str) -> None:
    try:
        have = {k: int(meta[k]) for k in SIZE_KEYS}
    except (KeyError, ValueError):
        raise AnyCrowdError(f"{Path(path).name}: the {kind} file lacks its base-model size in the metadata; re-export it.") from None
    if have != want:
        raise AnyCrowdError(
            f"The AnyCrowd {kind} {Path(path).name} was trained for {_describe(have, _trained_on(meta) or meta.get('base_model'))}, "
            f"but the loaded model is {_describe(want)}. Load the adapter trained for this model size "
            "(or load the Wan 2.1 VACE model it was trained on)."
        )


def load_adapter_files(lora_path=None, gates_path=None, model_config=None) -> AdapterFiles:
    """Read an AnyCrowd LoRA and/or gates file and check they fit `model_config`
    (a WanVaceConfig, or a mapping with dim / num_layers / vace_layers).

    Raises AnyCrowdError for a missing or foreign file, a format version this code does not
    read, an adapter trained for another model size (the message names both sizes), and
    NonFiniteAdapter for NaN/inf weights.
    """
    want = _size_of(model_config)
    meta: dict = {}
    lora = gates = None
    if lora_path is not None:
        lora, meta["lora"] = _read(lora_path, "LoRA", LORA_FORMAT)
        _check_size(meta["lora"], want, lora_path, "LoRA")
    if gates_path is not None:
        tensors, meta["gates"] = _read(gates_path, "gates", GATES_FORMAT)
        _check_size(meta["gates"], want, gates_path, "gates")
        hidden = int(meta["gates"].get("gate_hidden", tensors["dit.0.fc1.weight"].shape[0]))
        gates = GateBank(want["dim"], want["num_layers"], want["vace_layers"], hidden=hidden)
        try:
            gates.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise AnyCrowdError(f"{Path(gates_path).name} does not hold a complete gate bank ({str(e)[:200]}); re-export it.") from None
    return AdapterFiles(lora=lora, gates=gates, metadata=meta)


def read_metadata(path) -> dict:
    """Metadata of an adapter file (empty dict if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def metadata_json(meta: Mapping) -> str:
    return json.dumps(dict(meta), sort_keys=True, indent=1)
