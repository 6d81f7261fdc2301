"""AnyCrowd Sampler node ("TSDA-patched Wan sampler"): patch the Wan 2.1 VACE MODEL for one
layout, sample with ComfyUI's own KSampler machinery and return the latent without the
reference frames — AnyCrowd TSDA Patch + KSampler + TrimVideoLatent in one node. With a
low_noise_model it runs Wan 2.2 VACE-Fun A14B's two experts, both patched with the same layout,
on one schedule split at switch_boundary (nodes/wan22_experts.py).
"""

from __future__ import annotations

import logging

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout

from .comfy_patch import check_latent_matches_layout, check_wan_vace, patch_model
from .comfy_runtime import apply_shift, sample, sample_two_experts
from .guidance import GUIDANCE_INPUTS, cumulative_guidance, guidance_options
from .input_checks import conditioning, finite_number, latent_samples, whole_number
from .node_types import GATES, LAYOUT
from .sampling_inputs import AGF_CHOICES, ATTENTION_MODES, GATES_INPUT, sampler_options, sampling_inputs
from .wan22_experts import WAN22_T2V_BOUNDARY, check_expert_pair


# Wan 2.2 VACE-Fun A14B: the low-noise expert, its gates and where it takes over (widget after ref_cfg)
EXPERT_INPUTS = {
    "low_noise_model": ("MODEL", {"tooltip": "Wan 2.2 VACE-Fun A14B: the low-noise expert (model is then the high-noise one). Both are patched with the same layout and sampled on one schedule, split at switch_boundary. Leave unconnected for Wan 2.1 VACE."}),
    "low_noise_gates": (GATES, {"tooltip": "AGF gates trained for the low-noise expert (its own AnyCrowd Load Adapter); gates is then the high-noise expert's."}),
    "switch_boundary": ("FLOAT", {"default": WAN22_T2V_BOUNDARY, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip": "With low_noise_model: the high-noise expert runs the steps whose sigma (timestep / 1000) is at least this, the low-noise expert the rest. 0.875 is Wan 2.2's value for T2V-based VACE-Fun (0.9 for I2V). Ignored without low_noise_model."}),
}


class AnyCrowdSampler:
    DESCRIPTION = (
        "TSDA-patched Wan sampler: samples the Wan 2.1 VACE model with AnyCrowd attention for the layout of "
        "AnyCrowd IILR Encode and returns the video latent with the reference frames removed (ready for VAE "
        "Decode). Uses ComfyUI's own samplers, previews, progress bar and Cancel. The input MODEL is not changed."
    )
    CATEGORY = "AnyCrowd/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The sampled video latent without the reference frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1 VACE model from Load Diffusion Model (LoRAs and other patches may be applied first)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive conditioning from AnyCrowd IILR Encode."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning from AnyCrowd IILR Encode."}),
                "latent": ("LATENT", {"tooltip": "The latent from AnyCrowd IILR Encode (reference frames in front)."}),
                "layout": (LAYOUT, {"tooltip": "Token layout from the same AnyCrowd IILR Encode node."}),
                **sampling_inputs(),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of the schedule to run (1.0 for generation from noise)."}),
            },
            "optional": {
                "gates": GATES_INPUT,
                **GUIDANCE_INPUTS,
                **EXPERT_INPUTS,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, attention_mode=None, agf_mode=None, steps=None, switch_boundary=None):
        for name, value, choices in (("attention_mode", attention_mode, ATTENTION_MODES), ("agf_mode", agf_mode, AGF_CHOICES)):
            if value is not None and value not in choices:
                return f"{name} {value!r} is not available: choose one of {', '.join(choices)}."
        if steps is not None:
            try:
                whole_number(steps, "steps", low=1)
            except AnyCrowdError:
                return f"steps must be a whole number, at least 1 (got {steps})."
        if switch_boundary is not None:
            try:
                finite_number(switch_boundary, "switch_boundary", low=0.0, high=1.0)
            except AnyCrowdError as e:
                return str(e)
        return True

    def sample(
        self, model, positive, negative, latent, layout, attention_mode, agf_mode, seed, steps, cfg,
        sampler_name, scheduler, shift, denoise, gates=None, guidance="cfg", ref_cfg=1.5,
        low_noise_model=None, low_noise_gates=None, switch_boundary=WAN22_T2V_BOUNDARY,
    ):
        # Every check that can fail runs before sampling starts (a wrong input should not
        # cost a sampling run).
        check_wan_vace(model)
        if not isinstance(layout, TokenLayout):
            raise AnyCrowdError("layout must come from AnyCrowd IILR Encode (an ANYCROWD_LAYOUT).")
        check_latent_matches_layout(latent_samples(latent), layout)
        positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        options = sampler_options(seed, steps, cfg, shift)
        denoise = finite_number(denoise, "denoise", low=0.0, high=1.0, fix="Use 1.0 to generate from noise.")
        guidance, ref_cfg = guidance_options(guidance, ref_cfg)
        experts = [(model, gates)]
        if low_noise_model is not None:
            check_wan_vace(low_noise_model)
            check_expert_pair(model, low_noise_model)
            switch_boundary = finite_number(switch_boundary, "switch_boundary", low=0.0, high=1.0,
                                            fix=f"Use {WAN22_T2V_BOUNDARY} (Wan 2.2's boundary for VACE-Fun A14B).")
            experts.append((low_noise_model, low_noise_gates))
        elif low_noise_gates is not None:
            raise AnyCrowdError("low_noise_gates is connected but low_noise_model is not: connect the low-noise expert, "
                                "or connect these gates to gates for a single model.")
        patched, guiders = [], []
        for expert, expert_gates in experts:  # the same layout, mode and shift for both experts
            one = patch_model(expert, layout, mode=attention_mode, agf=agf_mode, gates=expert_gates)
            if options["shift"] > 0:
                one = apply_shift(one, options["shift"])
            patched.append(one)
            guiders.append(cumulative_guidance(one, positive, negative, layout.num_ref_frames, options["cfg"], ref_cfg)
                           if guidance == "cumulative" else None)
        run = dict(seed=options["seed"], steps=options["steps"], cfg=options["cfg"], sampler_name=sampler_name,
                   scheduler=scheduler, positive=positive, negative=negative, denoise=denoise,
                   preview_from=layout.num_ref_frames)
        if len(patched) == 1:
            samples = sample(patched[0], latent, guider=guiders[0], **run)
        else:
            samples, switch = sample_two_experts(*patched, latent, switch_boundary=switch_boundary,
                                                 guiders=tuple(guiders), **run)
            logging.info("AnyCrowd Sampler: high-noise expert for steps 0-%d, low-noise expert for steps %d-%d "
                         "(switch_boundary %g)", switch, switch, options["steps"], switch_boundary)
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        out["samples"] = samples[:, :, layout.num_ref_frames :]
        return (out,)
