"""Tri-Stage Decoupled Attention (AnyCrowd §3.3, Eq. 1-4) with Adaptive Gated Fusion.

Stage 1 A_k = SA(X[ref_k ∪ vid_k]) per identity, stage 2 A_bg = SA(X[ref_bg ∪ vid_all]),
AGF over each video token's candidates, stage 3 Z = SA(Y[vid_all]); formulation and every
choice the paper leaves open are in docs/tsda.md. q/k/v are projected once for all tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..layout import TokenLayout
from .agf import GatingBlock, fuse_candidates
from .masked import Index, take
from .ops import SelfAttentionOps


@dataclass(frozen=True)
class TsdaPlan:
    """Index tensors for one layout on one device.

    segments: token sets attended within (stage 2 first, then stage 1 per identity, then
      the void tokens of each reference frame); their outputs are stacked as rows `[R]`.
    ref_rows `[video_start]`: stacked row that is each reference-region token's output.
    bg_rows: rows of A_bg for video tokens 0..V-1 (a slice).
    multi `[V_m]`: video tokens (local) with >= 2 candidates; cand_rows/valid/labels
      `[V_m, C_max]`: their candidates' stacked rows (clamped), validity, AGF soft labels.
    """

    segments: tuple[Index, ...]
    ref_rows: Tensor
    bg_rows: slice
    multi: Tensor
    cand_rows: Tensor
    valid: Tensor
    labels: Tensor | None


def tsda_plan(layout: TokenLayout) -> TsdaPlan:
    dev = layout.candidates.device
    n, vs, total = layout.num_identities, layout.video_start, layout.num_tokens
    nv = layout.num_video_tokens
    nbg = len(layout.bg_ref_tokens)
    segments: list[Index] = [slice(vs - nbg, total)]
    ref_rows = torch.empty(vs, dtype=torch.long, device=dev)
    ref_rows[vs - nbg: vs] = torch.arange(nbg, device=dev)
    row = nbg + nv
    pos = torch.full((n + 1, nv), -1, dtype=torch.long, device=dev)
    pos[n] = nbg + torch.arange(nv, device=dev)  # A_bg's video rows follow R_bg's rows
    for k in range(n):
        ref, vid = layout.ref_tokens[k], layout.vid_tokens[k]
        segments.append(torch.cat([ref, vid]))
        ref_rows[ref] = row + torch.arange(len(ref), device=dev)
        pos[k, vid - vs] = row + len(ref) + torch.arange(len(vid), device=dev)
        row += len(ref) + len(vid)
    for k in range(n):
        void = layout.void_tokens[k]
        if len(void):
            segments.append(void)
            ref_rows[void] = row + torch.arange(len(void), device=dev)
            row += len(void)
    count = layout.candidate_count
    multi = torch.nonzero(count >= 2).flatten()
    cands = layout.candidates[multi]
    valid = cands >= 0
    cand_rows = pos[cands.clamp(min=0), multi[:, None]].masked_fill(~valid, 0)
    labels = None if layout.soft_labels is None else layout.soft_labels[multi]
    return TsdaPlan(tuple(segments), ref_rows, slice(nbg, nbg + nv), multi, cand_rows, valid, labels)


def tsda_attention(
    x: Tensor, ops: SelfAttentionOps, plan: TsdaPlan, agf: str, gate: GatingBlock | None
) -> tuple[Tensor, Tensor | None]:
    """x `[B, L, C]` -> (output `[B, L, C]`, AGF log-weights `[B, V_m, C_max]` or None).

    With a host `after_attention` (ComfyUI's attn1_patch) the layer's attention result is
    assembled for the whole sequence before `o` — reference tokens: their stage-1/2 rows,
    video tokens: stage 3 — and handed over with the q, k of the layer's input."""
    b, total, c = x.shape
    q, k, v = ops.qkv(x)
    raw = torch.cat([ops.attend(take(q, s), take(k, s), take(v, s)) for s in plan.segments], 1)
    stacked = ops.out(raw)
    y = stacked[:, plan.bg_rows]
    logw = None
    if len(plan.multi):
        m, cmax = plan.cand_rows.shape
        cands = stacked.index_select(1, plan.cand_rows.flatten()).view(b, m, cmax, c)
        fused, logw = fuse_candidates(cands, plan.valid, agf, gate)
        y = y.index_copy(1, plan.multi, fused)
    ref_out = stacked.index_select(1, plan.ref_rows)
    vs = ref_out.shape[1]
    # stage 3 reprojects Y with the same layer; RoPE needs the full sequence for positions
    q3, k3, v3 = ops.qkv(torch.cat([ref_out, y], 1))
    z = ops.attend(q3[:, vs:], k3[:, vs:], v3[:, vs:])
    if ops.after_attention is None:
        return torch.cat([ref_out, ops.out(z)], 1), logw
    return ops.finish(torch.cat([raw.index_select(1, plan.ref_rows), z], 1), q, k), logw
