"""Adaptive Gated Fusion (AnyCrowd §3.3 Eq. 4, appendix D) and its loss (§3.4 Eq. 5).

A video token covered by several categories (identities' boxes and the background) has one
stage-1/2 output per category; AGF fuses them with softmax weights from a Gating Block.
`GateBank` holds one Gating Block per self-attention layer of each branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AnyCrowdError

AGF_MODES = ("gated", "mean", "max")


class GatingBlock(nn.Module):
    """LayerNorm -> Linear(C, hidden) -> SiLU -> Linear(hidden, 1): one score per candidate.

    The last Linear has no bias (a score offset shared by all candidates cancels in the
    softmax, so it could never learn) and starts at zero, so an untrained gate scores every candidate equally and
    gated fusion equals mean fusion: the gated mode is usable on a stock checkpoint.
    Parameters are cast to the input's dtype/device in forward (ComfyUI does not move them).
    """

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x `[..., C]` -> scores `[...]`."""

        def cast(p: Tensor) -> Tensor:
            return p.to(device=x.device, dtype=x.dtype)

        y = F.layer_norm(x, (x.shape[-1],), cast(self.norm.weight), cast(self.norm.bias), self.norm.eps)
        y = F.silu(F.linear(y, cast(self.fc1.weight), cast(self.fc1.bias)))
        return F.linear(y, cast(self.fc2.weight)).squeeze(-1)


class GateBank(nn.Module):
    """One Gating Block per self-attention layer: keys `dit.<i>.fc1.weight`, `vace.<j>.norm.bias`."""

    def __init__(self, dim: int, num_dit_layers: int, num_vace_layers: int, hidden: int = 128):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.dit = nn.ModuleList(GatingBlock(dim, hidden) for _ in range(num_dit_layers))
        self.vace = nn.ModuleList(GatingBlock(dim, hidden) for _ in range(num_vace_layers))

    def gate(self, branch: str, index: int) -> GatingBlock:
        blocks = {"dit": self.dit, "vace": self.vace}.get(branch)
        if blocks is None or not 0 <= index < len(blocks):
            size = len(blocks) if blocks is not None else 0
            raise AnyCrowdError(
                f"The gate bank has {size} '{branch}' gates but layer {branch}.{index} asked for one: "
                f"load gates trained for this model (DiT {len(self.dit)}, VACE {len(self.vace)} layers)."
            )
        return blocks[index]


def fuse_candidates(
    cands: Tensor, valid: Tensor, mode: str, gate: GatingBlock | None
) -> tuple[Tensor, Tensor | None]:
    """Fuse candidate outputs `[B, V, C_max, C]` (`valid` bool `[V, C_max]`) into `[B, V, C]`.

    gated: w = softmax over valid candidates of gate(A_c); Y = sum_c w_c A_c  (Eq. 4).
    mean:  uniform weights over valid candidates (= an untrained gate; also gate=None).
    max:   per-channel maximum over valid candidates (parameter-free "max-selection").
    Returns (Y, log w `[B, V, C_max]` or None); log w is 0 on padding, for the AGF loss.
    """
    if mode not in AGF_MODES:
        raise AnyCrowdError(f"Unknown AGF mode {mode!r}: choose one of {AGF_MODES}.")
    if mode == "max":
        neg = torch.finfo(cands.dtype).min
        return cands.masked_fill(~valid[None, :, :, None], neg).amax(2), None
    if mode == "gated" and gate is not None:
        scores = gate(cands)
    else:
        scores = torch.zeros(cands.shape[:3], dtype=cands.dtype, device=cands.device)
    # float32 softmax and loss: in bf16/fp16 the AGF loss would be accumulated in low precision
    logw = torch.log_softmax(scores.float().masked_fill(~valid, float("-inf")), dim=-1)
    logw = logw.masked_fill(~valid, 0.0)
    w = (logw.exp() * valid).to(cands.dtype)
    fused = torch.einsum("bvc,bvcd->bvd", w, cands)
    return fused, logw


def agf_loss(logw: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    """Eq. 5: mean over tokens (and batch) of -sum_c y_c log w_c; inputs `[B|1, V, C_max]`."""
    ce = -(labels.float() * logw.float() * valid).sum(-1)
    return ce.mean()
