"""Codec choice for data preparation: the core's TestCodec, or ComfyUI's real Wan 2.1 VAE.

The trainer never imports our `nodes` package; when a ComfyUI checkout is importable
(`COMFYUI_PATH`, or already on sys.path) this file wraps `comfy.sd.VAE` in the core's
`VideoCodec` interface. Every comfy import is lazy and lives in this file only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import Tensor

from anycrowd_core.codec import LATENT_CHANNELS, SPATIAL_FACTOR, TEMPORAL_FACTOR, TestCodec
from anycrowd_core.errors import AnyCrowdError

CODECS = ("test", "comfy")


def _existing_file(path, what: str, fix: str) -> Path:
    """`path` as a Path if it is a file, else an error "<what> <path> does not exist: <fix>."."""
    path = Path(path)
    if not path.is_file():
        raise AnyCrowdError(f"{what} {str(path)!r} does not exist: {fix}.")
    return path


def import_comfy():
    """Import ComfyUI from `COMFYUI_PATH` (or sys.path) and return `comfy` (idempotent).

    On a machine without CUDA, ComfyUI's CPU mode is switched on before
    `comfy.model_management` is first imported (it probes devices at import time).
    """
    root = os.environ.get("COMFYUI_PATH")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    try:
        if "comfy.model_management" not in sys.modules:
            from comfy.cli_args import args

            if not torch.cuda.is_available():
                args.cpu = True
        import comfy
        import comfy.model_management  # noqa: F401
        import comfy.sd
        import comfy.utils  # noqa: F401
    except ImportError as exc:
        raise AnyCrowdError(
            f"ComfyUI is not importable ({exc}). Set COMFYUI_PATH to your ComfyUI folder and run with "
            "ComfyUI's Python (its requirements installed), or use --codec test for a dry run."
        ) from exc
    return comfy


class ComfyWanVAECodec:
    """`VideoCodec` over ComfyUI's Wan 2.1 VAE (`comfy.sd.VAE`), raw latent space.

    encode: frames `[T, H, W, 3]` 0..1 -> `vae.encode(frames)[0]` = `[16, T_lat, H/8, W/8]`
    (ComfyUI maps 0..1 to -1..1 itself and returns raw latents, no process_in).
    decode: `[16, L, h, w]` -> `vae.decode(latent[None])` -> `[4(L-1)+1, 8h, 8w, 3]` 0..1.
    Results come back float32 on the CPU; ComfyUI chooses the device and working dtype.
    """

    latent_channels = LATENT_CHANNELS
    spatial_factor = SPATIAL_FACTOR
    temporal_factor = TEMPORAL_FACTOR

    def __init__(self, vae, name: str = "comfy-vae"):
        self.vae = vae
        self.name = name
        channels = getattr(vae, "latent_channels", None)
        spatial = vae.spacial_compression_encode() if hasattr(vae, "spacial_compression_encode") else None
        temporal = vae.temporal_compression_decode() if hasattr(vae, "temporal_compression_decode") else None
        if (channels, spatial, temporal) != (LATENT_CHANNELS, SPATIAL_FACTOR, TEMPORAL_FACTOR):
            raise AnyCrowdError(
                f"The VAE {name!r} has {channels} latent channels, {spatial}x spatial and {temporal}x temporal "
                "compression; AnyCrowd needs the Wan 2.1 VAE (16 channels, 8x, 4x), e.g. wan_2.1_vae.safetensors. "
                "The Wan 2.2 VAE (48 channels, 16x) does not fit Wan 2.1 VACE."
            )

    @classmethod
    def from_state_dict(cls, state_dict: dict, name: str = "comfy-vae") -> ComfyWanVAECodec:
        comfy = import_comfy()
        return cls(comfy.sd.VAE(sd=state_dict), name=name)

    @classmethod
    def from_file(cls, path) -> ComfyWanVAECodec:
        """Load a VAE file (e.g. ComfyUI/models/vae/wan_2.1_vae.safetensors) through ComfyUI."""
        path = _existing_file(path, "VAE file", "pass --vae with the path of the Wan 2.1 VAE "
                             "(wan_2.1_vae.safetensors, usually in ComfyUI/models/vae/)")
        comfy = import_comfy()
        sd = comfy.utils.load_torch_file(str(path), safe_load=True)
        return cls.from_state_dict(sd, name=path.name)

    def encode(self, frames: Tensor) -> Tensor:
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] < 3:
            raise AnyCrowdError(f"Codec input must be frames [T, H, W, 3], got shape {tuple(frames.shape)}.")
        with torch.no_grad():  # ComfyUI runs nodes without autograd; outside it we must say so
            z = self.vae.encode(frames[..., :3].float())
        return z[0].float().cpu()

    def decode(self, latent: Tensor) -> Tensor:
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[0] != LATENT_CHANNELS:
            raise AnyCrowdError(f"Codec latent must be [16, L, h, w], got shape {tuple(latent.shape)}.")
        with torch.no_grad():
            out = self.vae.decode(latent[None].float())
        return out.reshape(-1, *out.shape[-3:]).float().cpu()


def make_codec(kind: str, vae_path=None, test_seed: int = 0):
    """(codec, codec_id) for `--codec test|comfy`. codec_id names the codec in cache
    fingerprints: a change of VAE file (path, size or mtime) invalidates cached latents."""
    if kind == "test":
        return TestCodec(seed=test_seed), f"test:seed={test_seed}"
    if kind == "comfy":
        if vae_path is None:
            raise AnyCrowdError("--codec comfy needs --vae PATH to the Wan 2.1 VAE (wan_2.1_vae.safetensors).")
        return ComfyWanVAECodec.from_file(vae_path), codec_id_for_file("comfy", vae_path)
    raise AnyCrowdError(f"Unknown codec {kind!r}: choose one of {', '.join(CODECS)}.")


def codec_id_for_file(kind: str, path) -> str:
    """`kind:<abs path>:<size>:<mtime_ns>` without loading the file (cheap fingerprinting)."""
    path = _existing_file(path, "VAE file", "check --vae")
    st = path.stat()
    return f"{kind}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def encode_prompts_with_comfy(text_encoder_path, prompts: list[str]) -> list[Tensor]:
    """Encode prompts with ComfyUI's Wan text encoder (umT5-XXL file, CLIPType.WAN), as the
    CLIPTextEncode node does: `[1, L, 4096]` float32 each, on the CPU."""
    path = _existing_file(text_encoder_path, "Text encoder file", "pass --text-encoder with the umT5 file "
                         "(e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors from ComfyUI/models/text_encoders/)")
    comfy = import_comfy()
    clip = comfy.sd.load_clip(ckpt_paths=[str(path)], clip_type=comfy.sd.CLIPType.WAN)
    out = []
    for prompt in prompts:
        cond = clip.encode_from_tokens(clip.tokenize(prompt))
        out.append(cond.float().cpu().reshape(1, *cond.shape[-2:]))
    return out
