"""Drawing identity masks: the masks repainted in their colours, SCAIL2ColoredMask's own painting
of object masks (for example inputs), and the preview that numbers each identity on its colour.
The masks themselves are read in `identity_masks`; docs/identity_masks.md.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from .identity_masks import SCAIL2_PALETTE, IdentityMasks


def render_identity_masks(masks: IdentityMasks, background: float = 0.0) -> Tensor:
    """float `[T, H, W, 3]`: each identity painted in its colour on a black (0) or white (1)
    background; the lower identity number wins where masks overlap (as SCAIL2ColoredMask)."""
    k, t = masks.num_identities, masks.num_frames
    h, w = masks.size
    out = torch.full((t, h, w, 3), float(background))
    for p in reversed(range(k)):
        out[masks.masks[p]] = masks.colours[p].float()
    return out


def _panel(masks: Tensor, colours: Tensor, labels: list[str], frame: np.ndarray | None,
           dim: float = 0.45) -> np.ndarray:
    """uint8 `[H, W, 3]`: the frame dimmed (black without one), each mask `[K, H, W]` tinted in its
    colour and labelled at its centre, white text with a black outline."""
    h, w = int(masks.shape[-2]), int(masks.shape[-1])
    if frame is not None and frame.shape[:2] != (h, w):  # a driving video of the masks' shape, another size
        frame = cv2.resize(np.ascontiguousarray(frame, np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = (frame * 255.0 * dim) if frame is not None else np.zeros((h, w, 3), np.float32)
    m = masks.numpy().astype(bool)
    rgb = colours.numpy() * 255.0
    for k in range(m.shape[0]):
        out[m[k]] = out[m[k]] * 0.35 + rgb[k] * 0.65
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    scale = max(0.35, min(h, w) / 500.0)
    thick = max(1, int(round(scale * 2)))
    for k in range(m.shape[0]):
        ys, xs = np.nonzero(m[k])
        if not xs.size:
            continue
        (tw, th), _ = cv2.getTextSize(labels[k], cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        org = (int(np.clip(xs.mean() - tw / 2, 0, max(w - tw, 0))), int(np.clip(ys.mean() + th / 2, th, h - 1)))
        cv2.putText(out, labels[k], org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, labels[k], org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def identity_preview(reference: IdentityMasks, driving: IdentityMasks, letters: list[str], bound: dict[int, str],
                     frame: int, reference_image=None, driving_frame=None) -> Tensor:
    """float `[1, H, W_ref + W, 3]`: the reference identities labelled "A 0" (letter, number) in
    their colours, beside driving frame `frame` with each track labelled by number and the
    letters bound to it ("T0 A"; "T3 -" when no identity uses it). `reference_image` `[H', W', 3]`
    and `driving_frame` `[H, W, 3]` (0..1), when given, are shown dimmed under the masks."""
    ref_img = reference_image.numpy() if isinstance(reference_image, Tensor) else reference_image
    drv_img = driving_frame.numpy() if isinstance(driving_frame, Tensor) else driving_frame
    left = _panel(reference.masks[:, 0], reference.colours,
                  [f"{a} {i}" for a, i in zip(letters, reference.ids)], ref_img)
    right = _panel(driving.masks[:, frame], driving.colours,
                   [f"T{i} {bound.get(i, '-')}" for i in driving.ids], drv_img)
    h, w = right.shape[:2]
    if left.shape[0] != h:
        lw = max(1, int(round(left.shape[1] * h / left.shape[0])))
        left = cv2.resize(left, (lw, h), interpolation=cv2.INTER_NEAREST)
    gap = np.full((h, max(2, w // 100), 3), 255, np.uint8)
    return torch.from_numpy(np.concatenate([left, gap, right], 1)).float().div_(255.0)[None]


def scail2_colour_masks(masks: Tensor, background: float = 0.0) -> Tensor:
    """float `[T, H, W, 3]`: object masks bool `[N, T, H, W]` painted as SCAIL2ColoredMask paints
    SAM3 objects (object i in SCAIL2_PALETTE[i % 6], lowest index on top, black (0) or white (1)
    background); e.g. example inputs for the identity-masks workflow."""
    m = torch.as_tensor(masks).bool()
    n = int(m.shape[0])
    colours = torch.tensor([SCAIL2_PALETTE[i % len(SCAIL2_PALETTE)] for i in range(n)]).reshape(-1, 3)
    return render_identity_masks(IdentityMasks(m, list(range(n)), colours, [""] * n), background)
