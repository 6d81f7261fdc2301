"""Training-free `masked` attention: one self-attention pass in which each token sees only
the tokens the AnyCrowd binding allows (docs/tsda.md), computed as a few gathered attention
calls (`ops.attend`) — never an `L x L` mask — so it runs on a stock Wan 2.1 VACE checkpoint at full speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..layout import TokenLayout
from .ops import SelfAttentionOps

Index = Tensor | slice


def take(t: Tensor, idx: Index) -> Tensor:
    """Tokens `idx` (index tensor or slice) of `[B, L, ...]` along the sequence axis."""
    return t[:, idx] if isinstance(idx, slice) else t.index_select(1, idx)


@dataclass(frozen=True)
class MaskedPlan:
    """segments: (query tokens, key/value tokens) pairs whose queries partition the sequence;
    inverse `[L]`: row of each token in the concatenation of the segments' queries."""

    segments: tuple[tuple[Index, Index], ...]
    inverse: Tensor


def masked_plan(layout: TokenLayout) -> MaskedPlan:
    """Query/key groups of the masked mode (indices on the layout's device)."""
    dev = layout.candidates.device
    n, hw, vs, total = layout.num_identities, layout.tokens_per_frame, layout.video_start, layout.num_tokens
    bg_start = n * hw  # R_bg (if any) directly precedes the video: one contiguous key range
    shared = slice(bg_start, total)
    shared_idx = torch.arange(bg_start, total, device=dev)
    segments: list[tuple[Index, Index]] = []
    for k in range(n):
        segments.append((layout.ref_tokens[k], torch.cat([layout.ref_tokens[k], layout.vid_tokens[k]])))
        if len(layout.void_tokens[k]):
            segments.append((layout.void_tokens[k], layout.void_tokens[k]))
    if layout.background:
        segments.append((slice(bg_start, vs), shared))
    for ids, tokens in layout.video_groups:
        keys = shared if not ids else torch.cat([*(layout.ref_tokens[k] for k in ids), shared_idx])
        segments.append((tokens, keys))
    order = torch.cat([
        torch.arange(q.start, q.stop, device=dev) if isinstance(q, slice) else q for q, _ in segments
    ])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=dev)
    return MaskedPlan(tuple(segments), inverse)


def masked_attention(x: Tensor, ops: SelfAttentionOps, plan: MaskedPlan) -> Tensor:
    """One SA pass restricted by the binding: x `[B, L, C]` -> `[B, L, C]`."""
    q, k, v = ops.qkv(x)
    outs = [ops.attend(take(q, qi), take(k, kv), take(v, kv)) for qi, kv in plan.segments]
    return ops.finish(torch.cat(outs, 1).index_select(1, plan.inverse), q, k)
