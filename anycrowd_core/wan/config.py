"""Size of a Wan 2.1 VACE DiT: the two released presets and inference from a state dict.

Everything here can be read off a checkpoint's key names and tensor shapes except the
head count, which Wan fixes through a head dimension of 128 (as ComfyUI assumes too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from ..errors import AnyCrowdError

WAN_HEAD_DIM = 128  # every released Wan 2.1 model uses 128-wide heads


@dataclass(frozen=True)
class WanVaceConfig:
    """Hyper-parameters of a Wan 2.1 VACE DiT (names follow the official config).

    dim: hidden width; ffn_dim: feed-forward width; num_heads: self/cross-attention heads
    (head_dim = dim // num_heads); num_layers: DiT blocks; vace_layers: VACE blocks, the
    n-th feeding DiT block n * (num_layers // vace_layers); vace_in_dim: VACE context
    channels (16 inactive + 16 reactive latent + 64 mask = 96); in_dim / out_dim: latent
    channels; text_dim: T5 feature width; freq_dim: sinusoidal timestep width;
    patch_size: (t, h, w) latent patch; eps: LayerNorm / RMSNorm epsilon.
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    vace_layers: int
    vace_in_dim: int = 96
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.num_heads <= 0 or self.dim % self.num_heads:
            raise AnyCrowdError(
                f"Wan config: dim {self.dim} is not divisible by num_heads {self.num_heads}; "
                "pick a head count that divides the hidden width."
            )
        if self.head_dim % 2 or self.head_dim < 6:
            raise AnyCrowdError(
                f"Wan config: head_dim {self.head_dim} must be even and at least 6 for the "
                "3-axis RoPE; use fewer heads."
            )
        if self.vace_layers <= 0 or self.vace_layers > self.num_layers:
            raise AnyCrowdError(
                f"Wan config: vace_layers {self.vace_layers} must be between 1 and "
                f"num_layers {self.num_layers}."
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def vace_block_for_dit_block(self) -> dict[int, int]:
        """DiT block index i -> VACE block n, where i = n * (num_layers // vace_layers)."""
        step = self.num_layers // self.vace_layers
        return {n * step: n for n in range(self.vace_layers)}

    @classmethod
    def preset(cls, name: str) -> WanVaceConfig:
        """'wan2.1-vace-1.3b' or 'wan2.1-vace-14b' (also '1.3b' / '14b')."""
        key = name.lower().removeprefix("wan2.1-vace-")
        if key not in PRESETS:
            raise AnyCrowdError(
                f"Unknown Wan VACE preset {name!r}; use one of "
                + ", ".join(f"'wan2.1-vace-{k}'" for k in PRESETS)
                + "."
            )
        return PRESETS[key]

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None
    ) -> WanVaceConfig:
        """Infer the config from unprefixed checkpoint keys and shapes.

        `num_heads` defaults to dim // 128 (Wan's head width); pass it for other sizes.
        Raises AnyCrowdError if a key needed for the inference is absent.
        """
        try:
            patch = state_dict["patch_embedding.weight"].shape  # [dim, in_dim, pt, ph, pw]
            dim, in_dim = int(patch[0]), int(patch[1])
            patch_size = tuple(int(p) for p in patch[2:])
            head_out = int(state_dict["head.head.weight"].shape[0])
            ffn_dim = int(state_dict["blocks.0.ffn.0.weight"].shape[0])
            text_dim = int(state_dict["text_embedding.0.weight"].shape[1])
            freq_dim = int(state_dict["time_embedding.0.weight"].shape[1])
            vace_in_dim = int(state_dict["vace_patch_embedding.weight"].shape[1])
        except KeyError as e:
            raise AnyCrowdError(
                f"Cannot infer the Wan VACE size: key {e.args[0]!r} is missing from the "
                "checkpoint. Load an unmodified Wan 2.1 VACE .safetensors file."
            ) from None
        if num_heads is None:
            num_heads = max(dim // WAN_HEAD_DIM, 1)
        keys = list(state_dict.keys())
        return cls(
            dim=dim,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            num_layers=count_blocks(keys, "blocks"),
            vace_layers=count_blocks(keys, "vace_blocks"),
            vace_in_dim=vace_in_dim,
            in_dim=in_dim,
            out_dim=head_out // (patch_size[0] * patch_size[1] * patch_size[2]),
            text_dim=text_dim,
            freq_dim=freq_dim,
            patch_size=patch_size,  # type: ignore[arg-type]
            qk_norm="blocks.0.self_attn.norm_q.weight" in state_dict,
            cross_attn_norm="blocks.0.norm3.weight" in state_dict,
        )

    def with_(self, **changes) -> WanVaceConfig:
        return replace(self, **changes)


def count_blocks(keys, prefix: str) -> int:
    """Number of `prefix.<i>.` blocks: 1 + the largest index present (0 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(indices) + 1 if indices else 0


PRESETS: dict[str, WanVaceConfig] = {
    "1.3b": WanVaceConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, vace_layers=15),
    "14b": WanVaceConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, vace_layers=8),
}
