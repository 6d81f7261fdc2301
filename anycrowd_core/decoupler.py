"""Instance Decoupler (AnyCrowd §3.2): one reference image + instance masks -> N isolated
identity images and one background image, each the size of the reference.

The images are later VAE-encoded one at a time (IILR, `iilr.py`), so no latent token ever
mixes two characters. For training, a stochastic non-overlapping spatial reassignment moves
each character elsewhere so the model cannot bind identities to poses by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from .errors import AnyCrowdError, require_finite

_RANDOM_TRIES = 200  # random placements tried per character before a restart
_RESTARTS = 10  # full random layouts tried before the row fallback


@dataclass
class DecoupledInstances:
    """Output of the Instance Decoupler for N identities on an H x W reference.

    identity_images: `[N, H, W, 3]` float 0..1 — identity k alone on a neutral gray canvas.
    background: `[H, W, 3]` float 0..1 — the reference with all characters removed (holes
        filled gray, or inpainted with `fill="inpaint"`).
    masks: bool `[N, H, W]` — where identity k is in ITS identity image (after reassignment).
    boxes: float `[N, 4]` — xyxy px of `masks` (x1/y1 exclusive pixel edges).
    offsets: float `[N, 2]` — (dx, dy) px by which each character's box top-left moved
        (zeros without reassignment).
    scales: float `[N]` — size factor applied to each character (1 unless the row
        fallback had to shrink them).
    """

    identity_images: Tensor
    background: Tensor
    masks: Tensor
    boxes: Tensor
    offsets: Tensor
    scales: Tensor

    @property
    def num_identities(self) -> int:
        return int(self.identity_images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.background.shape[0]), int(self.background.shape[1])


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise AnyCrowdError(f"{name} must be a tensor or array, got {type(x).__name__}.") from exc


def _check_inputs(image, masks) -> tuple[np.ndarray, np.ndarray]:
    img = _as_numpy(image, "image").astype(np.float32)
    if img.ndim == 4 and img.shape[0] == 1:  # a ComfyUI IMAGE batch of one
        img = img[0]
    if img.ndim != 3 or img.shape[-1] < 3:
        raise AnyCrowdError(
            f"The reference image must be [H, W, 3] (or a batch of one, [1, H, W, 3]); got shape "
            f"{tuple(img.shape)}. Pass a single RGB image."
        )
    img = img[..., :3]
    require_finite(img, "The reference image", "Its pixels must be numbers in 0..1; load it again.")
    m = _as_numpy(masks, "masks")
    if m.dtype != np.bool_:
        # NaN > 0.5 is False: a NaN mask pixel would silently become background
        require_finite(m, "The instance masks", "Mask pixels are 0..1; fix the node or file that made them.")
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise AnyCrowdError(f"Instance masks must be [N, H, W]; got shape {tuple(m.shape)}.")
    if m.shape[0] == 0:
        raise AnyCrowdError("No instance masks were given: provide one mask per character (N >= 1).")
    if m.dtype != np.bool_:
        m = m.astype(np.float32) > 0.5
    if m.shape[1:] != img.shape[:2]:
        raise AnyCrowdError(
            f"Instance masks are {m.shape[2]}x{m.shape[1]} (WxH) but the reference image is "
            f"{img.shape[1]}x{img.shape[0]}. Resize the masks to the image size."
        )
    empty = [i for i in range(m.shape[0]) if not m[i].any()]
    if empty:
        raise AnyCrowdError(
            f"Instance mask(s) {empty} (0-based) are empty. Remove them or redraw them so every "
            "mask covers its character."
        )
    return img, m


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _random_layout(
    sizes: list[tuple[int, int]], height: int, width: int, rng: np.random.Generator
) -> list[tuple[int, int]] | None:
    """Random non-overlapping top-left corners for boxes of (w, h), or None if none found."""
    for _ in range(_RESTARTS):
        placed: list[tuple[int, int, int, int]] = []
        corners: list[tuple[int, int] | None] = [None] * len(sizes)
        for i in rng.permutation(len(sizes)):
            w, h = sizes[i]
            for _ in range(_RANDOM_TRIES):
                x = int(rng.integers(0, width - w + 1))
                y = int(rng.integers(0, height - h + 1))
                box = (x, y, x + w, y + h)
                if not any(_overlaps(box, p) for p in placed):
                    placed.append(box)
                    corners[i] = (x, y)
                    break
            else:
                break
        if all(c is not None for c in corners):
            return corners  # type: ignore[return-value]
    return None


def _row_layout(
    sizes: list[tuple[int, int]], height: int, width: int, order: np.ndarray
) -> tuple[list[tuple[int, int]], float]:
    """Boxes side by side in `order`, bottoms aligned, shrunk uniformly so the row fits."""
    total_w = sum(w for w, _ in sizes)
    max_h = max(h for _, h in sizes)
    scale = min(1.0, width / total_w, height / max_h)
    scaled = [(max(1, int(np.floor(w * scale))), max(1, int(np.floor(h * scale)))) for w, h in sizes]
    gap = (width - sum(w for w, _ in scaled)) / (len(sizes) + 1)
    corners: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    x = gap
    for i in order:
        w, h = scaled[i]
        corners[i] = (int(np.floor(x)), height - h)
        x += w + gap
    return corners, scale


def decouple_instances(
    image,
    masks,
    *,
    reassign: bool = False,
    seed: int | None = None,
    gray: float = 0.5,
    fill: str = "gray",
) -> DecoupledInstances:
    """Split a reference image into isolated identity images and a background image.

    image: `[H, W, 3]` (or `[1, H, W, 3]`) float 0..1; masks: `[N, H, W]` (bool, or float
    thresholded at 0.5). Without `reassign` every character stays where it is. With
    `reassign` (training) each character's box crop moves to a random position such that
    no two placed boxes overlap (seeded by `seed`; None draws fresh entropy); if random
    placement fails, the characters are laid out in a random order in one row along the
    bottom, shrunk uniformly if the row would not fit.
    fill: "gray" fills the background holes with `gray`; "inpaint" uses cv2.inpaint (Telea)
    on a mask dilated by 2 px so colour fringes at mask edges are removed too.
    """
    if fill not in ("gray", "inpaint"):
        raise AnyCrowdError(f"Unknown background fill {fill!r}; use 'gray' or 'inpaint'.")
    img, m = _check_inputs(image, masks)
    n = m.shape[0]
    height, width = img.shape[:2]

    union = m.any(axis=0)
    if fill == "gray":
        background = img.copy()
        background[union] = gray
    else:
        hole = cv2.dilate(union.astype(np.uint8), np.ones((5, 5), np.uint8))
        img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        background = cv2.inpaint(img8, hole, 5, cv2.INPAINT_TELEA).astype(np.float32) / 255.0

    boxes_src = [_bbox(m[i]) for i in range(n)]
    sizes = [(b[2] - b[0], b[3] - b[1]) for b in boxes_src]
    corners = [(b[0], b[1]) for b in boxes_src]
    scales = np.ones(n, dtype=np.float32)
    if reassign:
        if seed is not None and not 0 <= int(seed) < 2**128:
            raise AnyCrowdError(f"The reassignment seed must be 0 or more, got {seed}.")
        rng = np.random.default_rng(seed)
        layout = _random_layout(sizes, height, width, rng)
        if layout is None:
            layout, scale = _row_layout(sizes, height, width, rng.permutation(n))
            scales[:] = scale
        corners = layout

    identity = np.full((n, height, width, 3), gray, dtype=np.float32)
    out_masks = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        x0, y0, x1, y1 = boxes_src[i]
        crop = img[y0:y1, x0:x1]
        crop_mask = m[i, y0:y1, x0:x1]
        if scales[i] != 1.0:
            w = max(1, int(np.floor((x1 - x0) * scales[i])))
            h = max(1, int(np.floor((y1 - y0) * scales[i])))
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
            crop_mask = cv2.resize(crop_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            if not crop_mask.any():  # a sliver shrunk away: keep its centre pixel
                crop_mask[h // 2, w // 2] = True
        cx, cy = corners[i]
        h, w = crop_mask.shape
        region = identity[i, cy : cy + h, cx : cx + w]
        region[crop_mask] = crop[crop_mask]
        out_masks[i, cy : cy + h, cx : cx + w] = crop_mask

    boxes = np.array([_bbox(out_masks[i]) for i in range(n)], dtype=np.float32)
    offsets = np.array(
        [(corners[i][0] - boxes_src[i][0], corners[i][1] - boxes_src[i][1]) for i in range(n)], dtype=np.float32
    )
    return DecoupledInstances(
        identity_images=torch.from_numpy(identity),
        background=torch.from_numpy(np.ascontiguousarray(background, dtype=np.float32)),
        masks=torch.from_numpy(out_masks),
        boxes=torch.from_numpy(boxes),
        offsets=torch.from_numpy(offsets),
        scales=torch.from_numpy(scales),
    )


def preview(decoupled: DecoupledInstances, separator: int = 2, separator_value: float = 1.0) -> Tensor:
    """Side-by-side strip `[H, (N+1)*W + N*separator, 3]`: identities 1..N, then background."""
    panels = list(decoupled.identity_images) + [decoupled.background]
    height = decoupled.background.shape[0]
    sep = torch.full((height, separator, 3), separator_value, dtype=decoupled.background.dtype)
    parts: list[Tensor] = []
    for i, p in enumerate(panels):
        if i:
            parts.append(sep)
        parts.append(p)
    return torch.cat(parts, dim=1)
