"""Checkpoint-compatible Wan 2.1 VACE DiT (numerically equal to ComfyUI's VaceWanModel).

`WanVaceModel` is the network, `WanVaceConfig` its size (presets and inference from a
state dict), `load_wan_vace` / `save_wan_vace` read and write `.safetensors` weights.
"""

from .config import PRESETS, WanVaceConfig
from .loading import inspect_wan_vace, load_wan_vace, save_wan_vace
from .model import WanVaceModel, sinusoidal_embedding
from .random_init import random_state_dict, random_wan_vace
from .rope import apply_rope, grid_positions, rope_axes, rope_cos_sin, shifted_reference_positions

__all__ = [
    "PRESETS",
    "WanVaceConfig",
    "WanVaceModel",
    "apply_rope",
    "grid_positions",
    "inspect_wan_vace",
    "load_wan_vace",
    "random_state_dict",
    "random_wan_vace",
    "rope_axes",
    "rope_cos_sin",
    "shifted_reference_positions",
    "save_wan_vace",
    "sinusoidal_embedding",
]
