"""Headless AnyCrowd animation: reference + masks + control video + boxes -> frames.

One function, `animate`, runs the whole method on the core DiT: Instance Decoupler, IILR
encoding through a codec, the token layout, TSDA-patched flow-matching sampling with
classifier-free guidance, trimming of the reference frames and decoding. The ComfyUI
nodes run the same steps with ComfyUI's own model, VAE and sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .attention import AnyCrowdAttention, GateBank
from .codec import VideoCodec
from .decoupler import DecoupledInstances, decouple_instances
from .errors import AnyCrowdError, require_finite
from .iilr import IILRConditioning, encode_iilr
from .latent_format import process_out
from .layout import TokenLayout, build_token_layout, check_tracks_visible
from .sampling import SAMPLERS, cfg_denoiser, cumulative_cfg_denoiser, flow_denoiser, flow_sigmas, sample
from .wan import WanVaceModel, shifted_reference_positions

_NAN_OUTPUT_FIX = (
    "Sampling produced NaN/inf, so no video was made. Likely causes: an fp16 model overflowing (load it in "
    "bf16 or fp32), non-finite weights in the checkpoint or adapter, or extreme cfg / vace_strength values."
)


@dataclass
class AnimationInputs:
    """What to animate, all in pixels.

    reference_image: `[H, W, 3]` float 0..1, the characters (and background) to animate.
    reference_masks: bool `[N, H, W]`, one instance mask per identity in the reference.
    control_video:   `[T, H, W, 3]` float 0..1, the VACE control (rendered pose), T = 4n+1.
    track_boxes:     `[M, T, 4]` xyxy pixel boxes of each driving track, NaN where absent.
    binding:         identity index (0..N-1) for each of the M tracks; default track i ->
                     identity i (requires M == N).
    decoupled:       identities already isolated and placed (e.g. aligned onto their tracks,
                     or a custom arrangement); replaces the Instance Decoupler step. Its
                     masks define the identities (N); reference_image/masks are not used.
    """

    reference_image: Tensor
    reference_masks: Tensor
    control_video: Tensor
    track_boxes: Tensor
    binding: Sequence[int] | None = None
    decoupled: DecoupledInstances | None = None

    def resolved_binding(self) -> list[int]:
        if self.binding is not None:
            return [int(b) for b in self.binding]
        m, n = int(self.track_boxes.shape[0]), int(self.reference_masks.shape[0])
        if m != n:
            raise AnyCrowdError(
                f"{m} motion tracks but {n} reference identities and no binding given: pass a "
                f"binding with one identity index per track, e.g. binding={[i % n for i in range(m)]}."
            )
        return list(range(m))


@dataclass
class SamplingSettings:
    """How to sample. `mode` is the attention mode (tsda / masked / global), `agf` the
    fusion of overlapping candidates in tsda (gated / mean / max). `shifted_rope`: the
    reference frames take RealisDance-DiT's shifted RoPE positions; on when the adapter was
    trained with it (its metadata says so), off for a stock model.

    guidance: "cfg" (positive against negative text at scale `cfg`) or "cumulative"
    (One-to-All: unconditional -> pose -> reference + pose, scaled by `pose_scale` and
    `ref_scale`; `cfg` is then unused). See docs/sampling.md for the three conditions."""

    steps: int = 20
    cfg: float = 5.0
    shift: float = 5.0
    sampler: str = "euler"
    seed: int = 0
    mode: str = "masked"
    agf: str = "gated"
    vace_strength: float = 1.0
    background: bool = True
    reassign: bool = False
    shifted_rope: bool = False
    guidance: str = "cfg"
    pose_scale: float = 1.5
    ref_scale: float = 1.5

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise AnyCrowdError(f"Unknown sampler {self.sampler!r}: choose one of {sorted(SAMPLERS)}.")
        if self.steps < 1:
            raise AnyCrowdError(f"steps must be at least 1 (got {self.steps}).")
        require_finite(self.cfg, "cfg", "Use e.g. 5.0 (1.0 turns guidance off).")
        if self.guidance not in GUIDANCE:
            raise AnyCrowdError(f"Unknown guidance {self.guidance!r}: choose one of {', '.join(GUIDANCE)}.")
        for name in ("pose_scale", "ref_scale"):
            require_finite(getattr(self, name), name, "One-to-All uses 1.5 for both.")
        require_finite(self.vace_strength, "vace_strength", "Use e.g. 1.0.")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise AnyCrowdError(f"shift must be a positive finite number, got {self.shift}; Wan uses 3.0-8.0 (5.0 default).")
        if self.vace_strength < 0:
            raise AnyCrowdError(f"vace_strength must be 0 or more, got {self.vace_strength}; 1.0 is the trained strength.")
        if not 0 <= int(self.seed) < 2**64:
            raise AnyCrowdError(f"seed must lie in 0 .. 2**64-1, got {self.seed}.")


@dataclass
class AnimationResult:
    """frames `[T, H, W, 3]` 0..1 decoded video; latents `[16, T_lat, h, w]` raw VAE space
    (reference frames trimmed); plus the intermediate objects for previews and debugging."""

    frames: Tensor
    latents: Tensor
    decoupled: DecoupledInstances
    conditioning: IILRConditioning
    layout: TokenLayout
    info: dict = field(default_factory=dict)


def check_request(inputs: AnimationInputs, negative: Tensor | None, settings: SamplingSettings) -> list[int]:
    """Everything about a request that can be checked before any encoding work; returns the
    track -> identity binding. Shared by `animate` and the long-video samplers."""
    settings.validate()
    if settings.guidance == "cfg" and settings.cfg != 1.0 and negative is None:
        raise AnyCrowdError("cfg != 1 needs a negative text embedding: pass `negative` or set cfg=1.")
    video, boxes = inputs.control_video, inputs.track_boxes
    require_finite(video, "The control video", "Its pixels must be numbers in 0..1; re-render or re-load it.")
    if inputs.decoupled is None:
        require_finite(inputs.reference_image, "The reference image", "Its pixels must be numbers in 0..1; re-load it.")
    if video.ndim != 4 or video.shape[-1] < 3:
        raise AnyCrowdError(f"The control video must be [T, H, W, 3]; got shape {tuple(video.shape)}.")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[1] != video.shape[0]:
        raise AnyCrowdError(
            f"track_boxes must be [M, T, 4] with T = {video.shape[0]} (the control video's frames), got "
            f"{tuple(boxes.shape)}: track the whole driving video (one box, or a NaN row, per track and frame)."
        )
    binding = inputs.resolved_binding()
    check_tracks_visible(boxes, binding, int(video.shape[1]), int(video.shape[2]))
    return binding


GUIDANCE = ("cfg", "cumulative")


def guidance_conditions(conditioning: IILRConditioning, positive: Tensor, negative: Tensor | None):
    """(texts, VACE contexts `[96, F, h, w]`) of cumulative guidance's three conditions, in
    order: unconditional = negative text (the positive one when None), no control, no
    references; pose = positive text, the control, neutral references; full = everything."""
    negative = positive if negative is None else negative
    contexts = [conditioning.vace_context_without(references=True, control=True),
                conditioning.vace_context_without(references=True), conditioning.vace_context]
    return [negative, positive, positive], contexts


def cumulative_guidance(make, texts, contexts, settings: SamplingSettings):
    """One-to-All's cumulative guidance over `guidance_conditions`; `make(text, vace)` gives
    the x0 denoiser of one text `[B, L, D]` and context `[B, 96, F, h, w]`. The three run as
    one batch of 3 when the texts have one shape, else one after another."""
    separate = [make(text, vace[None]) for text, vace in zip(texts, contexts)]
    batched = None
    if all(t.shape == texts[0].shape for t in texts):
        batched = make(torch.cat(texts), torch.stack(contexts))
    return cumulative_cfg_denoiser(*separate, settings.pose_scale, settings.ref_scale, batched=batched)


def rope_positions_for(conditioning: IILRConditioning, shifted: bool, device=None) -> Tensor | None:
    """The shifted RoPE positions of the conditioning's token grid (reference frames beside
    the video grid), or None for Wan's own positions."""
    if not shifted:
        return None
    frames, h, w = conditioning.noise_latent_shape[1:]
    return shifted_reference_positions(conditioning.trim, frames, h // 2, w // 2, device=device)


def animate(
    model: WanVaceModel,
    codec: VideoCodec,
    inputs: AnimationInputs,
    positive: Tensor,
    negative: Tensor | None = None,
    settings: SamplingSettings | None = None,
    *,
    gates: GateBank | None = None,
    callback: Callable[[int, int, Tensor, Tensor], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AnimationResult:
    """Animate the reference identities along the driving tracks (AnyCrowd, paper §3).

    positive / negative: text embeddings `[1, L_text, text_dim]` (e.g. umT5 output for
    Wan); negative may be None when `settings.cfg == 1`.
    """
    settings = settings or SamplingSettings()
    binding = check_request(inputs, negative, settings)
    decoupled = inputs.decoupled or decouple_instances(
        inputs.reference_image, inputs.reference_masks, reassign=settings.reassign, seed=settings.seed
    )
    conditioning = encode_iilr(
        codec, decoupled, inputs.control_video,
        background=settings.background, strength=settings.vace_strength,
    )
    layout = build_token_layout(
        decoupled.masks, inputs.track_boxes, binding, background=settings.background
    )

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    hook = AnyCrowdAttention(layout.to(device), mode=settings.mode, agf=settings.agf, gates=gates)
    vace_context = conditioning.vace_context.unsqueeze(0).to(device, dtype)
    rope = rope_positions_for(conditioning, settings.shifted_rope, device)

    def velocity_for(text: Tensor, vace: Tensor = vace_context):
        text = text.to(device, dtype)

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return model(
                x.to(dtype), t, text, vace,
                vace_strength=conditioning.vace_strength, attention=hook, rope_positions=rope,
            ).to(x.dtype)

        return velocity

    if settings.guidance == "cumulative":
        texts, contexts = guidance_conditions(conditioning, positive, negative)
        denoiser = cumulative_guidance(lambda text, vace: flow_denoiser(velocity_for(text, vace.to(device, dtype))),
                                       texts, contexts, settings)
    else:
        cond = flow_denoiser(velocity_for(positive))
        denoiser = cond
        if settings.cfg != 1.0:
            denoiser = cfg_denoiser(cond, flow_denoiser(velocity_for(negative)), settings.cfg)

    sigmas = flow_sigmas(settings.steps, shift=settings.shift)
    with torch.no_grad():
        x = sample(
            denoiser, (1, *conditioning.noise_latent_shape), sigmas,
            sampler=settings.sampler, seed=settings.seed, device=device,
            callback=callback, cancel=cancel,
        )
    require_finite(x, "The sampled latent", _NAN_OUTPUT_FIX)
    latents = process_out(x[0, :, conditioning.trim:].float().cpu())
    frames = codec.decode(latents)
    info = {
        "identities": int(inputs.reference_masks.shape[0]),
        "tracks": int(inputs.track_boxes.shape[0]),
        "binding": binding,
        "tokens": layout.num_tokens,
        "mode": settings.mode,
        "agf": settings.agf,
        "guidance": settings.guidance,
    }
    return AnimationResult(frames, latents, decoupled, conditioning, layout, info)
