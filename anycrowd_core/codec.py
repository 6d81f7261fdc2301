"""Video codec interface (the VAE seen from the core) and a tiny deterministic test codec.

The core never calls a real VAE directly: it calls a `VideoCodec`. In ComfyUI a thin adapter
wraps `comfy.sd.VAE` (see docs/iilr.md for the exact mapping); in tests `TestCodec` stands
in with Wan's geometry (16 channels, 8x space, 4x causal time) so shapes and frame
bookkeeping are exercised exactly.
"""

from __future__ import annotations

import operator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import AnyCrowdError

LATENT_CHANNELS = 16
SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4
# DiT patchify (1, 2, 2) on top of the 8x VAE: pixel sizes must be multiples of 16.
PIXEL_MULTIPLE = 16


def _whole(value, problem: str) -> int:
    """`value` as an int (ints, numpy / torch integer scalars). Bools, fractions, NaN, text and
    None are refused: a CLI or config typo must not pass as a frame count or size. `problem`
    starts the message, which then names the value."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise AnyCrowdError(f"{problem} must be a whole number, got {value!r} ({type(value).__name__}).")


def nearest_valid_frame_counts(num_frames: int) -> tuple[int, int]:
    """The valid frame counts (4n+1) just below and just above `num_frames` (both equal to
    it when it is valid); (1, 5), the two smallest, for a count below 1."""
    num_frames = _whole(num_frames, "A frame count")
    if num_frames < 1:
        return 1, 1 + TEMPORAL_FACTOR
    lower = ((num_frames - 1) // TEMPORAL_FACTOR) * TEMPORAL_FACTOR + 1
    upper = lower if lower == num_frames else lower + TEMPORAL_FACTOR
    return lower, upper


def check_frame_count(num_frames: int, what: str = "video") -> None:
    """Raise `AnyCrowdError` unless `num_frames` is 4n+1 (Wan's causal temporal VAE)."""
    num_frames = _whole(num_frames, f"The {what}'s frame count")
    if num_frames < 1:
        raise AnyCrowdError(
            f"The {what} has {num_frames} frames, but Wan needs 4n+1 frames (1, 5, 9, ..., 81). "
            f"Give it at least 1 frame (e.g. 1 or {1 + TEMPORAL_FACTOR} frames)."
        )
    if (num_frames - 1) % TEMPORAL_FACTOR != 0:
        lower, upper = nearest_valid_frame_counts(num_frames)
        raise AnyCrowdError(
            f"The {what} has {num_frames} frames, but Wan needs 4n+1 frames (1, 5, 9, ..., 81). "
            f"Trim or pad it to {lower} or {upper} frames."
        )


def check_frame_size(height: int, width: int, multiple: int = PIXEL_MULTIPLE, what: str = "video") -> None:
    """Raise `AnyCrowdError` unless height and width are positive multiples of `multiple`."""
    height = _whole(height, f"The {what}'s height")
    width = _whole(width, f"The {what}'s width")
    bad = [(name, v) for name, v in (("height", height), ("width", width)) if v < multiple or v % multiple]
    if bad:
        def near(v: int) -> str:
            lo = max(multiple, (v // multiple) * multiple)
            hi = lo + multiple if lo < v else lo
            return f"{lo}" if lo == hi else f"{lo} or {hi}"

        detail = ", ".join(f"{name} {v} (use {near(v)})" for name, v in bad)
        raise AnyCrowdError(
            f"The {what} is {width}x{height} (WxH); both sides must be multiples of {multiple}: {detail}. "
            "Resize or crop it first."
        )


def latent_frames(num_frames: int) -> int:
    """Latent frames for `num_frames` pixel frames: (T-1)//4 + 1 (validated: T = 4n+1)."""
    check_frame_count(num_frames)
    return (operator.index(num_frames) - 1) // TEMPORAL_FACTOR + 1


def pixel_frames(num_latent_frames: int) -> int:
    """Pixel frames decoded from `num_latent_frames` latent frames: 4(L-1) + 1."""
    num_latent_frames = _whole(num_latent_frames, "A latent's frame count")
    if num_latent_frames < 1:
        raise AnyCrowdError(f"A latent needs at least 1 frame, got {num_latent_frames}.")
    return (num_latent_frames - 1) * TEMPORAL_FACTOR + 1


@runtime_checkable
class VideoCodec(Protocol):
    """A video VAE in Wan 2.1's geometry, in RAW latent space (not mean/std normalised).

    encode: frames `[T, H, W, 3]` float 0..1, T = 4n+1, H and W multiples of
            `spatial_factor` -> latent `[latent_channels, (T-1)//4+1, H/8, W/8]`.
    decode: latent `[latent_channels, L, h, w]` -> frames `[4(L-1)+1, 8h, 8w, 3]` in 0..1.
    Each call is independent: encoding two images in one call is NOT the same as two calls
    (that difference is what IILR relies on).
    """

    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, frames: Tensor) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor: ...


class TestCodec:
    """Small deterministic codec with Wan's shapes, for tests and the headless demo.

    encode: pixels -> 2x-1 (ComfyUI's VAE input range, so neutral gray 0.5 encodes to 0),
    8x8 average pooling, causal temporal grouping (latent 0 = frame 0, latent j = mean of
    frames 4j-3..4j), then RGB -> 16 channels by a fixed seeded matrix A `[16, 3]`.
    decode: the exact pseudo-inverse (A+ A = I), nearest upsampling in space, each latent
    frame repeated over the pixel frames it covers, -> (y+1)/2 clamped to 0..1.
    A video that is constant per 8x8 block and per temporal group round-trips exactly
    (up to float rounding).
    """

    __test__ = False  # not a pytest test class despite the name

    latent_channels = LATENT_CHANNELS
    spatial_factor = SPATIAL_FACTOR
    temporal_factor = TEMPORAL_FACTOR

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(LATENT_CHANNELS, 3, generator=gen, dtype=torch.float64) / 3**0.5
        self.matrix = a  # [16, 3]
        self.pinv = torch.linalg.pinv(a)  # [3, 16]

    def encode(self, frames: Tensor) -> Tensor:
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise AnyCrowdError(
                f"Codec input must be frames [T, H, W, 3], got shape {tuple(frames.shape)}. "
                "Pass a single image as [1, H, W, 3]."
            )
        t, h, w, _ = frames.shape
        check_frame_count(t, "codec input")
        check_frame_size(h, w, SPATIAL_FACTOR, "codec input")
        x = frames.to(torch.float64) * 2.0 - 1.0
        x = x.reshape(t, h // 8, 8, w // 8, 8, 3).mean(dim=(2, 4))  # [T, h, w, 3]
        groups = [x[:1]] + [x[4 * j - 3 : 4 * j + 1].mean(dim=0, keepdim=True) for j in range(1, (t - 1) // 4 + 1)]
        x = torch.cat(groups, dim=0)  # [T_lat, h, w, 3]
        z = torch.einsum("cr,thwr->cthw", self.matrix, x)
        return z.to(torch.float32)

    def decode(self, latent: Tensor) -> Tensor:
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[0] != LATENT_CHANNELS:
            raise AnyCrowdError(
                f"Codec latent must be [16, L, h, w], got shape {tuple(latent.shape)}. "
                "Drop the batch dimension first (latent[0])."
            )
        x = torch.einsum("rc,cthw->thwr", self.pinv, latent.to(torch.float64))  # [L, h, w, 3]
        reps = torch.tensor([1] + [TEMPORAL_FACTOR] * (x.shape[0] - 1))
        x = torch.repeat_interleave(x, reps, dim=0)
        x = x.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0).to(torch.float32)
