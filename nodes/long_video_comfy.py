"""Long videos on ComfyUI's native Wan 2.1 VACE model: token-replace segments (context latents
kept by the sampler's inpainting mask) and latent sliding windows (our own model-function
wrapper that slices `vace_context` too). Plans come from `anycrowd_core.long_video`; why and
how: docs/comfyui_long_video.md. comfy.* is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from anycrowd_core.attention import AnyCrowdAttention
from anycrowd_core.decoupler import DecoupledInstances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import comfy_vace_inputs, encode_control_stream, encode_iilr
from anycrowd_core.layout import TokenLayout, build_token_layout
from anycrowd_core.long_video import (
    Window,
    pad_frames,
    padded_frame_count,
    plan_segments,
    plan_windows,
    slice_frames,
    slice_tracks,
    window_track_boxes,
)

from .comfy_patch import HOOK_KEY, patch_model
from .comfy_runtime import check_interrupted, conditioning_set_values, progress_bar, require_comfy, sample_with_guider
from .guidance import cumulative_guidance
from .node_face_control import comfy_vace_values

STRATEGIES = ("token_replace", "sliding_window")


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


@dataclass
class EncodedClip:
    """Conditioning of one clip (a segment, or the whole padded video for sliding windows).

    positive / negative: CONDITIONING with the pose stream (and face stream) appended.
    layout: token layout of the clip.  trim: reference latent frames R in front.
    latent_shape: `(16, R + T_lat, h, w)`.
    """

    positive: list
    negative: list
    layout: TokenLayout
    trim: int
    latent_shape: tuple[int, int, int, int]


class ReferenceCache:
    """Codec wrapper that encodes each single-frame input (the IILR reference images) once
    per run: every segment reuses identical reference latents and skips N+1 VAE calls."""

    def __init__(self, codec):
        self.codec = codec
        self._frames: list[tuple[Tensor, Tensor]] = []

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


def encode_clip(codec, inputs: LongVideoInputs, control: Tensor, boxes: Tensor, face: Tensor | None,
                positive: list, negative: list, binding: Sequence[int] | None = None) -> EncodedClip:
    """IILR-encode one clip like AnyCrowd IILR Encode does (same core calls, same
    conditioning entries), plus the face stream as a second VACE context with zero
    reference frames, and the clip's token layout."""
    binding = list(inputs.binding if binding is None else binding)
    layout = build_token_layout(inputs.decoupled.masks, boxes, binding, background=inputs.background)
    cond = encode_iilr(codec, inputs.decoupled, control, None, background=inputs.background, strength=inputs.strength)
    vace = comfy_vace_inputs(cond)
    values = {"vace_frames": [vace.vace_frames], "vace_mask": [vace.vace_mask], "vace_strength": [vace.vace_strength]}
    positive = conditioning_set_values(positive, values, append=True)
    negative = conditioning_set_values(negative, values, append=True)
    if face is not None:
        face_values = comfy_vace_values(encode_control_stream(codec, face, num_ref_frames=cond.trim), inputs.face_strength)
        positive = conditioning_set_values(positive, face_values, append=True)
        negative = conditioning_set_values(negative, face_values, append=True)
    return EncodedClip(positive, negative, layout, cond.trim, tuple(vace.latent.shape[1:]))


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


# ----------------------------------------------------------------------------- token replace


def run_token_replace(model, codec, inputs: LongVideoInputs, positive, negative, options: SamplingOptions, *,
                      segment_frames: int = 81, overlap_frames: int = 5, on_step: Callable | None = None) -> Tensor:
    """The whole video `[T, H, W, 3]` (CPU) by token-replace segments (One-to-All §3.4).

    Segment s > 0 starts with the last `overlap_frames` frames already generated,
    VAE-encoded (5 frames = 2 latent frames) and kept fixed by the inpainting mask; the
    segment's own layout comes from its slice of the boxes; its decoded frames outside the
    context go to the output. One segment's tensors on the device at a time.
    on_step(segment index, step, x0, x) is called after every sampling step (tests).
    """
    segments = plan_segments(inputs.num_frames, segment_frames, overlap_frames)
    codec = ReferenceCache(codec)
    h, w = inputs.control.shape[1:3]
    out = torch.empty((inputs.num_frames, h, w, 3), dtype=torch.float32)
    progress = _Progress(len(segments) * options.steps)
    for seg in segments:
        check_interrupted()
        clip = encode_clip(
            codec, inputs, slice_frames(inputs.control, seg), slice_tracks(inputs.boxes, seg),
            slice_frames(inputs.face, seg) if inputs.face is not None else None, positive, negative,
        )
        context = None
        if seg.context_frames:
            context = codec.encode(out[seg.start : seg.start + seg.context_frames])
        latent, mask = context_latent(clip.latent_shape, clip.trim, context)
        patched = patch_model(model, clip.layout, mode=options.attention_mode, agf=options.agf_mode, gates=options.gates)
        hook = None if on_step is None else (lambda step, x0, x, s=seg.index: on_step(s, step, x0, x))
        samples = sample_latent(patched, latent, mask, options, clip.positive, clip.negative,
                                options.seed + seg.index, progress, hook, preview_from=clip.trim)
        frames = codec.decode(samples[0, :, clip.trim :].float().cpu())
        out[seg.out] = frames[seg.keep]
        del samples, frames, patched
    return out


# ----------------------------------------------------------------------------- sliding windows


class WindowedModelFunction:
    """ComfyUI `model_function_wrapper`: runs the model once per latent window
    `[R reference frames | window frames]`, slicing `vace_context` (every VACE context) and
    any other per-frame condition the same way, with the window's own layout hook in
    `transformer_options`, and averages the overlapping predictions by update count
    (optionally ramp-weighted). Works with any native sampler; an earlier wrapper is kept
    and called per window."""

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
        r = self.refs
        out = torch.zeros_like(x)
        count = torch.zeros(frames, dtype=x.dtype, device=x.device)
        for win, hook in zip(self.windows, self.hooks):
            keep = torch.cat([torch.arange(r), torch.arange(r + win.start, r + win.stop)])
            c_w = {k: self._slice(v, frames, keep) for k, v in c.items()}
            if hook is not None:
                options = dict(c.get("transformer_options", {}))
                options[HOOK_KEY] = hook
                c_w["transformer_options"] = options
            x_w = x.index_select(2, keep.to(x.device))
            if self.previous is not None:
                y = self.previous(apply_model, {**args, "input": x_w, "c": c_w})
            else:
                y = apply_model(x_w, t, **c_w)
            self.calls += 1
            weight = torch.cat([torch.ones(r), win.weights(self.ramp)]).to(device=x.device, dtype=x.dtype)
            idx = keep.to(x.device)
            out.index_add_(2, idx, y * weight.view(1, 1, -1, 1, 1))
            count.index_add_(0, idx, weight)
        return out / count.view(1, 1, -1, 1, 1)


def run_sliding_window(model, codec, inputs: LongVideoInputs, positive, negative, options: SamplingOptions, *,
                       window_frames: int = 81, overlap_frames: int = 5, ramp: bool = False,
                       on_step: Callable | None = None) -> Tensor:
    """The whole video `[T, H, W, 3]` (CPU) by latent sliding windows (AnyCrowd appendix):
    the padded video is encoded as one clip, every window is denoised at every step with the
    reference frames in front and its own layout, overlaps are averaged. The DiT sees one
    window at a time; VAE encode/decode run over the whole clip as the native VAE nodes do."""
    total = padded_frame_count(inputs.num_frames)
    windows = plan_windows(inputs.num_frames, window_frames, overlap_frames)
    boxes = pad_frames(inputs.boxes.transpose(0, 1), total).transpose(0, 1)
    face = pad_frames(inputs.face, total) if inputs.face is not None else None
    clip = encode_clip(codec, inputs, pad_frames(inputs.control, total), boxes, face, positive, negative)
    hooks = []
    for win in windows:
        wb, binding = window_track_boxes(boxes, inputs.binding, win)
        layout = build_token_layout(inputs.decoupled.masks, wb, binding, background=inputs.background)
        hooks.append(AnyCrowdAttention(layout, mode=options.attention_mode, agf=options.agf_mode, gates=options.gates))
    # the whole-clip layout installs the object patches (and checks the model); each window swaps its hook in
    patched = patch_model(model, clip.layout, mode=options.attention_mode, agf=options.agf_mode, gates=options.gates)
    wrapper = WindowedModelFunction(windows, hooks, clip.trim, ramp=ramp,
                                    previous=patched.model_options.get("model_function_wrapper"))
    patched.set_model_unet_function_wrapper(wrapper)
    latent, _ = context_latent(clip.latent_shape, clip.trim, None)
    progress = _Progress(options.steps)
    hook = None if on_step is None else (lambda step, x0, x: on_step(0, step, x0, x))
    samples = sample_latent(patched, latent, None, options, clip.positive, clip.negative, options.seed, progress, hook,
                            preview_from=clip.trim)
    frames = codec.decode(samples[0, :, clip.trim :].float().cpu())
    return frames[: inputs.num_frames].contiguous()

