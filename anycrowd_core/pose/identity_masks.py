"""Identity masks from SCAIL-2 style colour-coded mask videos and from SAM3 track data.

Turns what a SCAIL-2 graph already has (SCAIL2ColoredMask's colour masks, SAM3_VideoTrack's
SAM3_TRACK_DATA) into per-identity masks, boxes and mask-only `PoseTracks` for our nodes, with
no palette cap. Formats, identity numbering and ordering: docs/identity_masks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AnyCrowdError
from .render import identity_colors
from .types import NUM_KEYPOINTS, PoseTracks

# SCAIL2ColoredMask's DEFAULT_PALETTE (comfy_extras/nodes_scail.py), in its order: colour k is
# the k-th tracked object after sort_by. Our identity number of a palette colour is its index.
SCAIL2_PALETTE = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0))
PALETTE_NAMES = ("blue", "red", "green", "magenta", "cyan", "yellow")
# SCAIL2ColoredMask paints the background black or white (animation / replacement mode).
BACKGROUNDS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
SAM3_SORT_BY = ("left_to_right", "area", "none")  # SCAIL2ColoredMask's sort_by options

_QUANT = 32  # levels per channel when collecting candidate extra colours


@dataclass
class DecodeSettings:
    """How colour-coded masks are read.

    tolerance: largest RGB distance (Euclidean, channels 0..1) from a pixel to the nearest of the
        colours (backgrounds included) for the pixel to take it; farther pixels (odd colours) are
        background. A pixel always takes the NEAREST colour, so a faded edge pixel (0, 0, 0.6)
        is blue, not black. A colour outside the palette must stand more than tolerance / 2 from
        every known colour, and its shades within tolerance / 2 are merged.
    min_area: pixels; in every frame, the connected pieces of an identity's mask smaller than
        this are dropped (compression speckles, stray antialiased pixels), and a colour that is
        not in the SCAIL-2 palette needs this many flat pixels in the whole video to count.
    extra_colours: also read colours outside the SCAIL-2 palette as further identities.
    flat_eps: a pixel is "flat" (inside a region, not an antialiased edge) when no channel in its
        3x3 neighbourhood differs by more than this; only flat pixels can start an extra colour.
    """

    tolerance: float = 0.5
    min_area: int = 16
    extra_colours: bool = True
    flat_eps: float = 0.1

    def check(self) -> None:
        if not 0.0 < float(self.tolerance) <= 1.0:
            raise AnyCrowdError(
                f"tolerance must be in (0, 1] (RGB distance, channels 0..1), got {self.tolerance}: 0.5 suits "
                "compressed videos; lower it if odd colours (not people) are read as people."
            )
        if int(self.min_area) < 0:
            raise AnyCrowdError(f"min_area must be 0 or more pixels, got {self.min_area}.")


@dataclass
class IdentityMasks:
    """Per-identity masks of a video (or of one reference image, T = 1).

    masks:   bool `[K, T, H, W]`, one row per identity, in identity-number order.
    ids:     identity numbers: the palette index 0..5 for SCAIL-2 colours (blue 0, red 1, green 2,
             magenta 3, cyan 4, yellow 5), 6, 7, ... for further colours, or the SAM3 object's
             index after sorting. Colour k in SCAIL2ColoredMask's output is object k, so a number
             names the same person in a colour video and in its SAM3 track data.
    colours: float `[K, 3]` RGB 0..1 each identity is drawn in (its decoded colour).
    names:   a word per identity for messages and previews ("blue", "#7 (0.98,0.50,0.02)", "object 3").
    """

    masks: Tensor
    ids: list[int]
    colours: Tensor
    names: list[str]

    @property
    def num_identities(self) -> int:
        return int(self.masks.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.masks.shape[2]), int(self.masks.shape[3])

    @property
    def present(self) -> Tensor:
        """bool `[K, T]`: the identity has pixels in the frame."""
        return self.masks.flatten(2).any(-1)

    def boxes(self) -> Tensor:
        """float `[K, T, 4]` tight xyxy px boxes (x1, y1 exclusive), NaN where absent."""
        return mask_boxes(self.masks)

    def select(self, ids: list[int]) -> IdentityMasks:
        """The identities with these numbers, in this order."""
        pos = {i: p for p, i in enumerate(self.ids)}
        idx = [pos[i] for i in ids]
        sel = torch.tensor(idx, dtype=torch.long)
        return IdentityMasks(self.masks[sel], [self.ids[p] for p in idx], self.colours[sel],
                             [self.names[p] for p in idx])

    def frame(self, t: int) -> IdentityMasks:
        """Frame t as a one-frame IdentityMasks, keeping only the identities visible in it."""
        if not 0 <= t < self.num_frames:
            raise AnyCrowdError(f"Frame {t} is outside the mask video (0..{self.num_frames - 1}).")
        keep = [p for p in range(self.num_identities) if bool(self.masks[p, t].any())]
        sel = torch.tensor(keep, dtype=torch.long)
        return IdentityMasks(self.masks[sel][:, t:t + 1], [self.ids[p] for p in keep], self.colours[sel],
                             [self.names[p] for p in keep])

    def to_tracks(self) -> PoseTracks:
        """Mask-only `PoseTracks`: boxes from the masks, presence, keypoints all zero confidence
        (there are no keypoints), track ids = identity numbers."""
        k, t = self.num_identities, self.num_frames
        h, w = self.size
        return PoseTracks(torch.zeros(k, t, NUM_KEYPOINTS, 3), self.boxes(), self.present, h, w, list(self.ids))


def mask_boxes(masks: Tensor) -> Tensor:
    """float `[..., 4]` tight xyxy px boxes of bool masks `[..., H, W]` (x1, y1 exclusive), NaN
    where a mask is empty."""
    m = masks.bool()
    h, w = int(m.shape[-2]), int(m.shape[-1])
    rows, cols = m.any(-1), m.any(-2)
    ar_h = torch.arange(h, dtype=torch.float32)
    ar_w = torch.arange(w, dtype=torch.float32)
    big = float(max(h, w) + 1)
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h, -1.0).amax(-1) + 1
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w, -1.0).amax(-1) + 1
    out = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(rows.any(-1)[..., None], out, torch.full_like(out, float("nan")))


def _as_video(images, what: str) -> np.ndarray:
    """float32 `[T, H, W, 3]` 0..1 from an IMAGE batch (or one `[H, W, 3]` image)."""
    if not isinstance(images, Tensor):
        raise AnyCrowdError(f"{what} must be an IMAGE tensor [frames, H, W, 3], got {type(images).__name__}.")
    x = images.detach().cpu().float()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] < 3 or min(x.shape[:3]) < 1:
        raise AnyCrowdError(f"{what} must be an IMAGE batch [frames, H, W, 3], got shape {tuple(images.shape)}.")
    if not bool(torch.isfinite(x[..., :3]).all()):
        raise AnyCrowdError(f"{what} holds NaN or infinite values: load the mask video again.")
    return x[..., :3].clamp(0, 1).numpy()


def _flat_pixels(frame_u8: np.ndarray, eps: float) -> np.ndarray:
    """bool `[H, W]`: no channel varies by more than eps in the pixel's 3x3 neighbourhood."""
    kernel = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(frame_u8, kernel).astype(np.int16) - cv2.erode(frame_u8, kernel).astype(np.int16)
    return (spread.max(-1) <= eps * 255.0)


def _nearest(frame: np.ndarray, colours: np.ndarray, tolerance: float) -> np.ndarray:
    """int `[...]`: index of the nearest colour within `tolerance` of each pixel `[..., 3]`, -1 where none is."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2 as one matrix product (a broadcast difference is ~10x slower)
    pix = torch.from_numpy(np.ascontiguousarray(frame, np.float32)).reshape(-1, 3)
    col = torch.from_numpy(np.ascontiguousarray(colours, np.float32))
    d = (pix * pix).sum(1, keepdim=True) - 2.0 * pix @ col.T + (col * col).sum(1)[None]
    best_d, best = d.min(1)
    out = torch.where(best_d <= tolerance ** 2, best, torch.full_like(best, -1))
    return out.reshape(frame.shape[:-1]).numpy()


_LUT_BITS = 6  # a colour lookup table over 64 levels per channel: 1/128 of the range at most off


def _colour_lut(colours: np.ndarray, tolerance: float) -> np.ndarray:
    """int16 `[2^18]`: `_nearest` of every cell centre of a 64^3 RGB grid, so a frame is labelled
    by one table lookup per pixel instead of a distance to every colour."""
    levels = 1 << _LUT_BITS
    centres = (np.arange(levels, dtype=np.float32) + 0.5) / levels
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    return _nearest(grid, colours, tolerance).astype(np.int16)


def _lookup(frame_u8: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """int `[H, W]` labels of a uint8 `[H, W, 3]` frame through a `_colour_lut` table."""
    q = (frame_u8 >> (8 - _LUT_BITS)).astype(np.int32)
    return lut[(q[..., 0] << (2 * _LUT_BITS)) | (q[..., 1] << _LUT_BITS) | q[..., 2]]


def _as_uint8(video) -> list[np.ndarray]:
    """Each frame (0..1) as uint8 `[H, W, 3]`, frame by frame (no float copy of the whole video)."""
    return [np.round(frame * 255.0).astype(np.uint8) for frame in video]


def _find_extra_colours(video, video_u8: list[np.ndarray], settings: DecodeSettings) -> np.ndarray:
    """float `[E, 3]` colours outside the palette and the backgrounds that fill flat regions of
    at least `min_area` pixels over the video (clusters merged within half the tolerance);
    `video_u8` is `_as_uint8(video)`."""
    known = _colour_lut(np.asarray(SCAIL2_PALETTE + BACKGROUNDS, np.float32), settings.tolerance / 2)
    counts: dict[int, int] = {}
    sums: dict[int, np.ndarray] = {}
    for frame, u8 in zip(video, video_u8):
        cand = _flat_pixels(u8, settings.flat_eps) & (_lookup(u8, known) < 0)
        if not cand.any():
            continue
        pix = frame[cand]
        q = np.minimum((pix * _QUANT).astype(np.int64), _QUANT - 1)
        keys = (q[:, 0] * _QUANT + q[:, 1]) * _QUANT + q[:, 2]
        uniq, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        s = np.zeros((uniq.size, 3), np.float64)
        np.add.at(s, inv, pix)
        for key, c, v in zip(uniq.tolist(), cnt.tolist(), s):
            counts[key] = counts.get(key, 0) + c
            sums[key] = sums.get(key, 0.0) + v
    centres: list[np.ndarray] = []
    weights: list[int] = []
    radius = settings.tolerance / 2
    for key in sorted(counts, key=lambda k: (-counts[k], k)):  # biggest first: noise joins a real colour
        colour = sums[key] / counts[key]
        dist = [float(np.linalg.norm(colour - c)) for c in centres]
        j = int(np.argmin(dist)) if dist else -1
        if j >= 0 and dist[j] <= radius:
            centres[j] = (centres[j] * weights[j] + colour * counts[key]) / (weights[j] + counts[key])
            weights[j] += counts[key]
        else:
            centres.append(colour)
            weights.append(counts[key])
    keep = [c for c, n in zip(centres, weights) if n >= max(int(settings.min_area), 1)]
    return np.asarray(keep, np.float32).reshape(-1, 3)


def _despeckle(mask: np.ndarray, min_area: int) -> np.ndarray:
    """bool `[H, W]` without the 8-connected pieces smaller than min_area pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big = stats[:, cv2.CC_STAT_AREA] >= min_area
    big[0] = False
    return big[labels]


def _first_appearance_order(masks: np.ndarray) -> list[int]:
    """Positions of `[K, T, H, W]` masks sorted by first frame with pixels, then centroid x in
    that frame (left to right), as SCAIL2ColoredMask's sort_by=left_to_right."""
    keys = []
    for p, m in enumerate(masks):
        frames = np.flatnonzero(m.reshape(m.shape[0], -1).any(-1))
        if not frames.size:
            keys.append((np.inf, np.inf, p))
            continue
        t = int(frames[0])
        keys.append((t, float(np.nonzero(m[t])[1].mean()), p))
    return [p for *_, p in sorted(keys)]


def decode_colour_masks(video, settings: DecodeSettings | None = None,
                        reference=None) -> tuple[IdentityMasks, IdentityMasks | None]:
    """Per-identity masks of a colour-coded mask video `[T, H, W, 3]` (0..1), and of an optional
    colour-coded reference mask `[1, H', W', 3]` read with the same colours.

    Each pixel takes the nearest of: black or white (background), the six SCAIL-2 palette
    colours, and (settings.extra_colours) any further colour that fills flat regions; farther
    than `tolerance` from all of them it is background. Masks lose pieces under `min_area`
    pixels per frame. Identity numbers: palette index for palette colours, then 6, 7, ... for
    further colours by first appearance (video before reference), then left to right.
    """
    settings = settings or DecodeSettings()
    settings.check()
    frames = _as_video(video, "mask video")
    ref = _as_video(reference, "reference mask") if reference is not None else None
    if ref is not None and ref.shape[0] != 1:
        raise AnyCrowdError(
            f"The reference mask has {ref.shape[0]} images; give one colour mask of the reference image "
            "(SCAIL2ColoredMask's reference_image_mask, first image)."
        )
    frames_u8 = _as_uint8(frames)
    ref_u8 = _as_uint8(ref) if ref is not None else []
    extra = np.zeros((0, 3), np.float32)
    if settings.extra_colours:
        stack = frames if ref is None else list(frames) + list(ref)
        extra = _find_extra_colours(stack, frames_u8 + ref_u8, settings)
    identity_colours = np.concatenate([np.asarray(SCAIL2_PALETTE, np.float32), extra])
    table = np.concatenate([np.asarray(BACKGROUNDS, np.float32), identity_colours])
    k = identity_colours.shape[0]

    lut = _colour_lut(table, float(settings.tolerance))

    def label(video_u8: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((k, len(video_u8)) + video_u8[0].shape[:2], bool)
        for t, u8 in enumerate(video_u8):
            lab = _lookup(u8, lut) - len(BACKGROUNDS)
            for j in np.unique(lab[lab >= 0]).tolist():
                out[j, t] = _despeckle(lab == j, int(settings.min_area))
        return out

    drv = label(frames_u8)
    ref_masks = label(ref_u8) if ref is not None else None
    # extra colours: numbered 6, 7, ... by first appearance in the video, then in the reference
    order_src = drv[len(SCAIL2_PALETTE):]
    if ref_masks is not None and order_src.shape[0]:
        seen = order_src.reshape(order_src.shape[0], -1).any(-1)
        late = ref_masks[len(SCAIL2_PALETTE):]
        extra_order = [p for p in _first_appearance_order(order_src) if seen[p]]
        extra_order += [p for p in _first_appearance_order(late) if not seen[p]]
    else:
        extra_order = _first_appearance_order(order_src)
    positions = list(range(len(SCAIL2_PALETTE))) + [len(SCAIL2_PALETTE) + p for p in extra_order]
    ids = {pos: n for n, pos in enumerate(positions)}

    def pack(masks: np.ndarray) -> IdentityMasks:
        alive = [pos for pos in positions if masks[pos].any()]
        names = []
        for pos in alive:
            if pos < len(SCAIL2_PALETTE):
                names.append(PALETTE_NAMES[pos])
            else:
                r, g, b = identity_colours[pos].tolist()
                names.append(f"#{ids[pos]} ({r:.2f},{g:.2f},{b:.2f})")
        sel = np.asarray(alive, np.int64)
        chosen = torch.from_numpy(masks[sel]) if alive else torch.zeros((0,) + masks.shape[1:], dtype=torch.bool)
        return IdentityMasks(chosen, [ids[pos] for pos in alive],
                             torch.from_numpy(identity_colours[sel]).reshape(-1, 3), names)

    return pack(drv), (pack(ref_masks) if ref_masks is not None else None)


def unpack_sam3_masks(packed) -> Tensor:
    """bool `[T, N, Hm, Wm]` from SAM3_TRACK_DATA's packed_masks, uint8 `[T, N, Hm, Wm/8]`, 8
    pixels per byte, least significant bit first (comfy/ldm/sam3/tracker.py pack_masks)."""
    p = torch.as_tensor(packed).detach().cpu()
    if p.dtype != torch.uint8 or p.dim() != 4:
        raise AnyCrowdError(
            f"SAM3 track data: packed_masks must be uint8 [frames, objects, H, W/8] (bit-packed), got "
            f"{p.dtype} {tuple(p.shape)}. Connect SAM3 Video Track's track_data output."
        )
    bits = np.unpackbits(p.numpy(), axis=-1, bitorder="little")
    return torch.from_numpy(bits.astype(bool))


def decode_sam3_track_data(track_data, sort_by: str = "left_to_right") -> IdentityMasks:
    """Per-identity masks from SAM3_TRACK_DATA, the dict SAM3 Video Track outputs:
    {"packed_masks": uint8 `[T, N, Hm, Wm/8]` or None, "n_frames": T, "scores": [N floats],
    "orig_size": (H, W)}. Masks are unpacked at the tracker's working size and resized
    (nearest) to orig_size, as SCAIL2ColoredMask renders them. Objects are numbered after
    `sort_by` exactly as SCAIL2ColoredMask orders its colours (left_to_right: first frame seen,
    then centroid x; area: first frame seen, then larger first; none: SAM3's order)."""
    if sort_by not in SAM3_SORT_BY:
        raise AnyCrowdError(
            f"Unknown sort_by {sort_by!r}; use one of {', '.join(SAM3_SORT_BY)} (as in SCAIL2ColoredMask).")
    if not isinstance(track_data, dict) or "packed_masks" not in track_data:
        raise AnyCrowdError(
            f"SAM3 track data must be the dict SAM3 Video Track outputs (with packed_masks, n_frames, orig_size), "
            f"got {type(track_data).__name__}."
        )
    packed = track_data["packed_masks"]
    size = track_data.get("orig_size")
    if packed is None or int(torch.as_tensor(packed).shape[1]) == 0:
        t = int(track_data.get("n_frames", 0) or 0)
        if size is None:
            raise AnyCrowdError("SAM3 track data without masks nor orig_size: SAM3 tracked nothing; check its prompt.")
        h, w = int(size[0]), int(size[1])
        return IdentityMasks(torch.zeros(0, max(t, 1), h, w, dtype=torch.bool), [], torch.zeros(0, 3), [])
    packed = torch.as_tensor(packed)
    per_object = []  # one object at a time: the working size is 1008^2, so all at once is T x N x 1 MB
    for p in range(int(packed.shape[1])):
        m = unpack_sam3_masks(packed[:, p:p + 1])[:, 0]  # [T, Hm, Wm]
        if size is not None and tuple(int(v) for v in size) != tuple(m.shape[-2:]):
            m = F.interpolate(m[:, None].to(torch.uint8), size=(int(size[0]), int(size[1])), mode="nearest")[:, 0].bool()
        per_object.append(m)
    masks = torch.stack(per_object)  # [N, T, H, W]
    n = int(masks.shape[0])
    if sort_by == "none":
        order = list(range(n))
    else:
        m = masks.numpy()
        present = m.reshape(n, m.shape[1], -1).any(-1)
        first = np.where(present.any(-1), present.argmax(-1), m.shape[1])
        keys = []
        for p in range(n):
            t = min(int(first[p]), m.shape[1] - 1)
            ys, xs = np.nonzero(m[p, t])
            cx = float(xs.mean()) if xs.size else np.inf
            keys.append((int(first[p]), cx if sort_by == "left_to_right" else -float(xs.size), p))
        order = [p for *_, p in sorted(keys)]
    masks = masks[torch.tensor(order, dtype=torch.long)]
    colours = torch.tensor([SCAIL2_PALETTE[k] if k < len(SCAIL2_PALETTE) else
                            tuple(c / 255.0 for c in identity_colors(k + 1)[k]) for k in range(n)])
    return IdentityMasks(masks, list(range(n)), colours.float(), [f"object {k}" for k in range(n)])


def colour_binding(reference: IdentityMasks, driving: IdentityMasks) -> str:
    """The binding "A=<id>, B=<id>, ..." that gives each reference identity (letters in
    identity-number order) the driving track with the same number (the same colour)."""
    from .binding import identity_name

    present = set(i for i, ok in zip(driving.ids, driving.present.any(-1).tolist()) if ok)
    missing = [(k, i, name) for k, (i, name) in enumerate(zip(reference.ids, reference.names)) if i not in present]
    if missing:
        detail = ", ".join(f"{identity_name(k)} ({name}, number {i})" for k, i, name in missing)
        shown = ", ".join(f"T{i}" for i in sorted(present)) or "none"
        raise AnyCrowdError(
            f"Reference identit{'y' if len(missing) == 1 else 'ies'} {detail} "
            f"{'does' if len(missing) == 1 else 'do'} not appear in the driving mask video (its identities: {shown}): "
            "bind them yourself in the binding field (e.g. recast A=1), or mask the same people in both."
        )
    return ", ".join(f"{identity_name(k)}={i}" for k, i in enumerate(reference.ids))
