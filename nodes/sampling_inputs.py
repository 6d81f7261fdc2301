"""Sampler widgets shared by AnyCrowd Sampler and AnyCrowd Long Video Sampler (not a node):
their declarations, in the order workflows store them, and the checks of their values.
"""

from __future__ import annotations

from anycrowd_core.attention import AGF_MODES, MODES

from .comfy_runtime import WAN21_DEFAULT_SHIFT, sampler_names
from .input_checks import SEED_MAX, finite_number, seed_value, whole_number
from .node_types import GATES

# The core's choice lists as ComfyUI combo lists (AnyCrowd TSDA Patch shows them too); masked
# first in the menu: the mode for stock checkpoints.
ATTENTION_MODES = sorted(MODES, key=lambda mode: mode != "masked")
AGF_CHOICES = list(AGF_MODES)

GATES_INPUT = (GATES, {"tooltip": "AGF gates trained with AnyCrowd (AnyCrowd Load Adapter), used by tsda with agf_mode gated. Leave unconnected on stock checkpoints."})


def sampling_inputs(per_segment: bool = False) -> dict:
    """The attention and sampler widgets every AnyCrowd sampler node shows, in this order
    (workflows store widget values by position). `per_segment` words the tooltips for the
    long-video sampler, which samples each segment on its own."""
    samplers, schedulers = sampler_names()
    each = " per segment" if per_segment else ""
    seed_note = "; segment s uses seed + s" if per_segment else " (same noise as KSampler for the same seed)"
    return {
        "attention_mode": (ATTENTION_MODES, {"default": "masked", "tooltip": "masked: training-free binding for stock checkpoints (recommended). tsda: the paper's tri-stage attention (needs AnyCrowd-trained weights). global: plain Wan attention, for comparison."}),
        "agf_mode": (AGF_CHOICES, {"default": "gated", "tooltip": "Fusion of overlapping characters in tsda: gated (trained gates; equals mean without gates), mean or max. Ignored by masked and global."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": f"Seed of the initial noise{seed_note}."}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": f"Sampling steps{each}."}),
        "cfg": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Classifier-free guidance scale (Wan examples use about 6)."}),
        "sampler_name": (samplers, {"default": "uni_pc" if "uni_pc" in samplers else samplers[0], "tooltip": "ComfyUI sampler (as in KSampler)."}),
        "scheduler": (schedulers, {"default": "simple" if "simple" in schedulers else schedulers[0], "tooltip": "ComfyUI scheduler (as in KSampler); 'simple' is the usual choice for Wan."}),
        # default 0 = the model's own shift: 8.0 for Wan 2.1 unless a ModelSamplingSD3 node upstream set another
        "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.01, "tooltip": f"Flow-matching sigma shift, set like the ModelSamplingSD3 node. 0 (default) keeps the model's own: {WAN21_DEFAULT_SHIFT} for Wan 2.1, or what a ModelSamplingSD3 node before this one set."}),
    }


def sampler_options(seed, steps, cfg, shift) -> dict:
    """The widgets of `sampling_inputs` checked (finite, in range) as {seed, steps, cfg, shift}:
    ComfyUI range-checks typed-in widget values only, not linked ones or Python callers."""
    return {
        "seed": seed_value(seed),
        "steps": whole_number(steps, "steps", low=1, fix="Use e.g. 20 (the AnyCrowd-Mini demo uses 10)."),
        "cfg": finite_number(cfg, "cfg", low=0.0, fix="Use about 6 for Wan 2.1 (1 for AnyCrowd-Mini)."),
        "shift": finite_number(shift, "shift", low=0.0,
                               fix=f"Use 0 to keep the model's own shift ({WAN21_DEFAULT_SHIFT:g} for Wan 2.1)."),
    }
