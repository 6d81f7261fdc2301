"""The miniature's prompt: it is trained without text, on an all-zero embedding.

A zero context makes every text token identical, so cross-attention returns the same value
for any prompt length: ComfyUI's empty CONDITIONING and the headless `[1, 1, D]` agree.
"""

from __future__ import annotations

import torch


def mini_text_embedding(text_dim: int, length: int = 1) -> torch.Tensor:
    """`[1, length, text_dim]` zeros."""
    return torch.zeros(1, length, text_dim)
