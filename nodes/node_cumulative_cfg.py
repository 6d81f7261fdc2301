"""AnyCrowd Cumulative CFG node: a GUIDER for SamplerCustomAdvanced with One-to-All's
cumulative classifier-free guidance on Wan 2.1 VACE (docs/sampling.md, docs/claims.md).

The three conditions come from the positive / negative of AnyCrowd IILR Encode:
unconditional = negative text with neutral references and control, pose = positive text with
neutral references, full = positive as it is. "Neutral" is the latent mean (zero in model
space), what the trainer's reference dropout shows the model, and needs no VAE call.
"""

from __future__ import annotations

import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout

from .comfy_patch import check_wan_vace
from .comfy_runtime import cumulative_guider
from .input_checks import conditioning, finite_number
from .node_types import LAYOUT

SCALE = {"default": 1.5, "min": 0.0, "max": 20.0, "step": 0.05}


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


class AnyCrowdCumulativeCFG:
    DESCRIPTION = (
        "Cumulative classifier-free guidance (One-to-All) as a GUIDER for SamplerCustomAdvanced: guides towards the "
        "pose (pose_scale) and, on top, towards the references (ref_scale), with three model evaluations per step "
        "run as one batch. Connect the TSDA-patched MODEL and the positive, negative and layout of AnyCrowd IILR "
        "Encode."
    )
    CATEGORY = "AnyCrowd/sampling"
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("Connect to SamplerCustomAdvanced's guider input.",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Wan 2.1 VACE model, patched by AnyCrowd TSDA Patch."}),
                "positive": ("CONDITIONING", {"tooltip": "positive of AnyCrowd IILR Encode (references + pose)."}),
                "negative": ("CONDITIONING", {"tooltip": "negative of AnyCrowd IILR Encode."}),
                "layout": (LAYOUT, {"tooltip": "layout of the same AnyCrowd IILR Encode (its reference frame count)."}),
                "pose_scale": ("FLOAT", {**SCALE, "tooltip": "Guidance from unconditional to pose-conditioned "
                                                             "(One-to-All: 1.5)."}),
                "ref_scale": ("FLOAT", {**SCALE, "tooltip": "Guidance from pose-only to reference + pose "
                                                            "(One-to-All: 1.5). Measured on AnyCrowd-Mini in "
                                                            "docs/claims.md."}),
            }
        }

    def get_guider(self, model, positive, negative, layout, pose_scale=1.5, ref_scale=1.5):
        check_wan_vace(model)
        if not isinstance(layout, TokenLayout):
            raise AnyCrowdError("layout must come from AnyCrowd IILR Encode (an ANYCROWD_LAYOUT).")
        positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        pose_scale = finite_number(pose_scale, "pose_scale", low=0.0, fix="One-to-All uses 1.5.")
        ref_scale = finite_number(ref_scale, "ref_scale", low=0.0, fix="One-to-All uses 1.5.")
        neutral = model.model.process_latent_out(torch.zeros(1, 16, 1, 1, 1)).flatten()
        r = layout.num_ref_frames
        middle = neutral_vace(positive, r, neutral, control=False, name="positive")
        uncond = neutral_vace(negative, r, neutral, control=True, name="negative")
        return (cumulative_guider(model, positive, middle, uncond, pose_scale, ref_scale),)
