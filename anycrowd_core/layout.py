"""Token layout: which token of the `[R_1 .. R_N, R_bg | V_1 .. V_T]` sequence belongs to
which identity, the background or a reference frame's void, as index tensors.

Built once per run from reference masks, track boxes and the track -> identity binding;
read by every attention mode (`attention/`). Rules: DESIGN.md "Token layout", docs/tsda.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from .errors import AnyCrowdError, require_finite

PATCH = 16  # pixels per token side: 8x VAE times the DiT's 2x2 patchify
REF_THRESHOLD = 0.5  # pooled mask occupancy from which a reference token belongs to its identity


@dataclass(frozen=True, eq=False)
class TokenLayout:
    """Token groups of one sampled sequence (same for the DiT and the VACE branch).

    Token indices are global positions in the flattened sequence, row-major over
    (latent frame, h, w); frames are `N` identity reference frames, the background
    reference frame (if `background`), then `video_frames` latent video frames.

    ref_tokens[k]:  int64 `[n_k]` tokens of frame R_k inside identity k's mask.
    void_tokens[k]: int64 `[*]` the other tokens of frame R_k (attend only among themselves).
    bg_ref_tokens:  int64 `[h*w]` tokens of R_bg (empty without background).
    vid_tokens[k]:  int64 `[*]` video tokens inside the boxes of the tracks bound to k.
    video_groups:   ((identity ids, int64 global tokens), ...) video tokens grouped by the
                    set of identities whose boxes contain them (partition of the video).
    candidates:     int64 `[V, C_max]` per video token (local index 0..V-1): its candidate
                    categories, identities ascending then background (= N); -1 padded.
    soft_labels:    float32 `[V, C_max]` AGF targets aligned with `candidates` (rows sum to
                    1 over valid entries, 0 on padding), or None without track masks.
    identity_tracks[k]: indices of the tracks bound to identity k (may be empty).
    """

    num_identities: int
    num_tracks: int
    background: bool
    frame_size: tuple[int, int]  # (H, W) pixels
    grid: tuple[int, int]  # (h, w) tokens per frame
    pixel_frames: int
    video_frames: int
    identity_tracks: tuple[tuple[int, ...], ...]
    ref_tokens: tuple[Tensor, ...]
    void_tokens: tuple[Tensor, ...]
    bg_ref_tokens: Tensor
    vid_tokens: tuple[Tensor, ...]
    video_groups: tuple[tuple[tuple[int, ...], Tensor], ...]
    candidates: Tensor
    soft_labels: Tensor | None

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_ref_frames(self) -> int:
        return self.num_identities + int(self.background)

    @property
    def video_start(self) -> int:
        """Global index of the first video token."""
        return self.num_ref_frames * self.tokens_per_frame

    @property
    def num_video_tokens(self) -> int:
        return self.video_frames * self.tokens_per_frame

    @property
    def num_tokens(self) -> int:
        return (self.num_ref_frames + self.video_frames) * self.tokens_per_frame

    @property
    def candidate_count(self) -> Tensor:
        """int64 `[V]`: number of candidates of each video token (>= 1, background included)."""
        return (self.candidates >= 0).sum(1)

    def to(self, device: torch.device | str) -> TokenLayout:
        """The same layout with every index tensor on `device`."""

        def move(v):
            if isinstance(v, Tensor):
                return v.to(device)
            if isinstance(v, tuple):
                return tuple(move(e) for e in v)
            return v

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def describe(self) -> str:
        """Multi-line summary: counts per group."""
        h, w = self.grid
        lines = [
            f"TokenLayout: {self.frame_size[1]}x{self.frame_size[0]} px -> {w}x{h} tokens/frame, "
            f"{self.num_identities} identities, {self.num_tracks} tracks, "
            f"{'with' if self.background else 'no'} background reference, "
            f"{self.video_frames} latent video frames ({self.pixel_frames} px frames), "
            f"L={self.num_tokens} tokens (video {self.num_video_tokens})"
        ]
        for k in range(self.num_identities):
            lines.append(
                f"  identity {k}: tracks {list(self.identity_tracks[k])}, ref {len(self.ref_tokens[k])} "
                f"(+{len(self.void_tokens[k])} void), video {len(self.vid_tokens[k])}"
            )
        count = self.candidate_count
        lines.append(
            f"  background ref {len(self.bg_ref_tokens)}; video tokens with >=2 candidates "
            f"{int((count >= 2).sum())}, max candidates {int(count.max()) if count.numel() else 0}, "
            f"{len(self.video_groups)} candidate sets"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()


def _as_bool(t: Tensor) -> Tensor:
    return t > 0.5 if t.is_floating_point() else t.bool()


def _box_token_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """bool `[M, T, h, w]`: tokens whose 16x16 patch intersects the box with positive area."""
    present = ~torch.isnan(boxes).any(-1)
    b = torch.nan_to_num(boxes.float())
    x0, x1 = b[..., 0].clamp(0, width), b[..., 2].clamp(0, width)
    y0, y1 = b[..., 1].clamp(0, height), b[..., 3].clamp(0, height)
    present = present & (x1 > x0) & (y1 > y0)  # boxes fully outside the frame are absent
    cx = torch.arange(width // PATCH, dtype=torch.float32) * PATCH
    cy = torch.arange(height // PATCH, dtype=torch.float32) * PATCH
    in_c = (cx + PATCH > x0[..., None]) & (cx < x1[..., None])  # [M, T, w]
    in_r = (cy + PATCH > y0[..., None]) & (cy < y1[..., None])  # [M, T, h]
    return in_r[..., :, None] & in_c[..., None, :] & present[..., None, None]


def _latent_frame_union(per_pixel_frame: Tensor) -> Tensor:
    """OR over the pixel frames each latent frame covers: `[M, T, ...]` -> `[M, T_lat, ...]`."""
    m, t = per_pixel_frame.shape[:2]
    rest = per_pixel_frame.shape[2:]
    head = per_pixel_frame[:, :1]
    tail = per_pixel_frame[:, 1:].reshape(m, (t - 1) // 4, 4, *rest).any(2)
    return torch.cat([head, tail], 1)


def _pixel_frames_of(j: int) -> slice:
    return slice(0, 1) if j == 0 else slice(4 * j - 3, 4 * j + 1)


def _pool(mask: Tensor) -> Tensor:
    """Occupancy of each 16x16 patch: `[..., H, W]` -> float `[..., h, w]`."""
    *lead, hh, ww = mask.shape
    m = mask.float().reshape(*lead, hh // PATCH, PATCH, ww // PATCH, PATCH)
    return m.mean((-3, -1))


def build_token_layout(
    reference_masks: Tensor,
    track_boxes: Tensor,
    binding: Sequence[int],
    *,
    background: bool = True,
    track_masks: Tensor | None = None,
) -> TokenLayout:
    """Token groups for reference masks bool `[N, H, W]`, track boxes float `[M, T, 4]`
    (xyxy pixels, NaN rows = absent) and `binding` (identity index per track).

    track_masks bool `[M, T, H, W]` (optional) gives the AGF soft labels (paper Eq. 5).
    background=False drops the background REFERENCE frame only; the video background
    group (every video token is a background candidate) stays. See docs/tsda.md.
    """
    if not isinstance(reference_masks, Tensor) or reference_masks.dim() != 3:
        shape = tuple(reference_masks.shape) if isinstance(reference_masks, Tensor) else type(reference_masks)
        raise AnyCrowdError(
            f"reference_masks must be a [N, H, W] mask tensor (one mask per identity), got {shape}."
        )
    n, height, width = reference_masks.shape
    if n < 1:
        raise AnyCrowdError("No reference identities: give at least one identity mask.")
    if height % PATCH or width % PATCH:
        raise AnyCrowdError(
            f"Frame size {width}x{height} is not a multiple of 16: resize or crop the reference and "
            f"driving video to multiples of 16 (e.g. {width // PATCH * PATCH}x{height // PATCH * PATCH})."
        )
    if not isinstance(track_boxes, Tensor) or track_boxes.dim() != 3 or track_boxes.shape[-1] != 4:
        shape = tuple(track_boxes.shape) if isinstance(track_boxes, Tensor) else type(track_boxes)
        raise AnyCrowdError(f"track_boxes must be [M, T, 4] xyxy pixel boxes, got {shape}.")
    m, t = int(track_boxes.shape[0]), int(track_boxes.shape[1])
    if t < 1 or (t - 1) % 4:
        lo = max(1, (t - 1) // 4 * 4 + 1)
        raise AnyCrowdError(
            f"The driving video has {t} frames; Wan needs 4n+1 frames: trim it to {lo} "
            f"or pad it to {lo + 4} frames."
        )
    binding = [int(b) for b in binding]
    example = [i % n for i in range(m)]
    if len(binding) != m:
        raise AnyCrowdError(
            f"binding has {len(binding)} entries but there are {m} tracks: give one identity index "
            f"per track, e.g. binding={example}."
        )
    bad = [b for b in binding if not 0 <= b < n]
    if bad:
        raise AnyCrowdError(
            f"binding refers to identities {bad} but there are only {n} reference masks (indices "
            f"0..{n - 1}): fix the binding, e.g. binding={example}, or add reference masks."
        )
    boxes = track_boxes.float().cpu()
    finite = ~torch.isnan(boxes).any(-1)
    if (finite & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))).any():
        raise AnyCrowdError(
            "Some track boxes have x1 < x0 or y1 < y0: boxes must be xyxy pixels (if yours are "
            "xywh, convert with x1 = x + w, y1 = y + h)."
        )
    if track_masks is not None:
        if track_masks.dim() != 4 or tuple(track_masks.shape[:2]) != (m, t):
            raise AnyCrowdError(
                f"track_masks must be [M, T, H, W] = [{m}, {t}, H, W] like track_boxes, got "
                f"{tuple(track_masks.shape)}: give one mask per track and driving frame."
            )
        if tuple(track_masks.shape[2:]) != (height, width):
            raise AnyCrowdError(
                f"track masks are {track_masks.shape[3]}x{track_masks.shape[2]} but the reference masks "
                f"are {width}x{height}: resize the driving video (and its masks) to the reference size."
            )

    ref = _as_bool(reference_masks.cpu())
    empty = [k for k in range(n) if not ref[k].any()]
    if empty:
        raise AnyCrowdError(
            f"Reference masks of identities {empty} are empty: draw a mask for every identity or "
            f"remove the identity (and its entries in the binding)."
        )
    h, w = height // PATCH, width // PATCH
    hw = h * w
    t_lat = (t - 1) // 4 + 1

    occ = _pool(ref).reshape(n, hw)
    ref_in = occ >= REF_THRESHOLD
    best = occ.argmax(1)
    ref_in[torch.arange(n), best] |= ~ref_in.any(1)  # keep the most covered token of tiny masks

    tracks_of = tuple(tuple(i for i, b in enumerate(binding) if b == k) for k in range(n))
    track_tok = _latent_frame_union(_box_token_masks(boxes, height, width)) if m else None
    ident_tok = torch.zeros(n, t_lat * hw, dtype=torch.bool)
    for k in range(n):
        if tracks_of[k]:
            ident_tok[k] = track_tok[list(tracks_of[k])].any(0).reshape(-1)

    nb = int(background)
    video_start = (n + nb) * hw
    ref_tokens = tuple(k * hw + torch.nonzero(ref_in[k]).flatten() for k in range(n))
    void_tokens = tuple(k * hw + torch.nonzero(~ref_in[k]).flatten() for k in range(n))
    bg_ref = torch.arange(n * hw, (n + 1) * hw) if background else torch.zeros(0, dtype=torch.long)
    vid_tokens = tuple(video_start + torch.nonzero(ident_tok[k]).flatten() for k in range(n))

    member = ident_tok.t()  # [V, N]
    video_groups, candidates = _video_tables(member, video_start)

    soft = None
    if track_masks is not None:
        soft = _soft_labels(_as_bool(track_masks.cpu()), tracks_of, candidates, t_lat, n)

    return TokenLayout(
        num_identities=n, num_tracks=m, background=background, frame_size=(height, width),
        grid=(h, w), pixel_frames=t, video_frames=t_lat, identity_tracks=tracks_of,
        ref_tokens=ref_tokens, void_tokens=void_tokens, bg_ref_tokens=bg_ref, vid_tokens=vid_tokens,
        video_groups=video_groups, candidates=candidates, soft_labels=soft,
    )


def _video_tables(member: Tensor, video_start: int) -> tuple[tuple, Tensor]:
    """`video_groups` and `candidates` (see TokenLayout) of bool `[V, N]` video-token membership."""
    n = member.shape[1]
    sets, inverse = torch.unique(member, dim=0, return_inverse=True)
    video_groups = tuple(
        (tuple(int(i) for i in torch.nonzero(sets[g]).flatten()),
         video_start + torch.nonzero(inverse == g).flatten())
        for g in range(len(sets))
    )
    # candidates: identities ascending, then background (= n); -1 padded to the widest token
    ext = torch.cat([member, torch.ones(len(member), 1, dtype=torch.bool)], 1)
    ids = torch.where(ext, torch.arange(n + 1), torch.full((n + 1,), n + 1)).sort(1).values
    c_max = int(ext.sum(1).max())
    return video_groups, ids[:, :c_max].masked_fill(ids[:, :c_max] > n, -1)


def window_layout(layout: TokenLayout, video_frames: Sequence[int]) -> TokenLayout:
    """The layout of the sequence [all reference frames | latent video frames `video_frames`
    of `layout`, in that order] (a context window of the clip `layout` was built for).

    Every token keeps the groups it has in the whole clip, so for a contiguous window this
    is exactly what `build_token_layout` gives on the window's boxes
    (`long_video.window_track_boxes`), soft labels included (rows of the clip's).
    """
    frames = [int(f) for f in video_frames]
    if not frames or min(frames) < 0 or max(frames) >= layout.video_frames:
        raise AnyCrowdError(
            f"A window needs latent video frames within 0..{layout.video_frames - 1} of the layout, got "
            f"{frames}: build the layout for the whole clip the windows are taken from."
        )
    hw, start, n = layout.tokens_per_frame, layout.video_start, layout.num_identities
    local = (torch.tensor(frames)[:, None] * hw + torch.arange(hw)).flatten()  # clip-local video token per window token
    member = torch.zeros(layout.num_video_tokens, n, dtype=torch.bool)
    for k in range(n):
        member[layout.vid_tokens[k].cpu() - start, k] = True
    member = member[local]
    video_groups, candidates = _video_tables(member, start)
    soft = None
    if layout.soft_labels is not None:  # same categories in the same order, fewer padding columns
        soft = layout.soft_labels.cpu()[local][:, : candidates.shape[1]]
    return replace(
        layout.to("cpu"), pixel_frames=4 * (len(frames) - 1) + 1, video_frames=len(frames),
        vid_tokens=tuple(start + torch.nonzero(member[:, k]).flatten() for k in range(n)),
        video_groups=video_groups, candidates=candidates, soft_labels=soft,
    )


def invisible_bound_tracks(track_boxes: Tensor, binding: Sequence[int], height: int,
                           width: int) -> list[tuple[int, int]]:
    """(track, identity) of every bound track (`[M, T, 4]` xyxy px, NaN = absent; binding:
    identity per track) whose boxes cover no video token of the `width` x `height` frame in
    any frame: its identity would be bound to nothing there."""
    boxes = track_boxes.float().cpu()
    require_finite(boxes[~torch.isnan(boxes)], "track_boxes", "Boxes are xyxy pixels; mark absence with NaN rows.")
    visible = _box_token_masks(boxes, height, width).flatten(1).any(1)
    return [(i, int(k)) for i, k in enumerate(binding) if i < len(visible) and not visible[i]]


def check_tracks_visible(track_boxes: Tensor, binding: Sequence[int], height: int, width: int) -> None:
    """AnyCrowdError naming every bound track whose boxes cover no video token of the
    `width` x `height` frame in any frame: its identity would be bound to nothing and never
    appear. Checked on the whole driving video (a long video's window may lack a track)."""
    lost = invisible_bound_tracks(track_boxes, binding, height, width)
    if lost:
        listed = ", ".join(f"track {i} (identity {b})" for i, b in lost)
        raise AnyCrowdError(
            f"{listed}: the boxes never overlap the {width}x{height} frame in any frame, so the bound identity "
            "would not appear at all. Boxes are xyxy pixels of the driving video at the generation size: fix or "
            "rescale them, or leave that track out of the binding."
        )


def _soft_labels(masks: Tensor, tracks_of, candidates: Tensor, t_lat: int, n: int) -> Tensor:
    """Occupancy of each candidate in each video token's pixel patch over the pixel frames of
    its latent frame, renormalised over the token's candidates (uniform if all zero)."""
    hw = candidates.shape[0] // t_lat
    occ = torch.zeros(t_lat, hw, n + 1)
    for j in range(t_lat):
        frames = masks[:, _pixel_frames_of(j)]  # [M, F, H, W]
        for k in range(n):
            if tracks_of[k]:
                occ[j, :, k] = _pool(frames[list(tracks_of[k])].any(0)).mean(0).reshape(-1)
        union = frames.any(0)
        occ[j, :, n] = 1 - _pool(union).mean(0).reshape(-1)
    occ = occ.reshape(-1, n + 1)
    valid = candidates >= 0
    y = torch.gather(occ, 1, candidates.clamp(min=0)) * valid
    total = y.sum(1, keepdim=True)
    uniform = valid.float() / valid.sum(1, keepdim=True)
    return torch.where(total > 0, y / total.clamp(min=1e-12), uniform)
