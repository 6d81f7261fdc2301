"""Node inputs as a workflow hands them to our node functions, for the tests that call those
functions directly: the boxes widget's JSON and a text CONDITIONING of the tiny model's width.

Import in tests as `from node_inputs import boxes_text, text_cond`.
"""

from __future__ import annotations

import json

import torch


def boxes_text(boxes: torch.Tensor) -> str:
    """Per-frame boxes `[M, T, 4]` px (NaN rows: the track is absent) as the boxes widget's JSON:
    one list per track, `null` for an absent frame."""
    return json.dumps([[None if torch.isnan(b).any() else [float(v) for v in b] for b in track] for track in boxes])


def text_cond(value: float = 0.0):
    """A CONDITIONING of one `[1, 4, 32]` text embedding filled with `value`."""
    return [[torch.full((1, 4, 32), value), {"pooled_output": None}]]
