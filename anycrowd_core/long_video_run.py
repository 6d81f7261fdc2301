"""The long-video loops, one implementation for both hosts: token-replace segments
(One-to-All §3.4) and latent sliding windows with overlap accumulation (AnyCrowd appendix).
The loops slice, encode, build layouts, blend and decode; sampling one clip is the host's
`ClipSampler` (core DiT: `long_video_sampling.py`; ComfyUI: nodes/long_video_comfy.py).
Plans come from `long_video.py`; behaviour and memory: docs/long_video.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .codec import TEMPORAL_FACTOR, VideoCodec
from .decoupler import DecoupledInstances
from .errors import AnyCrowdError
from .iilr import IILRConditioning, encode_control_stream, encode_iilr
from .layout import TokenLayout, build_token_layout, window_layout
from .long_video import (
    LongVideoSettings,
    Segment,
    Window,
    latent_count,
    pad_frames,
    padded_frame_count,
    slice_frames,
    slice_tracks,
)

__all__ = ["LongVideoInputs", "EncodedClip", "ClipSampler", "ReferenceCache", "encode_clip", "encode_chunked",
           "decode_chunked", "window_index", "blend_windows", "run_token_replace", "run_sliding_window"]


@dataclass
class LongVideoInputs:
    """Everything a long run needs, already at the output size (pixels of width x height).

    decoupled: the reference fitted to the output size.  control: `[T, H, W, 3]` 0..1.
    boxes: `[M, T, 4]` xyxy px per track (NaN = absent).  binding: identity per track.
    face: `[T, H, W, 3]` face-control video or None.  strength / face_strength: VACE
    strengths of the pose and face streams.  background: background reference frame on/off.
    """

    decoupled: DecoupledInstances
    control: Tensor
    boxes: Tensor
    binding: list[int]
    face: Tensor | None = None
    strength: float = 1.0
    face_strength: float = 0.5
    background: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.control.shape[0])


@dataclass
class EncodedClip:
    """Conditioning of one clip (a segment, or the whole padded video for sliding windows).

    conditioning: the IILR references + pose control, model space (`trim` reference latent
    frames in front, `noise_latent_shape` `(16, R + T_lat, h, w)`).  face: the face stream,
    model-space `[96, R + T_lat, h, w]` with zero reference slots, or None.  layout: the
    clip's token layout.
    """

    conditioning: IILRConditioning
    face: Tensor | None
    layout: TokenLayout

    @property
    def trim(self) -> int:
        return self.conditioning.trim


class ClipSampler(Protocol):
    """What a host supplies: sampling of one encoded clip. Latents are RAW VAE space."""

    def start(self, plan: Sequence) -> None:
        """Called once with the whole plan before any work (e.g. to size a progress bar)."""

    def check_cancel(self) -> None:
        """Called before each segment; raises if the user cancelled."""

    def sample_segment(self, clip: EncodedClip, segment: Segment, context: Tensor | None) -> Tensor:
        """Latents `[16, T_lat, h, w]` (CPU, reference frames removed) of one token-replace
        segment whose first latent frames are `context` (`[16, c, h, w]`, held fixed), or
        None for a segment without context."""

    def sample_windows(self, clip: EncodedClip, windows: Sequence[Window], layouts: Sequence[TokenLayout],
                       ramp: bool) -> Tensor:
        """Latents `[16, T_lat, h, w]` (CPU, reference frames removed) of the whole clip, every
        window `[references | window]` denoised at every step with its own layout and the
        overlaps blended by `blend_windows(..., ramp)`."""


class ReferenceCache:
    """Codec wrapper that encodes each single-frame input (the IILR reference images) once
    per run: every segment reuses identical reference latents (even with a non-deterministic
    GPU VAE) and skips N+1 VAE calls. Longer inputs pass through (nothing length-sized is
    cached)."""

    def __init__(self, codec: VideoCodec):
        self.codec = codec
        self._frames: list[tuple[Tensor, Tensor]] = []

    def __getattr__(self, name):  # latent_channels, spatial_factor, ... of the wrapped codec
        return getattr(self.__dict__["codec"], name)

    def encode(self, frames: Tensor) -> Tensor:
        if frames.shape[0] != 1:
            return self.codec.encode(frames)
        for known, latent in self._frames:
            if known.shape == frames.shape and torch.equal(known, frames):
                return latent
        latent = self.codec.encode(frames)
        self._frames.append((frames.detach().clone(), latent))
        return latent

    def decode(self, latent: Tensor) -> Tensor:
        return self.codec.decode(latent)


# ----------------------------------------------------------------------------- codec helpers


def _chunks(total: int, size: int | None) -> list[tuple[int, int]]:
    if size is None or size >= total:
        return [(0, total)]
    if size < 1:
        raise AnyCrowdError(f"The chunk size must be at least 1 latent frame, got {size}.")
    return [(a, min(a + size, total)) for a in range(0, total, size)]


def decode_chunked(codec: VideoCodec, latents: Tensor, chunk: int | None = None, out: Tensor | None = None) -> Tensor:
    """Decode raw latents `[16, L, h, w]` to `[4(L-1)+1, H, W, 3]` frames on the CPU,
    `chunk` latent frames per codec call (None: one call). A chunk [a, b) with a > 0 is
    decoded together with latent a-1 (warm-up) whose leading frame is dropped: exact for
    codecs without temporal mixing across latent frames (TestCodec), an approximation of
    the whole-clip decode for Wan's causal VAE (one latent frame of temporal context)."""
    total = latents.shape[1]
    if out is None:
        size = (latents.shape[2] * codec.spatial_factor, latents.shape[3] * codec.spatial_factor)
        out = torch.empty((TEMPORAL_FACTOR * (total - 1) + 1, *size, 3))
    for a, b in _chunks(total, chunk):
        lo = max(a - 1, 0)
        frames = codec.decode(latents[:, lo:b]).cpu()
        if a > 0:
            frames = frames[1:]
        first = 0 if a == 0 else TEMPORAL_FACTOR * a - (TEMPORAL_FACTOR - 1)
        out[first:first + frames.shape[0]] = frames
    return out


def encode_chunked(codec, decoupled, control: Tensor, chunk: int | None, *, background: bool,
                   strength: float) -> IILRConditioning:
    """`encode_iilr` of a whole 4n+1 control video, `chunk` latent frames per codec call
    (None: one call); chunks after the first are encoded from the last pixel frame of the
    previous latent frame (a warm-up latent frame, dropped), so each latent frame sees its
    own 4 pixel frames. Exact for TestCodec, approximate for a causal VAE (like
    `decode_chunked`). Give a `ReferenceCache` to encode the references once."""
    t_lat = latent_count(control.shape[0])
    parts, first = [], None
    for a, b in _chunks(t_lat, chunk):
        lo = 0 if a == 0 else TEMPORAL_FACTOR * (a - 1)
        cond = encode_iilr(codec, decoupled, control[lo:TEMPORAL_FACTOR * (b - 1) + 1],
                           background=background, strength=strength)
        if first is None:
            first = cond
            parts.append(cond.vace_context)
        else:
            parts.append(cond.vace_context[:, cond.trim + 1:])
    if len(parts) == 1:
        return first
    context = torch.cat(parts, dim=1)
    return IILRConditioning(
        reference_latents=first.reference_latents, vace_context=context,
        vace_strength=first.vace_strength,
        noise_latent_shape=(first.noise_latent_shape[0], context.shape[1], *first.noise_latent_shape[2:]),
        trim=first.trim, num_video_frames=control.shape[0], height=first.height, width=first.width,
        num_identities=first.num_identities, has_background=first.has_background,
    )


def encode_clip(codec, inputs: LongVideoInputs, control: Tensor, boxes: Tensor, face: Tensor | None,
                chunk: int | None = None) -> EncodedClip:
    """IILR-encode one clip (4n+1 frames of `control`, `boxes` `[M, F, 4]`, `face` or None),
    the face stream aligned with its reference frames, and the clip's token layout."""
    layout = build_token_layout(inputs.decoupled.masks, boxes, inputs.binding, background=inputs.background)
    cond = encode_chunked(codec, inputs.decoupled, control, chunk, background=inputs.background,
                          strength=inputs.strength)
    face_stream = None if face is None else encode_control_stream(codec, face, num_ref_frames=cond.trim)
    return EncodedClip(cond, face_stream, layout)


# ----------------------------------------------------------------------------- window blending


def window_index(window: Window, num_ref_frames: int) -> Tensor:
    """Latent frame index `[R + window.frames]` of `[all R reference frames | the window]`."""
    return torch.cat([torch.arange(num_ref_frames), num_ref_frames + torch.arange(window.start, window.stop)])


def blend_windows(x: Tensor, windows: Sequence[Window], num_ref_frames: int, ramp: bool,
                  run_window: Callable[[int, Tensor], Tensor]) -> Tensor:
    """AnyCrowd appendix: every window's prediction accumulated into the whole clip and
    normalised by each latent frame's (weighted) update count.

    x: `[B, C, F, h, w]` (F = R + T_lat).  run_window(i, index) -> the prediction
    `[B, C, len(index), h, w]` of window i on frames `index` (see `window_index`), on x's
    device.  ramp: `Window.weights(ramp=True)` over the overlaps; references weigh 1.
    """
    out = torch.zeros_like(x)
    count = torch.zeros(x.shape[2], dtype=x.dtype, device=x.device)
    for i, win in enumerate(windows):
        index = window_index(win, num_ref_frames)
        y = run_window(i, index)
        weight = torch.cat([torch.ones(num_ref_frames), win.weights(ramp)]).to(device=x.device, dtype=x.dtype)
        idx = index.to(x.device)
        out.index_add_(2, idx, y * weight.view(1, 1, -1, 1, 1))
        count.index_add_(0, idx, weight)
    return out / count.view(1, 1, -1, 1, 1)


# ----------------------------------------------------------------------------- the two loops


def run_token_replace(sampler: ClipSampler, codec, inputs: LongVideoInputs, settings: LongVideoSettings) -> Tensor:
    """The whole video `[T, H, W, 3]` (CPU) by token-replace segments (One-to-All §3.4).

    Each segment is encoded from its slice of the control (and face) video and boxes with
    the same reference latents (`ReferenceCache`); segment s > 0 starts with the last
    `overlap` frames already generated, VAE-encoded and held fixed by the sampler; its
    decoded frames outside the context go to the output, the only length-sized buffer.
    """
    plan = settings.plan(inputs.num_frames)
    cache = ReferenceCache(codec)
    h, w = (int(s) for s in inputs.control.shape[1:3])
    out = torch.empty((inputs.num_frames, h, w, 3), dtype=torch.float32)
    sampler.start(plan)
    for seg in plan:
        sampler.check_cancel()
        face = slice_frames(inputs.face, seg) if inputs.face is not None else None
        clip = encode_clip(cache, inputs, slice_frames(inputs.control, seg), slice_tracks(inputs.boxes, seg), face)
        # the previous segments' output frames, re-encoded: the context tokens
        context = codec.encode(out[seg.start : seg.start + seg.context_frames]) if seg.context_frames else None
        latents = sampler.sample_segment(clip, seg, context)
        out[seg.out] = codec.decode(latents)[seg.keep].cpu()
        del clip, latents
    return out


def run_sliding_window(sampler: ClipSampler, codec, inputs: LongVideoInputs,
                       settings: LongVideoSettings) -> tuple[Tensor, Tensor]:
    """(the whole video `[T, H, W, 3]`, its raw latents `[16, T_lat, h, w]`), both on the CPU,
    by latent sliding windows (AnyCrowd appendix):
    the 4n+1-padded video is encoded as one clip (`codec_chunk` latent frames per VAE call),
    each window gets its slice of the clip's layout (`window_layout`), the sampler denoises
    every window at every step and blends the overlaps, and the clip is decoded."""
    plan = settings.plan(inputs.num_frames)
    sampler.start(plan)
    total = padded_frame_count(inputs.num_frames)
    boxes = pad_frames(inputs.boxes.transpose(0, 1), total).transpose(0, 1)
    face = pad_frames(inputs.face, total) if inputs.face is not None else None
    clip = encode_clip(ReferenceCache(codec), inputs, pad_frames(inputs.control, total), boxes, face,
                       chunk=settings.codec_chunk)
    layouts = [window_layout(clip.layout, range(win.start, win.stop)) for win in plan]
    latents = sampler.sample_windows(clip, plan, layouts, settings.ramp)
    return decode_chunked(codec, latents, settings.codec_chunk)[: inputs.num_frames], latents
