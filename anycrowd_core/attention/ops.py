"""The one place where an attention mode plugs into a self-attention layer.

A self-attention layer (core `WanSelfAttention`, or ComfyUI's module wrapped by our
patch) describes itself as `SelfAttentionOps`: token-wise projections that the attention
modes call on whole token sequences or on gathered subsets. The layer keeps its own
parameters (so checkpoint keys and LoRA targets stay where they are); only the way the
projected tokens are mixed changes — the property diffusers' attention processors have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Full attention on `[B, L, H, D]` tensors, returning `[B, L, H, D]`.

    Uses torch's fused scaled_dot_product_attention (flash / memory-efficient kernels on
    CPU and GPU), so no `L x L` score tensor is materialised by our own code.
    """
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    )
    return o.transpose(1, 2)


Attend = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SelfAttentionOps:
    """Projections of one self-attention layer, bound to the current sequence's RoPE.

    qkv:  x `[B, L, C]` (the full token sequence, positions 0..L-1) ->
          (q, k, v), each `[B, L, heads, head_dim]`; q and k RMS-normalised and rotated
          by the layer's RoPE at each token's own (t, h, w) position.
    out:  attention output `[B, L', heads, head_dim]` -> `[B, L', C]` (the `o` projection).
    branch: "dit" or "vace";  index: block index inside that branch.
    attend: full attention of one token group, (q, k, v) `[B, L', heads, head_dim]` ->
          `[B, L', heads, head_dim]`; every mode runs its groups through it. Default: torch's
          SDPA; a host passes its own attention function (ComfyUI: its attention backend).
    after_attention: a host's hook on the layer's attention result for the whole sequence,
          before `o`: (o `[B, L, heads, head_dim]`, q, k of the layer's input) -> o, same shape
          (ComfyUI: its `attn1_patch` list). None: nothing.
    """

    qkv: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]
    out: Callable[[Tensor], Tensor]
    branch: str
    index: int
    attend: Attend = sdpa
    after_attention: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None

    def finish(self, o: Tensor, q: Tensor, k: Tensor) -> Tensor:
        """Layer output `[B, L, C]` from the attention result `o` of all L tokens and the
        q, k it came from: `after_attention` (if any), then `o`."""
        if self.after_attention is not None:
            o = self.after_attention(o, q, k)
        return self.out(o)


class AttentionHook(Protocol):
    """Replaces plain full self-attention for one sampling run (or one training step).

    Called by every self-attention layer of both branches with the layer's normalised,
    modulated input `x [B, L, C]`; returns the layer output `[B, L, C]` (after `o`).
    """

    def __call__(self, x: Tensor, ops: SelfAttentionOps) -> Tensor: ...


def global_attention(x: Tensor, ops: SelfAttentionOps) -> Tensor:
    """Plain full self-attention over every token: Wan's own computation."""
    q, k, v = ops.qkv(x)
    return ops.finish(ops.attend(q, k, v), q, k)
