"""The Long Video Sampler's ComfyUI side: the shared long-video loops
(`anycrowd_core.long_video_run`) sampling with ComfyUI's native Wan 2.1 VACE MODEL. Token
replace keeps the context latents with the sampler's inpainting mask; sliding windows run
through our model-function wrapper, which slices `vace_context` too. Only MODEL, VAE and
CONDITIONING are adapted here; why and how: docs/comfyui_long_video.md. comfy.* is imported
lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from anycrowd_core.attention import AnyCrowdAttention
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.long_video import LongVideoSettings, Segment, Window
from anycrowd_core.long_video_run import EncodedClip, LongVideoInputs, blend_windows
from anycrowd_core.long_video_run import run_sliding_window as run_windows_loop
from anycrowd_core.long_video_run import run_token_replace as run_segments_loop

from .comfy_patch import HOOK_KEY, patch_model
from .comfy_runtime import check_interrupted, progress_bar, require_comfy, sample_with_guider
from .guidance import cumulative_guidance
from .vace_conditioning import append_vace_stream


@dataclass
class SamplingOptions:
    """Sampler settings shared by every segment / window (ComfyUI names and ranges)."""

    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    attention_mode: str = "masked"
    agf_mode: str = "gated"
    gates: object = None
    guidance: str = "cfg"  # or "cumulative": cfg scales pose guidance, ref_cfg reference guidance
    ref_cfg: float = 1.5


def context_latent(latent_shape: Sequence[int], trim: int, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(latent `[1, 16, L, h, w]`, noise_mask `[1, 1, L, h, w]` or None) for one segment.

    Token replace: the context latents (raw VAE space, `[16, c, h, w]`) sit in the first c
    video latent frames, right after the R reference frames, with noise_mask 0 there
    (keep) and 1 elsewhere (generate). ComfyUI's sampler then re-noises them to the current
    sigma before every model call and puts them back into its x0 prediction
    (KSamplerX0Inpaint), so they stay fixed through sampling."""
    latent = torch.zeros((1, *latent_shape))
    if context is None or context.shape[1] == 0:
        return latent, None
    c = int(context.shape[1])
    latent[0, :, trim : trim + c] = context.float().cpu()
    mask = torch.ones((1, 1, *latent_shape[1:]))
    mask[:, :, trim : trim + c] = 0.0
    return latent, mask


class _Progress:
    """One ComfyUI progress bar over every segment's steps (value = steps done in total)."""

    def __init__(self, total: int):
        self.bar, self.total, self.done = progress_bar(total), total, 0

    def step(self, preview=None) -> None:
        self.done = min(self.done + 1, self.total)
        self.bar.update_absolute(self.done, self.total, preview)


def sample_latent(model, latent: Tensor, noise_mask: Tensor | None, options: SamplingOptions, positive, negative,
                  seed: int, progress: _Progress, on_step: Callable | None = None, preview_from: int = 0) -> Tensor:
    """comfy.sample.sample with the same noise as KSampler for `seed`, previews (from latent
    frame `preview_from`: past the reference frames, which cumulative guidance also takes as
    the reference frame count) on the one progress bar, Cancel checked after every step, and
    an optional on_step(step, x0, x)."""
    what = "AnyCrowd Long Video Sampler"
    comfy_sample = require_comfy("comfy.sample", what)
    latent_preview = require_comfy("latent_preview", what)
    utils = require_comfy("comfy.utils", what)
    check_interrupted()
    latent_image = comfy_sample.fix_empty_latent_channels(model, latent)
    noise = comfy_sample.prepare_noise(latent_image, seed, None)
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(step, x0, x, total_steps):
        check_interrupted()  # Cancel between steps, also without the server's progress hook
        if on_step is not None:
            on_step(step, x0, x)
        preview = previewer.decode_latent_to_preview_image("JPEG", x0[:, :, preview_from:]) if previewer else None
        progress.step(preview)

    if options.guidance == "cumulative":
        guider = cumulative_guidance(model, positive, negative, preview_from, options.cfg, options.ref_cfg)
        return sample_with_guider(model, guider, noise, latent_image, steps=options.steps,
                                  sampler_name=options.sampler_name, scheduler=options.scheduler, denoise=1.0,
                                  noise_mask=noise_mask, callback=callback,
                                  disable_pbar=not utils.PROGRESS_BAR_ENABLED, seed=seed)
    return comfy_sample.sample(
        model, noise, options.steps, options.cfg, options.sampler_name, options.scheduler, positive, negative,
        latent_image, denoise=1.0, noise_mask=noise_mask, callback=callback,
        disable_pbar=not utils.PROGRESS_BAR_ENABLED, seed=seed,
    )


def clip_conditioning(clip: EncodedClip, positive: list, negative: list, face_strength: float) -> tuple[list, list]:
    """The text CONDITIONING with the clip's VACE streams appended as AnyCrowd IILR Encode
    (pose) and AnyCrowd Face Control (face, zero reference frames) append them."""
    positive, negative = append_vace_stream(positive, negative, clip.conditioning.vace_context,
                                            clip.conditioning.vace_strength)
    if clip.face is not None:
        positive, negative = append_vace_stream(positive, negative, clip.face, face_strength)
    return positive, negative


class WindowedModelFunction:
    """ComfyUI `model_function_wrapper`: runs the model once per latent window
    `[R reference frames | window frames]`, slicing `vace_context` (every VACE context) and
    any other per-frame condition the same way, with the window's own layout hook in
    `transformer_options`, and blends the overlapping predictions with the core's
    `blend_windows` (update count, optionally ramp-weighted). Works with any native sampler;
    an earlier wrapper is kept and called per window."""

    def __init__(self, windows: Sequence[Window], hooks: Sequence[AnyCrowdAttention | None], num_ref_frames: int,
                 ramp: bool = False, previous: Callable | None = None):
        if len(windows) != len(hooks):
            raise AnyCrowdError("Internal: one attention hook per window is needed.")
        self.windows, self.hooks, self.refs = list(windows), list(hooks), int(num_ref_frames)
        self.ramp, self.previous = ramp, previous
        self.calls = 0  # model calls made (windows x sampler evaluations), for tests/benchmarks

    def __deepcopy__(self, memo):  # model_options are deep-copied on clone; one run, one wrapper
        return self

    def _slice(self, value, frames: int, keep: Tensor):
        if isinstance(value, Tensor):
            if value.ndim == 6 and value.shape[3] == frames:  # vace_context [B, n, 96, L, h, w]
                return value.index_select(3, keep.to(value.device))
            if value.ndim == 5 and value.shape[2] == frames:  # per-frame latents, e.g. c_concat
                return value.index_select(2, keep.to(value.device))
        return value

    def __call__(self, apply_model, args: dict):
        x, t, c = args["input"], args["timestep"], args["c"]
        frames = int(x.shape[2])

        def run_window(i: int, keep: Tensor) -> Tensor:
            c_w = {k: self._slice(v, frames, keep) for k, v in c.items()}
            if self.hooks[i] is not None:
                options = dict(c.get("transformer_options", {}))
                options[HOOK_KEY] = self.hooks[i]
                c_w["transformer_options"] = options
            x_w = x.index_select(2, keep.to(x.device))
            if self.previous is not None:
                y = self.previous(apply_model, {**args, "input": x_w, "c": c_w})
            else:
                y = apply_model(x_w, t, **c_w)
            self.calls += 1
            return y

        return blend_windows(x, self.windows, self.refs, self.ramp, run_window)


class ComfyClipSampler:
    """The shared loops' `ClipSampler` on a native ComfyUI MODEL: each segment patched with its
    layout and sampled by `sample_latent` (context kept by the inpainting mask); sliding
    windows as one run with the whole-clip patch and a `WindowedModelFunction`. One progress
    bar over the whole plan; Cancel checked before each segment and after every step.
    on_step(segment index, step, x0, x) after every sampling step (tests)."""

    def __init__(self, model, positive: list, negative: list, options: SamplingOptions, face_strength: float,
                 on_step: Callable | None = None):
        self.model, self.positive, self.negative, self.options = model, positive, negative, options
        self.face_strength, self.on_step = face_strength, on_step
        self.progress: _Progress | None = None

    def start(self, plan) -> None:
        steps = self.options.steps * (len(plan) if plan and isinstance(plan[0], Segment) else 1)
        self.progress = _Progress(steps)

    def check_cancel(self) -> None:
        check_interrupted()

    def _patch(self, layout):
        o = self.options
        return patch_model(self.model, layout, mode=o.attention_mode, agf=o.agf_mode, gates=o.gates)

    def _sample(self, patched, clip: EncodedClip, context: Tensor | None, seed: int, index: int) -> Tensor:
        positive, negative = clip_conditioning(clip, self.positive, self.negative, self.face_strength)
        latent, mask = context_latent(clip.conditioning.noise_latent_shape, clip.trim, context)
        hook = None if self.on_step is None else (lambda step, x0, x: self.on_step(index, step, x0, x))
        samples = sample_latent(patched, latent, mask, self.options, positive, negative, seed, self.progress, hook,
                                preview_from=clip.trim)
        return samples[0, :, clip.trim :].float().cpu()

    def sample_segment(self, clip: EncodedClip, segment: Segment, context: Tensor | None) -> Tensor:
        return self._sample(self._patch(clip.layout), clip, context, self.options.seed + segment.index, segment.index)

    def sample_windows(self, clip: EncodedClip, windows, layouts, ramp: bool) -> Tensor:
        o = self.options
        hooks = [AnyCrowdAttention(layout, mode=o.attention_mode, agf=o.agf_mode, gates=o.gates) for layout in layouts]
        # the whole-clip layout installs the object patches (and checks the model); each window swaps its hook in
        patched = self._patch(clip.layout)
        wrapper = WindowedModelFunction(windows, hooks, clip.trim, ramp=ramp,
                                        previous=patched.model_options.get("model_function_wrapper"))
        patched.set_model_unet_function_wrapper(wrapper)
        return self._sample(patched, clip, None, o.seed, 0)


def run_token_replace(model, codec, inputs: LongVideoInputs, positive, negative, options: SamplingOptions, *,
                      segment_frames: int = 81, overlap_frames: int = 5, on_step: Callable | None = None) -> Tensor:
    """The whole video `[T, H, W, 3]` (CPU) by token-replace segments (One-to-All §3.4) on a
    native MODEL: the shared loop (`anycrowd_core.long_video_run`) with `ComfyClipSampler`."""
    sampler = ComfyClipSampler(model, positive, negative, options, inputs.face_strength, on_step)
    return run_segments_loop(sampler, codec, inputs, LongVideoSettings("token_replace", segment_frames, overlap_frames))


def run_sliding_window(model, codec, inputs: LongVideoInputs, positive, negative, options: SamplingOptions, *,
                       window_frames: int = 81, overlap_frames: int = 5, ramp: bool = False,
                       on_step: Callable | None = None) -> Tensor:
    """The whole video `[T, H, W, 3]` (CPU) by latent sliding windows (AnyCrowd appendix) on a
    native MODEL: the DiT sees one window at a time; VAE encode/decode run over the whole
    clip as the native VAE nodes do."""
    sampler = ComfyClipSampler(model, positive, negative, options, inputs.face_strength, on_step)
    settings = LongVideoSettings("sliding_window", window_frames, overlap_frames, ramp)
    return run_windows_loop(sampler, codec, inputs, settings)[0].contiguous()
