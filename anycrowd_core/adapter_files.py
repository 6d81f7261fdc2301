"""Reading AnyCrowd adapter files (what `python -m training.run` writes, training/export.py):
a LoRA in ComfyUI's key format and the AGF gates, each a .safetensors with metadata naming the
base model size it fits (and, when recorded, its family, size, expert and checkpoint:
adapter_base). Used by AnyCrowd Load Adapter and the Mini Loader; no training import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .adapter_base import AdapterBase
from .attention import GateBank
from .errors import AnyCrowdError
from .wan import WanVaceConfig

FORMAT_VERSION = "1"
LORA_FORMAT = "anycrowd-lora"
GATES_FORMAT = "anycrowd-gates"
SIZE_KEYS = ("dim", "num_layers", "vace_layers")  # what makes an adapter fit a model


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
