"""AnyCrowd-Mini: the trained miniature shipped with the package (weights in `weights/`).

Two models in Wan 2.1 VACE's own architecture at a tiny size (see docs/mini.md):
- the **base**, trained from scratch with global attention (the stand-in for a stock Wan 2.1
  VACE checkpoint; used for `global` and the training-free `masked` mode);
- the **AnyCrowd** model: the base plus the AnyCrowd LoRA (merged) and AGF gates, trained
  with TSDA and stochastic reassignment (used for `tsda`).
It proves the mechanism (binding, bleeding, count generalisation), not photorealism.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..attention import GateBank
from ..errors import AnyCrowdError
from ..wan import WanVaceConfig, WanVaceModel, load_wan_vace
from ..wan.lora_merge import merge_lora
from .codec import MiniCodec
from .text import mini_text_embedding

MINI_CONFIG = WanVaceConfig(dim=128, ffn_dim=512, num_heads=1, num_layers=6, vace_layers=2, text_dim=4096,
                            freq_dim=256)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASE_FILE = "anycrowd_mini_base.safetensors"
LORA_FILE = "anycrowd_mini_lora.safetensors"
GATES_FILE = "anycrowd_mini_gates.safetensors"
# Sampling settings the miniature was trained for (flow matching, shift 3, no text).
MINI_SAMPLING = {"steps": 10, "shift": 3.0, "cfg": 1.0, "sampler": "euler"}


@dataclass
class MiniModel:
    """base: the globally trained base (eval mode); anycrowd: base + merged AnyCrowd LoRA;
    gates: its AGF GateBank; codec: MiniCodec; text: the `[1, 1, 4096]` zero prompt;
    shifted_rope: the LoRA was trained with shifted RoPE (its metadata), so the AnyCrowd
    model samples with it too."""

    base: WanVaceModel
    anycrowd: WanVaceModel
    gates: GateBank
    codec: MiniCodec
    text: Tensor
    shifted_rope: bool = False

    def model_for(self, mode: str) -> tuple[WanVaceModel, GateBank | None]:
        """The model (and gates) a mode runs on: tsda -> AnyCrowd; global / masked -> base."""
        return (self.anycrowd, self.gates) if mode == "tsda" else (self.base, None)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise AnyCrowdError(
            f"AnyCrowd-Mini weights {str(path)!r} are missing: they ship with the package (anycrowd_core/mini/"
            "weights/). Restore them from the repository (git checkout -- anycrowd_core/mini/weights) or retrain "
            "them with the commands in docs/mini.md; `--model random` runs without them."
        )
    return path


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(_need(path)), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except AnyCrowdError:
        raise
    except Exception as e:
        raise AnyCrowdError(f"{path} is not a readable safetensors file ({e}); restore it from the repository.") from e


@lru_cache(maxsize=2)
def load_mini(weights_dir: str | None = None) -> MiniModel:
    """Load the shipped miniature (cached: the same object on every call)."""
    folder = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    base = load_wan_vace(_need(folder / BASE_FILE), dtype=torch.float32, num_heads=MINI_CONFIG.num_heads)
    lora, lora_meta = read_safetensors(folder / LORA_FILE)
    anycrowd = merge_lora(copy.deepcopy(base), lora)
    gate_tensors, meta = read_safetensors(folder / GATES_FILE)
    gates = GateBank(MINI_CONFIG.dim, MINI_CONFIG.num_layers, MINI_CONFIG.vace_layers, int(meta.get("gate_hidden", 64)))
    gates.load_state_dict(gate_tensors)
    gates.eval()
    return MiniModel(base=base, anycrowd=anycrowd.eval(), gates=gates, codec=MiniCodec(),
                     text=mini_text_embedding(MINI_CONFIG.text_dim),
                     shifted_rope=lora_meta.get("shifted_rope", "false") == "true")
