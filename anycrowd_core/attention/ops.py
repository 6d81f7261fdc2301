"""The one place where an attention mode plugs into a self-attention layer.

A self-attention layer (core `WanSelfAttention`, or ComfyUI's module wrapped by our
patch) describes itself as `SelfAttentionOps`: token-wise projections that the attention
modes call on whole token sequences or on gathered subsets. The layer keeps its own
parameters (so checkpoint keys and LoRA targets stay where they are); only the way the
projected tokens are mixed changes — the property diffusers' attention processors have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class SelfAttentionOps:
    """Projections of one self-attention layer, bound to the current sequence's RoPE.

    qkv:  x `[B, L, C]` (the full token sequence, positions 0..L-1) ->
          (q, k, v), each `[B, L, heads, head_dim]`; q and k RMS-normalised and rotated
          by the layer's RoPE at each token's own (t, h, w) position.
    out:  attention output `[B, L', heads, head_dim]` -> `[B, L', C]` (the `o` projection).
    branch: "dit" or "vace";  index: block index inside that branch.
    """

    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    out: Callable[[Tensor], Tensor]
    branch: str
    index: int


class AttentionHook(Protocol):
    """Replaces plain full self-attention for one sampling run (or one training step).

    Called by every self-attention layer of both branches with the layer's normalised,
    modulated input `x [B, L, C]`; returns the layer output `[B, L, C]` (after `o`).
    """

    def __call__(self, x: Tensor, ops: SelfAttentionOps) -> Tensor: ...


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Full attention on `[B, L, H, D]` tensors, returning `[B, L, H, D]`.

    Uses torch's fused scaled_dot_product_attention (flash / memory-efficient kernels on
    CPU and GPU), so no `L x L` score tensor is materialised by our own code.
    """
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    )
    return o.transpose(1, 2)


def global_attention(x: Tensor, ops: SelfAttentionOps) -> Tensor:
    """Plain full self-attention over every token: Wan's own computation."""
    q, k, v = ops.qkv(x)
    return ops.out(sdpa(q, k, v))
