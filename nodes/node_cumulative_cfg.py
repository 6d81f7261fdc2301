"""AnyCrowd Cumulative CFG node: a GUIDER for SamplerCustomAdvanced with One-to-All's
cumulative classifier-free guidance on Wan 2.1 VACE (docs/sampling.md, docs/claims.md).

The three conditions come from the positive / negative of AnyCrowd IILR Encode (see
nodes/guidance.py).
"""

from __future__ import annotations

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout

from .comfy_patch import check_wan_vace
from .guidance import cumulative_guidance
from .input_checks import conditioning, finite_number
from .node_types import LAYOUT

SCALE = {"default": 1.5, "min": 0.0, "max": 20.0, "step": 0.05}


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
        return (cumulative_guidance(model, positive, negative, layout.num_ref_frames, pose_scale, ref_scale),)
