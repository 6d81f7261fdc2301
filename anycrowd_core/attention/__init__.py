"""Attention modes for AnyCrowd: TSDA with AGF (paper §3.3), training-free masked, global.

`AnyCrowdAttention` is the hook the Wan layers call; `GateBank` holds the AGF gates.
"""

from .agf import AGF_MODES, GateBank, GatingBlock, agf_loss, fuse_candidates
from .hook import MODES, AnyCrowdAttention
from .ops import AttentionHook, SelfAttentionOps, global_attention, sdpa

__all__ = [
    "AGF_MODES", "MODES", "AnyCrowdAttention", "AttentionHook", "GateBank", "GatingBlock",
    "SelfAttentionOps", "agf_loss", "fuse_candidates", "global_attention", "sdpa",
]
