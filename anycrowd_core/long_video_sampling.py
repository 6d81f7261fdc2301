"""Headless long videos on the core DiT: `animate_long`, and `CoreClipSampler`, the core
DiT and samplers as the `ClipSampler` of the shared loops (`long_video_run.py`: token replace,
One-to-All §3.4; sliding windows, AnyCrowd appendix). Plans: `long_video.py`; exact behaviour
and memory: docs/long_video.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .attention import AnyCrowdAttention, GateBank
from .codec import VideoCodec
from .decoupler import decouple_instances
from .errors import AnyCrowdError, SamplingCancelled
from .iilr import IILRConditioning
from .latent_format import process_in, process_out
from .long_video import LongVideoSettings, latent_count
from .long_video_run import LongVideoInputs, blend_windows, run_sliding_window, run_token_replace
from .pipeline import (
    AnimationInputs,
    SamplingSettings,
    check_request,
    cumulative_guidance,
    guidance_conditions,
    rope_positions_for,
)
from .sampling import cfg_denoiser, flow_denoiser, flow_sigmas, make_noise, sample, sigma_to_timestep
from .wan import WanVaceModel

__all__ = ["LongVideoProgress", "LongVideoResult", "CoreClipSampler", "animate_long"]


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


def _window_conditioning(conditioning: IILRConditioning, index: Tensor) -> IILRConditioning:
    """The clip's conditioning restricted to the latent frames `index` ([references | window])."""
    shape = conditioning.noise_latent_shape
    return replace(conditioning, vace_context=conditioning.vace_context[:, index],
                   noise_latent_shape=(shape[0], len(index), *shape[2:]))


def _check_no_face(clip) -> None:
    if clip.face is not None:  # the core DiT takes one VACE context
        raise AnyCrowdError("The headless long-video sampler takes no face stream: leave face out of the inputs.")


# ----------------------------------------------------------------------------- the core DiT as a ClipSampler


class CoreClipSampler:
    """`ClipSampler` on the core Wan VACE DiT with the core samplers (`sampling.py`): the
    attention hook per segment / window, cfg or cumulative guidance (`_guided`), token-replace
    context pinned, sliding windows blended on the CPU with one window on the device."""

    def __init__(self, model: WanVaceModel, positive: Tensor, negative: Tensor | None, settings: SamplingSettings,
                 strategy: str, *, gates: GateBank | None = None, progress=None, callback=None, cancel=None):
        self.model, self.positive, self.negative, self.settings = model, positive, negative, settings
        self.strategy, self.gates = strategy, gates
        self.progress, self.callback, self.cancel = progress, callback, cancel
        self.device = next(model.parameters()).device
        self.plan: list = []

    def start(self, plan) -> None:
        self.plan = list(plan)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise SamplingCancelled("sampling cancelled")

    def _hook(self, layout) -> AnyCrowdAttention:
        return AnyCrowdAttention(layout.to(self.device), mode=self.settings.mode, agf=self.settings.agf,
                                 gates=self.gates)

    def _report(self, index: int, step: int) -> None:
        if self.progress is not None:
            self.progress(LongVideoProgress(self.strategy, index, len(self.plan), step, self.settings.steps))

    def sample_segment(self, clip, segment, context):
        settings, cond, r = self.settings, clip.conditioning, clip.trim
        _check_no_face(clip)
        hook = self._hook(clip.layout)
        clean = slice(r, r + segment.context_latent_frames) if segment.context_frames else None
        denoiser = _guided(self.model, cond, hook, self.positive, self.negative, settings, clean)
        noise = make_noise((1, *cond.noise_latent_shape), settings.seed + segment.index, device=self.device)
        ctx = None
        if clean is not None:
            ctx = process_in(context).to(self.device, noise.dtype)[None]
            noise[:, :, clean] = ctx
            denoiser = _pinned(denoiser, clean, ctx)

        def on_step(step, total, x, denoised):
            if clean is not None:
                # keeps the context bit-identical for every solver (Euler/Heun already leave
                # it untouched; DPM++'s convex combination would round it)
                x[:, :, clean] = ctx
            if self.callback is not None:
                self.callback(segment.index, step, total, x, denoised)
            self._report(segment.index, step)

        with torch.no_grad():
            x = sample(denoiser, noise, flow_sigmas(settings.steps, shift=settings.shift), sampler=settings.sampler,
                       seed=settings.seed + segment.index, device=self.device, callback=on_step, cancel=self.cancel)
        return process_out(x[0, :, r:].float().cpu())

    def sample_windows(self, clip, windows, layouts, ramp):
        settings, cond, r = self.settings, clip.conditioning, clip.trim
        _check_no_face(clip)
        hooks = [self._hook(layout) for layout in layouts]
        step_now = [1]

        def run_window(i: int, index: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
            self.check_cancel()
            # only this window's latents and VACE slice go to the device; predictions come back
            window_cond = _window_conditioning(cond, index)
            guided = _guided(self.model, window_cond, hooks[i], self.positive, self.negative, settings, None)
            pred = guided(x[:, :, index].to(self.device), sigma).to(x.device)
            self._report(i, step_now[0])
            return pred

        def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
            return blend_windows(x, windows, r, ramp, lambda i, index: run_window(i, index, x, sigma))

        def on_step(step, total, x, denoised):
            step_now[0] = step + 1
            if self.callback is not None:
                self.callback(0, step, total, x, denoised)

        with torch.no_grad():
            # the whole-clip latent state stays on the CPU; one window at a time on the device
            x = sample(denoiser, (1, *cond.noise_latent_shape), flow_sigmas(settings.steps, shift=settings.shift),
                       sampler=settings.sampler, seed=settings.seed, device="cpu", callback=on_step,
                       cancel=self.cancel)
        return process_out(x[0, :, r:].float().cpu())


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
    These five are a `LongVideoSettings`; the loops are `long_video_run.py`, shared with
    the ComfyUI node.
    progress(event) after each unit of work; callback(index, step, total, x, denoised)
    after each sampler step (index = segment, or 0 for sliding windows; x includes the
    reference frames); cancel() is polled before every model evaluation and raises
    `SamplingCancelled`.
    """
    settings = settings or SamplingSettings()
    if strategy == "sliding_window" and codec_chunk is None:
        codec_chunk = latent_count(int(segment_frames))
    long_settings = LongVideoSettings(strategy, segment_frames, overlap_frames, ramp, codec_chunk)
    binding = check_request(inputs, negative, settings)
    decoupled = decouple_instances(
        inputs.reference_image, inputs.reference_masks, reassign=settings.reassign, seed=settings.seed
    )
    clip_inputs = LongVideoInputs(decoupled, inputs.control_video, inputs.track_boxes, binding,
                                  strength=settings.vace_strength, background=settings.background)
    sampler = CoreClipSampler(model, positive, negative, settings, strategy, gates=gates, progress=progress,
                              callback=callback, cancel=cancel)
    if strategy == "token_replace":
        frames, latents = run_token_replace(sampler, codec, clip_inputs, long_settings), None
        info = {"strategy": strategy, "segments": len(sampler.plan), "segment_frames": segment_frames,
                "overlap_frames": long_settings.overlap}
    else:
        frames, latents = run_sliding_window(sampler, codec, clip_inputs, long_settings)
        info = {"strategy": strategy, "windows": len(sampler.plan),
                "window_latent_frames": latent_count(int(segment_frames)), "overlap_frames": long_settings.overlap,
                "ramp": ramp}
    info.update(frames=clip_inputs.num_frames, binding=binding, mode=settings.mode)
    return LongVideoResult(frames, sampler.plan, strategy, latents, info)
