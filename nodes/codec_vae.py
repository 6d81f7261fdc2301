"""The two adapters between a ComfyUI VAE and an anycrowd_core `VideoCodec`, one per direction:
`ComfyVAECodec` lets the core encode/decode with the VAE a user connects (IILR Encode, Face
Control, Long Video Sampler); `CodecVAE` is a ComfyUI VAE (the `comfy.sd.VAE` API our nodes and
ComfyUI's VAE nodes call) around a core codec: what AnyCrowd Mini Loader outputs for `MiniCodec`.

`CodecVAE` mirrors ComfyUI's Wan 2.1 VAE where callers can see it: pixels `[T,H,W,C]` 0..1 in, raw
(not mean/std normalised) latents `[B,16,T',H/8,W/8]` out, 8x space and 4x causal time
(`downscale_ratio` / `upscale_ratio` as Wan's), H and W centre-cropped to multiples of 8 and
trailing frames beyond 4n+1 dropped, as the Wan VAE does. No ComfyUI import is needed.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor

from anycrowd_core.codec import LATENT_CHANNELS, SPATIAL_FACTOR, TEMPORAL_FACTOR, VideoCodec
from anycrowd_core.errors import AnyCrowdError

from .comfy_runtime import check_interrupted


class ComfyVAECodec:
    """anycrowd_core VideoCodec over a ComfyUI VAE (docs/iilr.md, "Codec interface").

    encode(frames `[T,H,W,3]` 0..1) -> raw latent `[16, T', h, w]` via `vae.encode`, which
    takes `[T,H,W,C]` and returns `[1,16,T',h,w]`; decode the inverse via `vae.decode`.
    Checks for Cancel before each VAE call (IILR makes N+3 of them).
    """

    latent_channels = LATENT_CHANNELS
    spatial_factor = SPATIAL_FACTOR
    temporal_factor = TEMPORAL_FACTOR

    def __init__(self, vae: Any):
        for name in ("encode", "decode"):
            if not callable(getattr(vae, name, None)):
                raise AnyCrowdError(
                    f"The vae input has no {name}() method ({type(vae).__name__}): connect a VAE "
                    "(Load VAE with wan_2.1_vae.safetensors)."
                )
        self.vae = vae

    def encode(self, frames: Tensor) -> Tensor:
        check_interrupted()
        z = self.vae.encode(frames[..., :3])
        if z.ndim != 5 or z.shape[0] != 1:
            raise AnyCrowdError(
                f"The VAE returned a latent of shape {tuple(z.shape)}; a Wan 2.1 video VAE returns "
                "[1, 16, frames, h, w]. Load wan_2.1_vae.safetensors with Load VAE."
            )
        return z[0].float().cpu()

    def decode(self, latent: Tensor) -> Tensor:
        check_interrupted()
        frames = self.vae.decode(latent[None])
        return frames.reshape(-1, *frames.shape[-3:]).float().cpu()


def _intermediate_device() -> torch.device:
    mm = sys.modules.get("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


class CodecVAE:
    """`comfy.sd.VAE` duck type over a `VideoCodec` (runs on the CPU; the codec is tiny).

    encode(pixels `[T,H,W,C]` or `[B,T,H,W,C]`) -> `[1 or B, 16, (T-1)//4+1, H/8, W/8]`
    decode(latent `[B,16,L,h,w]`) -> `[B, 4(L-1)+1, 8h, 8w, 3]` in 0..1
    encode_tiled / decode_tiled are encode / decode (tiling buys nothing here).
    """

    latent_channels = LATENT_CHANNELS
    latent_dim = 3  # video latents [B, C, T, H, W]
    output_channels = 3
    not_video = False
    crop_input = True
    # Wan 2.1 VAE's ratios (comfy.sd.VAE): index 0 maps frame counts, 1-2 are spatial factors
    upscale_ratio = (lambda a: max(0, a * TEMPORAL_FACTOR - 3), SPATIAL_FACTOR, SPATIAL_FACTOR)
    downscale_ratio = (lambda a: max(0, math.floor((a + 3) / TEMPORAL_FACTOR)), SPATIAL_FACTOR, SPATIAL_FACTOR)
    upscale_index_formula = (TEMPORAL_FACTOR, SPATIAL_FACTOR, SPATIAL_FACTOR)
    downscale_index_formula = (TEMPORAL_FACTOR, SPATIAL_FACTOR, SPATIAL_FACTOR)
    vae_dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, codec: VideoCodec, name: str = "codec"):
        self.codec = codec
        self.name = name

    @property
    def output_device(self) -> torch.device:
        return _intermediate_device()

    # --- what comfy.sd.VAE callers use -------------------------------------------------------

    def throw_exception_if_invalid(self) -> None:
        """Always valid (comfy.sd.VAE raises here for a file it could not recognise)."""

    def spacial_compression_encode(self) -> int:
        return SPATIAL_FACTOR

    def spacial_compression_decode(self) -> int:
        return SPATIAL_FACTOR

    def temporal_compression_encode(self) -> int:
        return TEMPORAL_FACTOR

    def temporal_compression_decode(self) -> int:
        return TEMPORAL_FACTOR

    def encode(self, pixel_samples: Tensor) -> Tensor:
        pixels = torch.as_tensor(pixel_samples)
        if pixels.ndim == 4:
            pixels = pixels[None]
        if pixels.ndim != 5 or pixels.shape[-1] < 3:
            raise AnyCrowdError(
                f"{self.name} encodes IMAGE batches [frames, H, W, 3]; got shape {tuple(pixel_samples.shape)}."
            )
        pixels = self._crop(pixels[..., :3].float().cpu())
        latents = [self.codec.encode(video) for video in pixels]
        return torch.stack(latents).float().to(self.output_device)

    def decode(self, samples_in: Tensor, vae_options: dict | None = None) -> Tensor:
        samples = torch.as_tensor(samples_in)
        if samples.ndim != 5 or samples.shape[1] != LATENT_CHANNELS:
            raise AnyCrowdError(
                f"{self.name} decodes Wan 2.1 video latents [batch, 16, frames, h, w]; got shape "
                f"{tuple(samples.shape)}. Connect a latent sampled with the AnyCrowd-Mini MODEL."
            )
        frames = [self.codec.decode(z.float().cpu()) for z in samples]
        return torch.stack(frames).to(self.output_device)

    def encode_tiled(self, pixel_samples: Tensor, tile_x=None, tile_y=None, overlap=None, tile_t=None,
                     overlap_t=None) -> Tensor:
        return self.encode(pixel_samples)

    def decode_tiled(self, samples: Tensor, tile_x=None, tile_y=None, overlap=None, tile_t=None,
                     overlap_t=None) -> Tensor:
        return self.decode(samples)

    def get_sd(self) -> dict:
        raise AnyCrowdError(
            f"The {self.name} VAE is a fixed codec without a weights file to save; nothing to export."
        )

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _crop(pixels: Tensor) -> Tensor:
        """`[B,T,H,W,3]` with H, W centre-cropped to multiples of 8 (comfy.sd.VAE.vae_encode_crop_pixels)
        and T cut to 4n+1 (the Wan VAE encodes frame 0, then whole groups of 4)."""
        for dim in (2, 3):
            size = int(pixels.shape[dim])
            keep = (size // SPATIAL_FACTOR) * SPATIAL_FACTOR
            if keep == 0:
                raise AnyCrowdError(f"Images of {size} px along one side are too small to encode (need at least 8).")
            if keep != size:
                pixels = pixels.narrow(dim, (size % SPATIAL_FACTOR) // 2, keep)
        frames = int(pixels.shape[1])
        return pixels[:, : ((frames - 1) // TEMPORAL_FACTOR) * TEMPORAL_FACTOR + 1]
