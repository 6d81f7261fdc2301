"""Load and save Wan 2.1 VACE weights (.safetensors only, never pickle).

Keys and shapes are checked before any tensor is read, and the model is built on the
meta device and filled with `assign=True`, so a 14B file is held in memory once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..errors import AnyCrowdError
from .config import WanVaceConfig
from .model import WanVaceModel

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FLOAT32_KEYS = ("patch_embedding.", "vace_patch_embedding.")  # kept float32 like ComfyUI


def load_wan_vace(
    source: str | os.PathLike | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    num_heads: int | None = None,
) -> WanVaceModel:
    """Build a `WanVaceModel` from a Wan 2.1 VACE `.safetensors` file or a state dict.

    Keys may carry the `model.diffusion_model.` or `diffusion_model.` prefix (other
    prefixed parts of a full checkpoint are ignored). The config is inferred from the
    weights (`num_heads` defaults to dim // 128). `dtype` None keeps the file's dtype
    (float8 files are upcast to bfloat16); patch embeddings always stay float32.
    Returns the model in eval mode. Raises AnyCrowdError for files of the wrong kind.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"
    if isinstance(source, (str, os.PathLike)):
        shapes, read = _open_safetensors(Path(source))
    else:
        shapes = {k: tuple(v.shape) for k, v in source.items()}
        read = source.__getitem__
        if not all(isinstance(v, torch.Tensor) for v in source.values()):
            raise AnyCrowdError(f"{name} must map key names to tensors.")
    shapes, rename = _strip_prefix(shapes)
    cfg, model = _checked_config(shapes, name, num_heads)

    if dtype is None:
        first = read(rename["blocks.0.self_attn.q.weight"])
        dtype = first.dtype if first.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16
    state_dict = {}
    for key in shapes:
        target = torch.float32 if key.startswith(FLOAT32_KEYS) else dtype
        state_dict[key] = read(rename[key]).to(device=device, dtype=target)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def inspect_wan_vace(path: str | os.PathLike, num_heads: int | None = None) -> WanVaceConfig:
    """The config of a Wan 2.1 VACE `.safetensors` file, read from its header only (no
    tensor is loaded): the same checks and errors as `load_wan_vace`, cheap enough to run
    before any heavy work (e.g. when a training config is validated)."""
    shapes, _ = _open_safetensors(Path(path))
    shapes, _ = _strip_prefix(shapes)
    return _checked_config(shapes, str(path), num_heads)[0]


def _checked_config(shapes: Mapping[str, tuple], name: str, num_heads: int | None) -> tuple[WanVaceConfig, WanVaceModel]:
    """Infer the config from the key shapes and check every key against a meta-device model."""
    cfg = _check_kind(shapes, name, num_heads)
    with torch.device("meta"):
        model = WanVaceModel(cfg)
    _check_keys(shapes, {k: tuple(v.shape) for k, v in model.state_dict().items()}, name, cfg)
    return cfg, model


def save_wan_vace(model: WanVaceModel, path: str | os.PathLike, prefix: str = "") -> None:
    """Write the model's weights to `.safetensors` (keys optionally prefixed, e.g.
    'model.diffusion_model.' for a ComfyUI checkpoint layout)."""
    from safetensors.torch import save_file

    tensors = {prefix + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path))


def _open_safetensors(path: Path) -> tuple[dict[str, tuple[int, ...]], Callable[[str], Tensor]]:
    """Key -> shape of a safetensors file (header only) and a reader for single tensors."""
    from safetensors import safe_open

    if not path.is_file():
        raise AnyCrowdError(f"Wan checkpoint {path} does not exist; check the path.")
    if path.suffix.lower() != ".safetensors":
        raise AnyCrowdError(
            f"{path.name}: only .safetensors Wan checkpoints are loaded (pickled .pt/.ckpt files can "
            "run code when opened); download the .safetensors release of the model."
        )
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError with terse messages
        raise AnyCrowdError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is probably "
            "truncated or corrupt: download it again."
        ) from e

    def read(key: str) -> Tensor:
        try:
            return handle.get_tensor(key)
        except Exception as e:
            raise AnyCrowdError(
                f"Could not read tensor {key!r} from {path} ({e}); the file is probably truncated "
                "or corrupt: download it again."
            ) from e

    return shapes, read


def _strip_prefix(shapes: Mapping[str, tuple]) -> tuple[dict[str, tuple], dict[str, str]]:
    """Drop a ComfyUI checkpoint prefix; returns (unprefixed key -> shape, unprefixed -> original)."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in shapes):
            kept = [k for k in shapes if k.startswith(prefix)]
            return {k[len(prefix):]: shapes[k] for k in kept}, {k[len(prefix):]: k for k in kept}
    return dict(shapes), {k: k for k in shapes}


def _check_kind(shapes: Mapping[str, tuple], name: str, num_heads: int | None) -> WanVaceConfig:
    """Recognise a Wan 2.1 VACE state dict, or say what the file is instead."""
    if "scaled_fp8" in shapes or any(k.endswith(".scale_weight") for k in shapes):
        raise AnyCrowdError(
            f"{name} is a ComfyUI 'fp8_scaled' checkpoint, which the headless loader does not "
            "dequantise; use the bf16 or fp16 Wan 2.1 VACE file."
        )
    if "head.modulation" not in shapes or not any(k.startswith("blocks.") for k in shapes):
        sample = ", ".join(sorted(shapes)[:4]) or "no tensors"
        raise AnyCrowdError(
            f"{name} is not a Wan 2.1 diffusion model (no 'blocks.*' / 'head.modulation' keys; "
            f"found e.g. {sample}). Select the Wan 2.1 VACE diffusion-model .safetensors file."
        )
    if not any(k.startswith("vace_blocks.") for k in shapes) or "vace_patch_embedding.weight" not in shapes:
        kind = "I2V" if any(k.startswith("img_emb.") for k in shapes) else "T2V"
        raise AnyCrowdError(
            f"{name} is a plain Wan 2.1 {kind} model (it has DiT blocks but no 'vace_blocks'). "
            "AnyCrowd needs a Wan 2.1 VACE checkpoint (e.g. wan2.1_vace_1.3B or wan2.1_vace_14B)."
        )
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}  # shapes only, no data
    return WanVaceConfig.from_state_dict(meta, num_heads=num_heads)


def _check_keys(found: Mapping[str, tuple], expected: Mapping[str, tuple], name: str, cfg: WanVaceConfig) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return

    def few(keys, show=lambda k: k):
        listed = ", ".join(show(k) for k in keys[:4])
        return listed + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
    if misshaped:
        problems.append(
            f"{len(misshaped)} keys with wrong shapes ("
            + few(misshaped, lambda k: f"{k}: {list(found[k])}, expected {list(expected[k])}")
            + ")"
        )
    raise AnyCrowdError(
        f"{name} does not match a Wan 2.1 VACE model of the inferred size (dim {cfg.dim}, "
        f"{cfg.num_layers} blocks, {cfg.vace_layers} VACE blocks): " + "; ".join(problems)
        + ". The file is damaged or from a different model; use an unmodified Wan 2.1 VACE checkpoint."
    )
