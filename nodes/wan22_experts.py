"""Wan 2.2 VACE-Fun A14B's two experts in AnyCrowd sampling: the step where sampling passes
from the high-noise expert to the low-noise one, and the checks on a (high, low) MODEL pair.

Wan 2.2 denoises with the high-noise expert while t >= boundary * 1000 and with the low-noise
expert after: boundary 0.875 for T2V and 0.900 for I2V (Wan-Video/Wan2.2,
wan/configs/wan_t2v_A14B.py and wan_i2v_A14B.py). VACE-Fun A14B is built on T2V-A14B and uses
0.875 (aigc-apps/VideoX-Fun, config/wan2.2/wan_civitai_t2v.yaml; its Wan2_2VaceFunPipeline
picks the expert with `t >= boundary * num_train_timesteps`). ComfyUI's Wan models sample with
t = sigma * 1000 (ModelSamplingDiscreteFlow, multiplier 1000), so the test is sigma >= boundary
on the shifted schedule. No comfy import here: the pair is read through its attributes.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from anycrowd_core.errors import AnyCrowdError

from .comfy_patch import adapter_record

WAN22_T2V_BOUNDARY = 0.875  # VACE-Fun A14B (built on T2V-A14B)
WAN22_I2V_BOUNDARY = 0.900


def expert_switch_step(sigmas: Tensor, boundary: float) -> int:
    """How many of the schedule's steps the high-noise expert runs: the steps i (0 .. n-1,
    step i goes from sigmas[i] to sigmas[i+1]) with sigmas[i] >= boundary. The low-noise
    expert runs steps switch .. n-1 of the same schedule."""
    steps = len(sigmas) - 1
    return sum(1 for i in range(steps) if float(sigmas[i]) >= boundary)


def _shapes(model: Any) -> tuple[int, int, int]:
    dm = model.model.diffusion_model
    return int(dm.dim), len(dm.blocks), len(dm.vace_blocks)


def check_expert_pair(high: Any, low: Any) -> None:
    """AnyCrowdError, in words, unless `high` and `low` can be the two experts of one run: the
    same shapes, and no adapter on either that was trained for the other expert or for Wan 2.1
    VACE. Models without a recorded adapter (stock experts, old adapters) pass."""
    if _shapes(high) != _shapes(low):
        (hd, hb, hv), (ld, lb, lv) = _shapes(high), _shapes(low)
        raise AnyCrowdError(
            f"model (dim {hd}, {hb} blocks, {hv} VACE blocks) and low_noise_model (dim {ld}, {lb} blocks, {lv} VACE "
            "blocks) are not two experts of one model: load the high- and low-noise files of Wan 2.2 VACE-Fun A14B."
        )
    for role, model, other in (("model", high, "low_noise"), ("low_noise_model", low, "high_noise")):
        record = adapter_record(model)
        name = record.get("lora") or record.get("gates") or "its adapter"
        if record.get("expert") == other:
            raise AnyCrowdError(
                f"{role} carries {name!r}, an adapter for the {other.replace('_', '-')} expert: the two experts "
                "are swapped. Connect the high-noise expert to model and the low-noise expert to low_noise_model."
            )
        if record.get("family") == "wan2.1-vace":
            raise AnyCrowdError(
                f"{role} carries {name!r}, trained on Wan 2.1 VACE, but a low_noise_model makes this a Wan 2.2 "
                "VACE-Fun two-expert run: load adapters trained on each expert (model.family=wan2.2-vace-fun), or "
                "leave low_noise_model unconnected for a Wan 2.1 VACE model."
            )
