"""Cumulative classifier-free guidance (One-to-All) for the ComfyUI nodes: the three
conditions built from AnyCrowd IILR Encode's conditioning, shared by AnyCrowd Cumulative CFG
and AnyCrowd Sampler (guidance = cumulative). The GUIDER itself is in comfy_runtime.

unconditional = negative text with neutral references and control, pose = positive text with
neutral references, full = positive as it is. "Neutral" is the latent mean (zero in model
space), what the trainer's reference dropout shows the model, and needs no VAE call; the
core's `IILRConditioning.vace_context_without` does the same in model space.
"""

from __future__ import annotations

import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pipeline import GUIDANCE as CORE_GUIDANCE

from .comfy_runtime import cumulative_guider
from .input_checks import finite_number

GUIDANCE = list(CORE_GUIDANCE)  # as a ComfyUI combo list
# optional widgets of the sampler nodes (old workflows without them keep plain cfg)
GUIDANCE_INPUTS = {
    "guidance": (GUIDANCE, {
        "default": "cfg",
        "tooltip": "cfg: plain classifier-free guidance at cfg. cumulative: One-to-All's cumulative guidance, cfg then "
                   "scales pose guidance and ref_cfg reference guidance (three model evaluations per step; measured "
                   "in docs/claims.md)."}),
    "ref_cfg": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 20.0, "step": 0.05,
                          "tooltip": "cumulative only: scale of (reference + pose) over pose-only."}),
}


def guidance_options(guidance, ref_cfg) -> tuple[str, float]:
    """The two widgets checked: AnyCrowdError for an unknown guidance or a bad ref_cfg."""
    if guidance not in GUIDANCE:
        raise AnyCrowdError(f"guidance {guidance!r} is not available: choose one of {', '.join(GUIDANCE)}.")
    return guidance, finite_number(ref_cfg, "ref_cfg", low=0.0, fix="One-to-All uses 1.5.")


def neutral_vace(cond: list, reference_frames: int, neutral: torch.Tensor, *, control: bool, name: str) -> list:
    """A copy of a CONDITIONING whose VACE frames (every stream) have the first
    `reference_frames` latent frames, and with `control` all later frames too, set to the
    raw latent `neutral` `[16]` (the latent mean); masks and everything else unchanged."""
    out = []
    for tensor, options in cond:
        frames = options.get("vace_frames")
        if not frames:
            raise AnyCrowdError(
                f"{name} has no VACE frames: connect the {name} output of AnyCrowd IILR Encode (cumulative guidance "
                "needs the reference and control latents it carries)."
            )
        edited = []
        for vf in frames:
            if vf.shape[2] <= reference_frames:
                raise AnyCrowdError(
                    f"{name} holds {vf.shape[2]} VACE latent frames but the layout has {reference_frames} reference "
                    "frames: connect the layout and conditioning of the same AnyCrowd IILR Encode node."
                )
            vf = vf.clone()
            value = neutral.to(vf.device, vf.dtype).view(1, 16, 1, 1, 1).repeat(1, vf.shape[1] // 16, 1, 1, 1)
            stop = vf.shape[2] if control else reference_frames
            vf[:, :, :stop] = value
            edited.append(vf)
        out.append([tensor, {**options, "vace_frames": edited}])
    return out


def cumulative_guidance(model, positive: list, negative: list, reference_frames: int, pose_scale: float,
                        ref_scale: float):
    """The GUIDER for `model` (a ComfyUI MODEL, e.g. TSDA-patched) and IILR Encode's conditioning."""
    neutral = model.model.process_latent_out(torch.zeros(1, 16, 1, 1, 1)).flatten()
    middle = neutral_vace(positive, reference_frames, neutral, control=False, name="positive")
    uncond = neutral_vace(negative, reference_frames, neutral, control=True, name="negative")
    return cumulative_guider(model, positive, middle, uncond, pose_scale, ref_scale)
