"""`AnyCrowdAttention`: the AttentionHook that runs one attention mode (tsda / masked /
global) in every self-attention layer of the chosen branches, for one token layout.

Same object for headless sampling, ComfyUI's patched layers and training (AGF loss).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import AnyCrowdError
from ..layout import TokenLayout
from .agf import AGF_MODES, GateBank, agf_loss
from .masked import masked_attention, masked_plan
from .ops import SelfAttentionOps, global_attention
from .tsda import tsda_attention, tsda_plan

MODES = ("tsda", "masked", "global")
BRANCHES = ("dit", "vace")

# copies of a GateBank that a host loads on other devices, keyed by the original bank, so every
# hook holding that bank (e.g. the per-window hooks of ComfyUI's context windows) finds them;
# weak both ways: the host owns the copies, the user's graph the original
_GATE_COPIES: weakref.WeakKeyDictionary[GateBank, weakref.WeakSet[GateBank]] = weakref.WeakKeyDictionary()


class AnyCrowdAttention:
    """Attention hook for one layout: `hook(x [B, L, C], ops) -> [B, L, C]`.

    mode: "tsda" (paper), "masked" (training-free, one pass) or "global" (plain Wan).
    agf: fusion of overlapping candidates in tsda: "gated" (the layer's Gating Block from
      `gates`; with gates=None it computes what an untrained gate does: the mean), "mean", "max".
    branches: layers of other branches use global attention.
    record_agf_loss: keep each tsda layer's AGF loss (needs layout soft labels and gates).
    The batch may hold several samples (CFG's cond/uncond); all share the layout.
    """

    def __init__(
        self,
        layout: TokenLayout,
        mode: str = "tsda",
        agf: str = "gated",
        gates: GateBank | None = None,
        branches: Sequence[str] = BRANCHES,
        record_agf_loss: bool = False,
    ):
        if mode not in MODES:
            raise AnyCrowdError(f"Unknown attention mode {mode!r}: choose one of {MODES}.")
        if agf not in AGF_MODES:
            raise AnyCrowdError(f"Unknown AGF mode {agf!r}: choose one of {AGF_MODES}.")
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown:
            raise AnyCrowdError(f"Unknown branches {unknown}: choose from {BRANCHES}.")
        if record_agf_loss:
            if layout.soft_labels is None:
                raise AnyCrowdError(
                    "record_agf_loss needs AGF soft labels: build the layout with track_masks=..."
                )
            if agf != "gated" or gates is None:
                raise AnyCrowdError(
                    "The AGF loss trains the gating blocks: use agf='gated' and pass a GateBank."
                )
        self.layout = layout
        self.mode, self.agf, self.gates = mode, agf, gates
        self.branches = tuple(branches)
        self.record_agf_loss = record_agf_loss
        self._plans: dict[tuple[str, torch.device], object] = {}
        self._layouts: dict[torch.device, TokenLayout] = {}
        self._losses: list[Tensor] = []
        self._sealed = False

    def __deepcopy__(self, memo):
        # ComfyUI deep-copies transformer_options on every model clone; one run, one hook
        return self

    def add_gate_copy(self, gates: GateBank) -> None:
        """Register a copy of this hook's gates that a host loads on another device (ComfyUI's
        multi-GPU deep clones): layers running there, under any hook with the same gates, use
        it instead of casting the originals on every call. Held weakly: the copy lives as long
        as the host keeps it."""
        if self.gates is None:
            raise AnyCrowdError("This attention hook has no AGF gates to copy: pass gates=... first.")
        _GATE_COPIES.setdefault(self.gates, weakref.WeakSet()).add(gates)

    def gate_copies(self) -> list[GateBank]:
        """The registered, still living copies of this hook's gates."""
        return [] if self.gates is None else list(_GATE_COPIES.get(self.gates, ()))

    def _gates_on(self, device: torch.device) -> GateBank:
        for bank in (self.gates, *self.gate_copies()):
            p = next(bank.parameters(), None)
            if p is not None and p.device == device:
                return bank
        return self.gates  # GatingBlock casts its parameters to the activations' device

    def _plan(self, kind: str, device: torch.device):
        key = (kind, device)
        if key not in self._plans:
            if device not in self._layouts:
                self._layouts[device] = self.layout.to(device)
            layout = self._layouts[device]
            self._plans[key] = tsda_plan(layout) if kind == "tsda" else masked_plan(layout)
        return self._plans[key]

    def __call__(self, x: Tensor, ops: SelfAttentionOps) -> Tensor:
        if self.mode == "global" or ops.branch not in self.branches:
            return global_attention(x, ops)
        lay = self.layout
        if x.dim() != 3 or x.shape[1] != lay.num_tokens:
            got = x.shape[1] if x.dim() == 3 else tuple(x.shape)
            raise AnyCrowdError(
                f"The token layout was built for {lay.frame_size[1]}x{lay.frame_size[0]}, "
                f"{lay.pixel_frames} frames with {lay.num_identities} identities"
                f"{' + background' if lay.background else ''} = {lay.num_tokens} tokens, but the "
                f"{ops.branch} branch got {got} tokens: rebuild the layout for the latent being sampled."
            )
        if self.mode == "masked":
            return masked_attention(x, ops, self._plan("masked", x.device))
        gated = self.agf == "gated" and self.gates is not None
        gate = self._gates_on(x.device).gate(ops.branch, ops.index) if gated else None
        plan = self._plan("tsda", x.device)
        out, logw = tsda_attention(x, ops, plan, self.agf, gate)
        if self.record_agf_loss and logw is not None:
            loss = agf_loss(logw, plan.labels[None], plan.valid[None])
            if not self._sealed:  # computed either way: a checkpointed recompute must save the same tensors
                self._losses.append(loss)
        return out

    def agf_loss(self) -> Tensor:
        """Mean AGF loss (Eq. 5) over the layers recorded since `reset()`; 0 if none had
        overlapping tokens."""
        if not self._losses:
            return torch.zeros(())
        return torch.stack(self._losses).mean()

    def seal(self) -> None:
        """Stop keeping AGF losses (the forward is done). Gradient checkpointing re-runs the
        layers in backward with this same hook; keeping those copies would hold a second
        graph per layer until backward ends."""
        self._sealed = True

    def reset(self) -> None:
        self._losses.clear()
        self._sealed = False
