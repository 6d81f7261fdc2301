"""AnyCrowd TSDA Patch node: MODEL + layout -> a MODEL whose Wan 2.1 VACE self-attention
runs an AnyCrowd attention mode, for the native KSampler (or any other sampler node).

Thin glue over `comfy_patch.patch_model`; how the patch works: docs/comfyui_patch.md.
"""

from __future__ import annotations

from .comfy_patch import patch_model
from .node_types import GATES, LAYOUT
from .sampling_inputs import AGF_CHOICES, ATTENTION_MODES

BRANCHES = ["both", "dit", "vace"]


class AnyCrowdTSDAPatch:
    DESCRIPTION = (
        "Patches a Wan 2.1 VACE MODEL (from Load Diffusion Model, with any LoRAs) so that its "
        "self-attention keeps each character bound to its own reference (AnyCrowd TSDA). Connect "
        "the layout from AnyCrowd IILR Encode and sample the returned MODEL with the native "
        "KSampler. The input MODEL is left unchanged. Wan 2.2 VACE-Fun A14B: patch each expert with its own TSDA "
        "Patch and the same layout, then chain two KSamplerAdvanced (or use AnyCrowd Sampler's low_noise_model)."
    )
    CATEGORY = "AnyCrowd/sampling"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The patched Wan 2.1 VACE model: sample it with the conditioning and latent of the same IILR Encode node.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1 VACE model (e.g. wan2.1_vace_1.3B_fp16.safetensors "
                                               "loaded with Load Diffusion Model) or one Wan 2.2 VACE-Fun A14B expert; "
                                               "LoRAs may be applied before or after."}),
                "layout": (LAYOUT, {"tooltip": "Token layout from AnyCrowd IILR Encode: which tokens belong to which "
                                               "character. Built for one width, height, length and character count."}),
                "attention_mode": (ATTENTION_MODES, {
                    "default": "masked",
                    "tooltip": "masked: training-free binding for stock Wan 2.1 VACE checkpoints (recommended). "
                               "tsda: the paper's tri-stage decoupled attention; needs an AnyCrowd-trained LoRA "
                               "and AGF gates for good results. global: plain Wan attention (no binding; for comparison).",
                }),
                "agf_mode": (AGF_CHOICES, {
                    "default": "gated",
                    "tooltip": "How tsda fuses a token covered by several characters: gated uses the trained gates "
                               "(without gates it equals mean), mean averages, max takes the per-channel maximum. "
                               "Ignored by masked and global.",
                }),
                "branches": (BRANCHES, {
                    "default": "both",
                    "tooltip": "Which self-attention layers to patch: both (DiT and VACE blocks, as in the paper), "
                               "dit only, or vace only. Unpatched layers use plain Wan attention.",
                }),
            },
            "optional": {
                "gates": (GATES, {"tooltip": "AGF gates trained with AnyCrowd for this model size, used by tsda with "
                                             "agf_mode gated. Leave unconnected on stock checkpoints."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, attention_mode=None, agf_mode=None, branches=None):
        # Naming these inputs replaces ComfyUI's own list check, so check them here in words.
        # A widget converted to an input arrives as None here: its value is checked at run time.
        for name, value, choices in (
            ("attention_mode", attention_mode, ATTENTION_MODES),
            ("agf_mode", agf_mode, AGF_CHOICES),
            ("branches", branches, BRANCHES),
        ):
            if value is not None and value not in choices:
                return f"{name} {value!r} is not available: choose one of {', '.join(choices)}."
        return True

    def patch(self, model, layout, attention_mode, agf_mode, branches, gates=None):
        return (patch_model(model, layout, mode=attention_mode, agf=agf_mode, gates=gates, branches=branches),)
