"""Random AnyCrowd-Mini weights in the shipped files' formats, so loader tests do not depend on
the trained files: the base as `save_wan_vace` writes it (official keys, no prefix), the LoRA
and gates as `training.export.save_lora` / `save_gates` write them.

Import in tests as `from mini_weights import write_random_mini_weights`.
"""

from __future__ import annotations

from pathlib import Path

from anycrowd_core.mini import MINI_CONFIG
from anycrowd_core.mini.model import BASE_FILE, GATES_FILE, LORA_FILE
from anycrowd_core.wan import random_wan_vace, save_wan_vace
from random_adapters import random_gates, random_lora
from training.export import save_gates, save_lora

EXTRA = {"step": "0", "attention": "tsda", "agf": "gated"}


def write_random_mini_weights(folder, seed: int = 0, rank: int = 4, alpha: float = 4.0) -> Path:
    """Write base + LoRA + gates of MINI_CONFIG with seeded random values into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = random_wan_vace(MINI_CONFIG, seed=seed)
    save_wan_vace(model, folder / BASE_FILE)
    lora = random_lora(model, rank=rank, alpha=alpha, seed=seed + 1)
    save_lora(folder / LORA_FILE, lora, MINI_CONFIG, rank=rank, alpha=alpha, config_hash="random", extra=EXTRA)
    gates = random_gates(MINI_CONFIG.dim, MINI_CONFIG.num_layers, MINI_CONFIG.vace_layers, hidden=16, seed=seed + 2)
    save_gates(folder / GATES_FILE, gates, MINI_CONFIG, config_hash="random", extra=EXTRA)
    return folder
