"""Instance-Isolated Latent Representation (AnyCrowd §3.2) as Wan 2.1 VACE conditioning.

Each isolated identity image and the background image are VAE-encoded ALONE (one codec
call each), giving N+1 reference latent frames [R_1 .. R_N, R_bg]. They are prepended to
the VACE control latents exactly as ComfyUI's `WanVaceToVideo` prepends its single
reference (same inactive/reactive split, 64-channel mask, zero mask frames, trim), and
normalised as `model_base.WAN21_Vace.extra_conds` does, so core and ComfyUI agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .codec import (
    LATENT_CHANNELS,
    SPATIAL_FACTOR,
    VideoCodec,
    check_frame_count,
    check_frame_size,
    latent_frames,
    pixel_frames,
)
from .decoupler import DecoupledInstances
from .errors import AnyCrowdError
from .latent_format import process_in, process_out

__all__ = [
    "IILRConditioning",
    "ComfyVaceInputs",
    "encode_iilr",
    "encode_references",
    "vace_mask_channels",
    "comfy_vace_inputs",
    "raw_vace_streams",
    "encode_control_stream",
    "latent_frames",
    "pixel_frames",
]

MASK_CHANNELS = SPATIAL_FACTOR * SPATIAL_FACTOR  # 64: 8x8 space-to-depth of the pixel mask
VACE_CHANNELS = 2 * LATENT_CHANNELS + MASK_CHANNELS  # 96


@dataclass
class IILRConditioning:
    """IILR reference latents + one VACE context, in MODEL space (Wan21 process_in applied).

    reference_latents: `[16, R, h, w]` — R_1..R_N (identities, in order), then R_bg when
        `has_background`; R = N (+1). h, w = H/8, W/8.
    vace_context: `[96, R + T_lat, h, w]` — channels [inactive 0:16 | reactive 16:32 |
        mask 32:96]; the first R frames are [reference, zeros(16)] with zero mask. This is
        exactly one entry of what ComfyUI's `VaceWanModel` receives as `vace_context`
        (there `[B, num_vace, 96, L, h, w]`).
    vace_strength: scale of the VACE hints (ComfyUI `vace_strength`).
    noise_latent_shape: `(16, R + T_lat, h, w)` — the latent to denoise.
    trim: R — latent frames to drop from the front after sampling (ComfyUI `trim_latent`).
    num_video_frames: T pixel frames; height, width: pixel frame size.
    """

    reference_latents: Tensor
    vace_context: Tensor
    vace_strength: float
    noise_latent_shape: tuple[int, int, int, int]
    trim: int
    num_video_frames: int
    height: int
    width: int
    num_identities: int
    has_background: bool

    @property
    def num_latent_frames(self) -> int:
        """Video latent frames T_lat (without the reference prefix)."""
        return self.noise_latent_shape[1] - self.trim

    def vace_context_without(self, *, references: bool, control: bool = False) -> Tensor:
        """The VACE context with the reference frames and/or the control frames made neutral:
        their latents set to the latent mean (0 in model space, what the trainer's reference
        dropout shows the model), masks kept. The conditions of cumulative guidance:
        references=True gives "pose only", both give "unconditional" (docs/sampling.md)."""
        context = self.vace_context.clone()
        if references:
            context[: 2 * LATENT_CHANNELS, : self.trim] = 0
        if control:
            context[: 2 * LATENT_CHANNELS, self.trim :] = 0
        return context


@dataclass
class ComfyVaceInputs:
    """The same conditioning in the form `WanVaceToVideo` puts into CONDITIONING.

    vace_frames: `[1, 32, L, h, w]` RAW latent space (the model applies process_in per 16
        channels itself); reference frames are [VAE(ref), process_out(0)] as in ComfyUI.
    vace_mask: `[1, 64, L, h, w]`.  vace_strength: float.  trim_latent: int.
    latent: zeros `[1, 16, L, h, w]` (raw space, the empty latent to sample from).
    """

    vace_frames: Tensor
    vace_mask: Tensor
    vace_strength: float
    trim_latent: int
    latent: Tensor


def _encode_checked(codec: VideoCodec, frames: Tensor, t_lat: int, h: int, w: int, what: str) -> Tensor:
    z = codec.encode(frames)
    expected = (LATENT_CHANNELS, t_lat, h, w)
    if tuple(z.shape) != expected:
        raise AnyCrowdError(
            f"The VAE returned a latent of shape {tuple(z.shape)} for the {what}; expected {expected} "
            "(Wan 2.1: 16 channels, 8x spatial, 4x temporal). Use a Wan 2.1 VAE."
        )
    return z


def encode_references(codec: VideoCodec, decoupled: DecoupledInstances, *, background: bool = True) -> Tensor:
    """RAW reference latents `[16, R, h, w]`: each identity image, then the background,
    encoded in its own single-frame codec call (the isolation IILR is named after)."""
    height, width = decoupled.size
    h, w = height // SPATIAL_FACTOR, width // SPATIAL_FACTOR
    images = list(decoupled.identity_images)
    if background:
        images.append(decoupled.background)
    frames = []
    for i, img in enumerate(images):
        what = "background image" if background and i == len(images) - 1 else f"identity image {i}"
        frames.append(_encode_checked(codec, img[None, :, :, :3].float(), 1, h, w, what))
    return torch.cat(frames, dim=1)


def vace_mask_channels(mask: Tensor, num_latent_frames: int) -> Tensor:
    """Pixel mask `[T, H, W]` -> `[64, T_lat, H/8, W/8]` as ComfyUI's WanVaceToVideo does:
    8x8 space-to-depth (channel = dy*8 + dx), then nearest-exact resize of time to T_lat."""
    t, height, width = mask.shape
    hm, wm = height // SPATIAL_FACTOR, width // SPATIAL_FACTOR
    m = mask.reshape(t, hm, SPATIAL_FACTOR, wm, SPATIAL_FACTOR).permute(2, 4, 0, 1, 3)
    m = m.reshape(MASK_CHANNELS, t, hm, wm)
    return F.interpolate(m[None], size=(num_latent_frames, hm, wm), mode="nearest-exact")[0]


def _as_float_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:
            raise AnyCrowdError(f"{name} must be a tensor or array, got {type(x).__name__}.") from exc
    # the conditioning is built (and kept) on the CPU, whatever device the inputs came from
    return x.detach().float().cpu()


def _control_frames(control_video, name: str) -> Tensor:
    """A control video as float `[T, H, W, 3]` on the CPU, T = 4n+1, H and W multiples of 16."""
    video = _as_float_tensor(control_video, name)
    if video.ndim != 4 or video.shape[-1] < 3:
        raise AnyCrowdError(f"The control video must be [T, H, W, 3]; got shape {tuple(video.shape)}.")
    video = video[..., :3]
    t, height, width = (int(s) for s in video.shape[:3])
    check_frame_count(t, "control video")
    check_frame_size(height, width, what="control video")
    return video


def encode_iilr(
    codec: VideoCodec,
    decoupled: DecoupledInstances,
    control_video,
    control_mask=None,
    *,
    background: bool = True,
    strength: float = 1.0,
) -> IILRConditioning:
    """Encode IILR references and the VACE control into model-space conditioning.

    control_video: `[T, H, W, 3]` 0..1 (e.g. the rendered pose video), T = 4n+1, H and W
    multiples of 16 and equal to the reference size. control_mask: `[T, H, W]` in 0..1 (1 =
    regenerate; None = all ones, as in ComfyUI). Follows WanVaceToVideo: inactive =
    (v-0.5)(1-m)+0.5 and reactive = (v-0.5)m+0.5 are encoded separately.
    """
    video = _control_frames(control_video, "control_video")
    t, height, width = (int(s) for s in video.shape[:3])
    ref_h, ref_w = decoupled.size
    if (ref_h, ref_w) != (height, width):
        raise AnyCrowdError(
            f"The control video is {width}x{height} (WxH) but the reference image is {ref_w}x{ref_h}. "
            "Resize the reference (and its masks) or the control video so both match."
        )
    check_frame_size(ref_h, ref_w, what="reference image")
    if decoupled.num_identities < 1:
        raise AnyCrowdError("IILR needs at least one identity image.")
    if strength < 0:
        raise AnyCrowdError(f"VACE strength must be >= 0, got {strength}.")

    # The control part is the one of any VACE stream; the reference slots in front of it get
    # the IILR latents (their reactive half and mask stay zero, as in WanVaceToVideo).
    r = decoupled.num_identities + (1 if background else 0)
    context = encode_control_stream(codec, video, control_mask, num_ref_frames=r)
    refs = process_in(encode_references(codec, decoupled, background=background))
    context[:LATENT_CHANNELS, :r] = refs
    t_lat, h, w = context.shape[1] - r, context.shape[2], context.shape[3]

    return IILRConditioning(
        reference_latents=refs,
        vace_context=context,
        vace_strength=float(strength),
        noise_latent_shape=(LATENT_CHANNELS, r + t_lat, h, w),
        trim=r,
        num_video_frames=t,
        height=height,
        width=width,
        num_identities=decoupled.num_identities,
        has_background=background,
    )


def raw_vace_streams(context: Tensor) -> tuple[Tensor, Tensor]:
    """A model-space VACE context `[96, L, h, w]` as ComfyUI's conditioning carries it:
    (`vace_frames` `[1, 32, L, h, w]` RAW latent space, `vace_mask` `[1, 64, L, h, w]`);
    `WAN21_Vace.extra_conds` maps them back exactly (process_in per 16 channels)."""
    frames = torch.cat([process_out(context[:LATENT_CHANNELS]),
                        process_out(context[LATENT_CHANNELS : 2 * LATENT_CHANNELS])], dim=0)
    return frames[None], context[2 * LATENT_CHANNELS :][None]


def comfy_vace_inputs(cond: IILRConditioning) -> ComfyVaceInputs:
    """Convert to what ComfyUI's conditioning carries (`vace_frames` raw, `vace_mask`), so
    a node can append it like WanVaceToVideo; the model's extra_conds maps it back exactly."""
    frames, mask = raw_vace_streams(cond.vace_context)
    return ComfyVaceInputs(
        vace_frames=frames,
        vace_mask=mask,
        vace_strength=cond.vace_strength,
        trim_latent=cond.trim,
        latent=torch.zeros((1, *cond.noise_latent_shape)),
    )


def encode_control_stream(codec: VideoCodec, control_video, control_mask=None, *, num_ref_frames: int) -> Tensor:
    """One MORE VACE control stream (e.g. face control) aligned with an IILR context:
    model-space `[96, R + T_lat, h, w]`, R = `num_ref_frames`.

    The control part is encoded exactly like `encode_iilr`'s (inactive/reactive split, 64
    mask channels; mask None = all ones). The R reference slots hold no reference: zeros in
    model space for all 32 latent channels (the value WanVaceToVideo gives the reactive half
    of its reference frame) and a zero mask, so the stream lines up with the latent that
    carries the IILR reference frames. Its strength is set where the context is used.
    """
    video = _control_frames(control_video, "control video")
    t, height, width = (int(s) for s in video.shape[:3])
    if num_ref_frames < 0:
        raise AnyCrowdError(f"num_ref_frames must be >= 0, got {num_ref_frames}.")
    mask = torch.ones((t, height, width)) if control_mask is None else _as_float_tensor(control_mask, "control mask")
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if tuple(mask.shape) != (t, height, width):
        raise AnyCrowdError(
            f"The control mask has shape {tuple(mask.shape)}; it must be [T, H, W] = "
            f"[{t}, {height}, {width}] to match the control video."
        )
    t_lat = latent_frames(t)
    h, w = height // SPATIAL_FACTOR, width // SPATIAL_FACTOR
    m3 = mask[..., None]
    inactive = _encode_checked(codec, (video - 0.5) * (1 - m3) + 0.5, t_lat, h, w, "control video (inactive part)")
    reactive = _encode_checked(codec, (video - 0.5) * m3 + 0.5, t_lat, h, w, "control video (reactive part)")
    control = torch.cat([process_in(inactive), process_in(reactive), vace_mask_channels(mask, t_lat)], dim=0)
    refs = torch.zeros((VACE_CHANNELS, int(num_ref_frames), h, w), dtype=control.dtype)
    return torch.cat([refs, control], dim=1)
