"""Headless long-video samplers on the core DiT: token replace (One-to-All §3.4) and
sliding windows with overlap accumulation (AnyCrowd appendix). Plans come from
`long_video.py`; exact behaviour and memory: docs/long_video.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .attention import AnyCrowdAttention, GateBank
from .codec import TEMPORAL_FACTOR, VideoCodec
from .decoupler import decouple_instances
from .errors import AnyCrowdError
from .iilr import IILRConditioning, encode_iilr
from .latent_format import process_in, process_out
from .layout import build_token_layout
from .long_video import (
    Window,
    pad_frames,
    padded_frame_count,
    plan_windows,
    plan_segments,
    slice_inputs,
    window_track_boxes,
    latent_count,
)
from .pipeline import (
    AnimationInputs,
    SamplingSettings,
    check_request,
    cumulative_guidance,
    guidance_conditions,
    rope_positions_for,
)
from .sampling import SamplingCancelled, cfg_denoiser, flow_denoiser, flow_sigmas, make_noise, sample, sigma_to_timestep
from .wan import WanVaceModel, shifted_reference_positions

__all__ = ["STRATEGIES", "DEFAULT_OVERLAP", "LongVideoProgress", "LongVideoResult", "animate_long",
           "encode_chunked", "decode_chunked"]

STRATEGIES = ("token_replace", "sliding_window")
DEFAULT_OVERLAP = {"token_replace": 5, "sliding_window": 16}
"""Default overlap in PIXEL frames: 5 = 2 context latent frames (One-to-All); 16 = 4 latent
frames shared by neighbouring windows."""


@dataclass(frozen=True)
class LongVideoProgress:
    """One progress event. token_replace: after each sampler step of segment `index`;
    sliding_window: after each window evaluation (`index` = window) within step `step`.
    done / total: absolute progress in these units (ComfyUI: `ProgressBar.update_absolute`);
    with a 2nd-order sampler a step's second evaluation repeats the same `done` values."""

    strategy: str
    index: int
    count: int
    step: int
    steps: int

    @property
    def total(self) -> int:
        return self.count * self.steps

    @property
    def done(self) -> int:
        if self.strategy == "token_replace":
            return self.index * self.steps + self.step
        return (self.step - 1) * self.count + self.index + 1


@dataclass
class LongVideoResult:
    """frames `[T, H, W, 3]` float 0..1 on the CPU, T = the control video's frame count
    (padding dropped); plan: the `Segment`s or `Window`s used; latents: `[16, T_lat, h, w]`
    raw VAE space for sliding_window (None for token_replace: segments are decoded and
    dropped one by one); info: counts and settings."""

    frames: Tensor
    plan: list
    strategy: str
    latents: Tensor | None = None
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- codec helpers


class _ReferenceMemoCodec:
    """Codec wrapper that encodes each IILR reference image once: a single-frame input equal
    to one of `decoupled`'s identity / background images returns the latent of its first
    encoding, so every segment gets the SAME reference latents, even with a
    non-deterministic (GPU) VAE. Everything else passes through (nothing length-sized is
    cached)."""

    def __init__(self, codec: VideoCodec, decoupled):
        self.codec = codec
        self.latent_channels = codec.latent_channels
        self.spatial_factor = codec.spatial_factor
        self.temporal_factor = codec.temporal_factor
        images = list(decoupled.identity_images) + [decoupled.background]
        self._refs = [img[None, :, :, :3].float() for img in images]
        self._latents: dict[int, Tensor] = {}

    def encode(self, frames: Tensor) -> Tensor:
        if frames.shape[0] == 1:
            for i, ref in enumerate(self._refs):
                if ref.shape == frames.shape and torch.equal(ref, frames):
                    if i not in self._latents:
                        self._latents[i] = self.codec.encode(frames)
                    return self._latents[i]
        return self.codec.encode(frames)

    def decode(self, latent: Tensor) -> Tensor:
        return self.codec.decode(latent)


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
        out = torch.empty((TEMPORAL_FACTOR * (total - 1) + 1, *_decoded_hw(latents, codec), 3))
    for a, b in _chunks(total, chunk):
        lo = max(a - 1, 0)
        frames = codec.decode(latents[:, lo:b]).cpu()
        if a > 0:
            frames = frames[1:]
        first = 0 if a == 0 else TEMPORAL_FACTOR * a - (TEMPORAL_FACTOR - 1)
        out[first:first + frames.shape[0]] = frames
    return out


def _decoded_hw(latents: Tensor, codec: VideoCodec) -> tuple[int, int]:
    return latents.shape[2] * codec.spatial_factor, latents.shape[3] * codec.spatial_factor


def encode_chunked(codec, decoupled, control: Tensor, chunk: int | None, *, background: bool,
                   strength: float) -> IILRConditioning:
    """`encode_iilr` of a whole 4n+1 control video, `chunk` latent frames per codec call
    (None: one call); chunks after the first are encoded from the last pixel frame of the
    previous latent frame (a warm-up latent frame, dropped), so each latent frame sees its
    own 4 pixel frames. Exact for TestCodec, approximate for a causal VAE (like
    `decode_chunked`). References are encoded once (the codec is memoised)."""
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


# ----------------------------------------------------------------------------- denoisers


def _velocity(model: WanVaceModel, text: Tensor, vace_context: Tensor, strength: float, hook, rope=None):
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    text = text.to(device, dtype)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return model(x.to(dtype), t, text, vace_context, vace_strength=strength, attention=hook,
                     rope_positions=rope).to(x.dtype)

    return velocity


def _frame_t_denoiser(velocity, clean: slice, frames: int):
    """x0 denoiser with per-frame timesteps `[B, F]`: the sampling t everywhere except the
    latent frames `clean` (token-replace context), which get t = 0 (treated as clean)."""

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        t = sigma_to_timestep(sigma.to(torch.float32)).reshape(1, 1).expand(x.shape[0], frames).clone()
        t[:, clean] = 0.0
        v = velocity(x, t)
        return x - sigma.to(v.dtype) * v

    return denoiser


def _guided(model, conditioning: IILRConditioning, hook, positive, negative, settings, clean: slice | None):
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    vace = conditioning.vace_context.unsqueeze(0).to(device, dtype)
    frames = conditioning.noise_latent_shape[1]
    rope = rope_positions_for(conditioning, settings.shifted_rope, device)

    def make(text, context=vace):
        v = _velocity(model, text, context.to(device, dtype), conditioning.vace_strength, hook, rope)
        # without context the scalar-t path of `animate` (bit-identical to it)
        return flow_denoiser(v) if clean is None else _frame_t_denoiser(v, clean, frames)

    if settings.guidance == "cumulative":
        return cumulative_guidance(make, *guidance_conditions(conditioning, positive, negative), settings)
    cond = make(positive)
    if settings.cfg == 1.0:
        return cond
    return cfg_denoiser(cond, make(negative), settings.cfg)


# ----------------------------------------------------------------------------- entry point


def animate_long(
    model: WanVaceModel,
    codec: VideoCodec,
    inputs: AnimationInputs,
    positive: Tensor,
    negative: Tensor | None = None,
    settings: SamplingSettings | None = None,
    *,
    strategy: str = "token_replace",
    segment_frames: int = 81,
    overlap_frames: int | None = None,
    ramp: bool = False,
    codec_chunk: int | None = None,
    gates: GateBank | None = None,
    progress: Callable[[LongVideoProgress], None] | None = None,
    callback: Callable[[int, int, int, Tensor, Tensor], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> LongVideoResult:
    """Animate a driving video of any length (>= 1 frame) with the AnyCrowd method.

    inputs: full-length control video `[T, H, W, 3]` and track boxes `[M, T, 4]`.
    strategy "token_replace": segments of `segment_frames` (4n+1) generated in order, each
    after the first starting with `overlap_frames` (4m+1, default 5) frames of the previous
    output, VAE-encoded and held clean (t = 0) at every step. "sliding_window": windows of
    `segment_frames` pixel frames (converted to latent frames) overlapping by
    `overlap_frames` (default 16), all denoised at every step and averaged (ramp=True:
    linear ramp weights); `codec_chunk` latent frames per VAE call (default: the window).
    progress(event) after each unit of work; callback(index, step, total, x, denoised)
    after each sampler step (index = segment, or 0 for sliding windows; x includes the
    reference frames); cancel() is polled before every model evaluation and raises
    `SamplingCancelled`.
    """
    settings = settings or SamplingSettings()
    if strategy not in STRATEGIES:
        raise AnyCrowdError(f"Unknown long-video strategy {strategy!r}: choose one of {STRATEGIES}.")
    binding = check_request(inputs, negative, settings)
    overlap = DEFAULT_OVERLAP[strategy] if overlap_frames is None else int(overlap_frames)
    decoupled = decouple_instances(
        inputs.reference_image, inputs.reference_masks, reassign=settings.reassign, seed=settings.seed
    )
    run = _token_replace if strategy == "token_replace" else _sliding_window
    return run(model, codec, inputs, binding, decoupled, positive, negative, settings, segment_frames, overlap,
               ramp=ramp, codec_chunk=codec_chunk, gates=gates, progress=progress, callback=callback,
               cancel=cancel)


def _token_replace(model, codec, inputs, binding, decoupled, positive, negative, settings, segment_frames,
                   overlap, *, ramp, codec_chunk, gates, progress, callback, cancel) -> LongVideoResult:
    num_frames = int(inputs.control_video.shape[0])
    plan = plan_segments(num_frames, segment_frames, overlap)
    device = next(model.parameters()).device
    memo = _ReferenceMemoCodec(codec, decoupled)  # same reference latents in every segment
    height, width = (int(s) for s in inputs.control_video.shape[1:3])
    frames_out = torch.empty((num_frames, height, width, 3))  # the only length-sized buffer
    sigmas = flow_sigmas(settings.steps, shift=settings.shift)

    for seg in plan:
        seg_inputs = slice_inputs(inputs, seg)
        cond = encode_iilr(memo, decoupled, seg_inputs.control_video,
                           background=settings.background, strength=settings.vace_strength)
        layout = build_token_layout(decoupled.masks, seg_inputs.track_boxes, binding, background=settings.background)
        hook = AnyCrowdAttention(layout.to(device), mode=settings.mode, agf=settings.agf, gates=gates)
        r = cond.trim
        clean = slice(r, r + seg.context_latent_frames) if seg.context_frames else None
        denoiser = _guided(model, cond, hook, positive, negative, settings, clean)
        noise = make_noise((1, *cond.noise_latent_shape), settings.seed + seg.index, device=device)
        ctx = None
        if clean is not None:
            # the previous segments' output frames, re-encoded: the context tokens
            ctx_frames = frames_out[seg.start:seg.start + seg.context_frames]
            ctx = process_in(codec.encode(ctx_frames)).to(device, noise.dtype)[None]
            noise[:, :, clean] = ctx
            denoiser = _pinned(denoiser, clean, ctx)

        def on_step(step, total, x, denoised, _seg=seg, _clean=clean, _ctx=ctx):
            if _clean is not None:
                # keeps the context bit-identical for every solver (Euler/Heun already leave
                # it untouched; DPM++'s convex combination would round it)
                x[:, :, _clean] = _ctx
            if callback is not None:
                callback(_seg.index, step, total, x, denoised)
            if progress is not None:
                progress(LongVideoProgress("token_replace", _seg.index, len(plan), step, total))

        with torch.no_grad():
            x = sample(denoiser, noise, sigmas, sampler=settings.sampler, seed=settings.seed + seg.index,
                       device=device, callback=on_step, cancel=cancel)
        latents = process_out(x[0, :, r:].float().cpu())
        decoded = codec.decode(latents)
        frames_out[seg.out] = decoded[seg.keep].cpu()
        del x, decoded, latents, denoiser, hook

    info = {"strategy": "token_replace", "segments": len(plan), "segment_frames": segment_frames,
            "overlap_frames": overlap, "frames": num_frames, "binding": binding, "mode": settings.mode}
    return LongVideoResult(frames_out, plan, "token_replace", None, info)


def _pinned(denoiser, clean: slice, ctx: Tensor):
    """Token replace around an x0 denoiser: the context latents are written into the model
    input at every evaluation and returned as their own prediction (so x - denoised = 0
    there: the model's prediction for them is discarded and the solver does not move them)."""

    def pinned(x: Tensor, sigma: Tensor) -> Tensor:
        x = x.clone()
        x[:, :, clean] = ctx
        out = denoiser(x, sigma)
        out[:, :, clean] = ctx
        return out

    return pinned


def _sliding_window(model, codec, inputs, binding, decoupled, positive, negative, settings, segment_frames,
                    overlap, *, ramp, codec_chunk, gates, progress, callback, cancel) -> LongVideoResult:
    num_frames = int(inputs.control_video.shape[0])
    plan = plan_windows(num_frames, segment_frames, overlap)
    window_latents = latent_count(int(segment_frames))
    chunk = window_latents if codec_chunk is None else int(codec_chunk)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype

    padded = padded_frame_count(num_frames)
    control = pad_frames(inputs.control_video, padded)
    boxes = pad_frames(inputs.track_boxes.transpose(0, 1), padded).transpose(0, 1)
    cond = encode_chunked(_ReferenceMemoCodec(codec, decoupled), decoupled, control, chunk,
                          background=settings.background, strength=settings.vace_strength)
    r = cond.trim

    # per window: its layout (exact per-latent-frame boxes), hook and blend weights
    windows = []
    for win in plan:
        wboxes, wbinding = window_track_boxes(boxes, binding, win)
        layout = build_token_layout(decoupled.masks, wboxes, wbinding, background=settings.background)
        hook = AnyCrowdAttention(layout.to(device), mode=settings.mode, agf=settings.agf, gates=gates)
        rope = None
        if settings.shifted_rope:
            h, w = cond.noise_latent_shape[2:]
            rope = shifted_reference_positions(r, r + win.stop - win.start, h // 2, w // 2, device=device)
        windows.append((win, hook, win.weights(ramp), rope))

    texts = [positive] if settings.cfg == 1.0 else [positive, negative]
    if settings.guidance == "cumulative":
        texts, contexts = guidance_conditions(cond, positive, negative)
    step_now = [1]

    def window_denoiser(win: Window, hook, rope, x_win: Tensor, sigma: Tensor) -> Tensor:
        # only this window's latents and VACE slice go to the device; predictions come back
        idx = torch.cat([torch.arange(r), r + torch.arange(win.start, win.stop)])
        x_dev = x_win.to(device)

        def make(text, vace):
            return flow_denoiser(_velocity(model, text, vace.to(device, dtype), cond.vace_strength, hook, rope))

        if settings.guidance == "cumulative":
            pred = cumulative_guidance(make, texts, [c[:, idx] for c in contexts], settings)(x_dev, sigma)
            return pred.to(x_win.device)
        vace = cond.vace_context[:, idx].unsqueeze(0).to(device, dtype)  # once for every text
        preds = [make(t, vace)(x_dev, sigma) for t in texts]
        if len(preds) > 1:
            preds = [preds[1] + (preds[0] - preds[1]) * settings.cfg]  # cfg_denoiser's formula
        return preds[0].to(x_win.device)

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        # AnyCrowd appendix: every window at every step, accumulated, normalised by the
        # (weighted) update count of each latent frame
        acc = torch.zeros_like(x)
        count = torch.zeros(x.shape[2], dtype=x.dtype)
        for win, hook, w, rope in windows:
            if cancel is not None and cancel():
                raise SamplingCancelled("sampling cancelled")
            frames = torch.cat([torch.arange(r), r + torch.arange(win.start, win.stop)])
            weight = torch.cat([torch.ones(r), w]).to(x.dtype)
            acc[:, :, frames] += window_denoiser(win, hook, rope, x[:, :, frames], sigma) * weight.view(1, 1, -1, 1, 1)
            count[frames] += weight
            if progress is not None:
                progress(LongVideoProgress("sliding_window", win.index, len(plan), step_now[0], settings.steps))
        return acc / count.view(1, 1, -1, 1, 1)

    def on_step(step, total, x, denoised):
        step_now[0] = step + 1
        if callback is not None:
            callback(0, step, total, x, denoised)

    sigmas = flow_sigmas(settings.steps, shift=settings.shift)
    with torch.no_grad():
        # the whole-clip latent state stays on the CPU; one window at a time on the device
        x = sample(denoiser, (1, *cond.noise_latent_shape), sigmas, sampler=settings.sampler, seed=settings.seed,
                   device="cpu", callback=on_step, cancel=cancel)
    latents = process_out(x[0, :, r:].float().cpu())
    del x
    frames = decode_chunked(codec, latents, chunk)[:num_frames]
    info = {"strategy": "sliding_window", "windows": len(plan), "window_latent_frames": window_latents,
            "overlap_frames": overlap, "ramp": ramp, "frames": num_frames, "binding": binding,
            "mode": settings.mode}
    return LongVideoResult(frames, plan, "sliding_window", latents, info)
