"""Dense reference implementation of the attention modes, ONLY for tests.

Builds `L x L` boolean masks straight from the layout's groups (not from the efficient
plans) and uses an explicit softmax, so the efficient gathered code can be checked against
an independent, obviously-correct statement of docs/tsda.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..layout import TokenLayout
from .agf import GatingBlock
from .ops import SelfAttentionOps


def _member(total: int, idx: Tensor) -> Tensor:
    m = torch.zeros(total, dtype=torch.bool, device=idx.device)
    m[idx] = True
    return m


def dense_attention(q: Tensor, k: Tensor, v: Tensor, allow: Tensor) -> Tensor:
    """Explicit softmax attention on `[B, L, H, D]` with bool `allow [L, L]` (query, key)."""
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    p = torch.softmax(s.masked_fill(~allow, float("-inf")), dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


def masked_allow(layout: TokenLayout) -> Tensor:
    """bool `[L, L]`: which key each query may see in the masked mode."""
    total, dev = layout.num_tokens, layout.candidates.device
    allow = torch.zeros(total, total, dtype=torch.bool, device=dev)
    video = torch.zeros(total, dtype=torch.bool, device=dev)
    video[layout.video_start:] = True
    bg = _member(total, layout.bg_ref_tokens)
    allow |= (video | bg)[:, None] & (video | bg)[None, :]
    for k in range(layout.num_identities):
        ref, vid = _member(total, layout.ref_tokens[k]), _member(total, layout.vid_tokens[k])
        void = _member(total, layout.void_tokens[k])
        allow |= (ref | vid)[:, None] & ref[None, :]  # ref_k and its video tokens see ref_k
        allow |= ref[:, None] & vid[None, :]
        allow |= void[:, None] & void[None, :]
    return allow


def _block(total: int, idx: Tensor) -> Tensor:
    m = _member(total, idx)
    return (m[:, None] & m[None, :]) | torch.eye(total, dtype=torch.bool, device=idx.device)


def dense_forward(
    x: Tensor, ops: SelfAttentionOps, layout: TokenLayout, mode: str,
    agf: str = "mean", gate: GatingBlock | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Reference output `[B, L, C]` and, for tsda with a gate and soft labels, the AGF loss."""
    q, k, v = ops.qkv(x)
    total, dev = layout.num_tokens, x.device
    if mode == "global":
        return ops.out(dense_attention(q, k, v, torch.ones(total, total, dtype=torch.bool, device=dev))), None
    if mode == "masked":
        return ops.out(dense_attention(q, k, v, masked_allow(layout))), None

    n, vs = layout.num_identities, layout.video_start
    video_idx = torch.arange(vs, total, device=dev)

    def stage(idx: Tensor) -> Tensor:  # rows outside idx see only themselves and are unused
        return ops.out(dense_attention(q, k, v, _block(total, idx)))

    a_bg = stage(torch.cat([layout.bg_ref_tokens, video_idx]))
    a_id = [stage(torch.cat([layout.ref_tokens[i], layout.vid_tokens[i]])) for i in range(n)]
    out = torch.zeros_like(a_bg)
    for i in range(n):
        out[:, layout.ref_tokens[i]] = a_id[i][:, layout.ref_tokens[i]]
        void = layout.void_tokens[i]
        if len(void):
            out[:, void] = stage(void)[:, void]
    out[:, layout.bg_ref_tokens] = a_bg[:, layout.bg_ref_tokens]

    # candidates as a dense [V, N+1] membership built from the video groups
    member = torch.stack(
        [_member(total, layout.vid_tokens[i])[vs:] for i in range(n)]
        + [torch.ones(total - vs, dtype=torch.bool, device=dev)], 1)
    cands = torch.stack([a[:, vs:] for a in a_id] + [a_bg[:, vs:]], 2)  # [B, V, N+1, C]
    if agf == "max":
        y = cands.masked_fill(~member[None, :, :, None], float("-inf")).amax(2)
        logw = None
    else:
        scores = gate(cands) if (agf == "gated" and gate is not None) else torch.zeros(cands.shape[:3], device=dev)
        logw = torch.log_softmax(scores.masked_fill(~member, float("-inf")), -1)
        w = torch.softmax(scores.masked_fill(~member, float("-inf")), -1)
        y = (w[..., None] * cands).sum(2)
    out[:, vs:] = y
    q3, k3, v3 = ops.qkv(out)
    z = ops.out(dense_attention(q3, k3, v3, _block(total, video_idx)))
    out = torch.cat([out[:, :vs], z[:, vs:]], 1)

    loss = None
    if logw is not None and layout.soft_labels is not None:
        labels = torch.zeros(total - vs, n + 1, device=dev)
        cand = layout.candidates
        labels.scatter_add_(1, cand.clamp(min=0), layout.soft_labels * (cand >= 0))
        multi = member.sum(1) >= 2
        if multi.any():
            ce = -(labels[None] * logw.masked_fill(~member, 0.0)).sum(-1)  # [B, V]
            loss = ce[:, multi].mean()
    return out, loss
