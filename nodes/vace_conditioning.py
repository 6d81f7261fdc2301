"""VACE streams as ComfyUI CONDITIONING values (not a node): what WanVaceToVideo appends, from a
model-space context. The one place AnyCrowd IILR Encode, Face Control and the Long Video Sampler
turn a VACE context into conditioning.
"""

from __future__ import annotations

from torch import Tensor

from anycrowd_core.iilr import raw_vace_streams

from .comfy_runtime import conditioning_set_values


def comfy_vace_values(context: Tensor, strength: float) -> dict:
    """A model-space VACE context `[96, L, h, w]` as the CONDITIONING values WanVaceToVideo
    appends (raw `vace_frames` `[1, 32, L, h, w]`, `vace_mask` `[1, 64, L, h, w]`, strength);
    WAN21_Vace.extra_conds maps them back (process_latent_in per 16 channels)."""
    frames, mask = raw_vace_streams(context)
    return {"vace_frames": [frames], "vace_mask": [mask], "vace_strength": [float(strength)]}


def append_vace_stream(positive: list, negative: list, context: Tensor, strength: float) -> tuple[list, list]:
    """(positive, negative) with one more VACE stream appended to both, as WanVaceToVideo
    appends its own: the model sums the hints of every stream, each with its strength."""
    values = comfy_vace_values(context, strength)
    return (conditioning_set_values(positive, values, append=True),
            conditioning_set_values(negative, values, append=True))
