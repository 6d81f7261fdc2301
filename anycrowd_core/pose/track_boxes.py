"""Per-track boxes for the token layout, and small helpers to cut and reorder `PoseTracks`.

`build_token_layout` takes pixel-frame boxes `[M, T, 4]` and forms the per-latent-frame
union itself (token masks OR-ed over the 4 pixel frames of each latent frame), so the pose
side only pads, clips and marks absent frames here; it does not build latent-frame boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import AnyCrowdError
from .types import PoseTracks


def padded_track_boxes(tracks: PoseTracks, pad: float = 0.1) -> Tensor:
    """Float `[M, T, 4]` xyxy pixel boxes, each side pushed out by `pad` x the box's width
    (left/right) or height (top/bottom), clipped to the frame; NaN where the track is absent
    (not present, or nothing of the box left inside the frame). Input of `build_token_layout`."""
    if not isinstance(tracks, PoseTracks):
        raise AnyCrowdError(f"padded_track_boxes needs PoseTracks, got {type(tracks).__name__}.")
    if not 0 <= pad <= 2:
        raise AnyCrowdError(f"Box padding must be between 0 and 2 (fraction of the box size), got {pad}.")
    b = tracks.boxes.float()
    w = (b[..., 2] - b[..., 0]).unsqueeze(-1)
    h = (b[..., 3] - b[..., 1]).unsqueeze(-1)
    out = b + pad * torch.cat([-w, -h, w, h], -1)
    out[..., 0::2] = out[..., 0::2].clamp(0, tracks.width)
    out[..., 1::2] = out[..., 1::2].clamp(0, tracks.height)
    ok = tracks.present.bool() & ~torch.isnan(out).any(-1)
    ok &= (out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1])
    return torch.where(ok[..., None], out, torch.full_like(out, float("nan")))


def select_tracks(tracks: PoseTracks, indices: Sequence[int]) -> PoseTracks:
    """The tracks at `indices` (positions in `tracks`), in that order; ids travel with them.

    Use to drop tracks or reorder them before binding; duplicates are refused (bind one
    track to several identities in the binding instead)."""
    idx = [int(i) for i in indices]
    m = tracks.num_tracks
    bad = [i for i in idx if not 0 <= i < m]
    if bad:
        raise AnyCrowdError(f"Track positions {bad} do not exist: there are {m} tracks (0..{m - 1}).")
    if len(set(idx)) != len(idx):
        raise AnyCrowdError(
            f"Track positions {idx} name a track twice; to give one motion to several identities, "
            "bind it several times instead of duplicating the track."
        )
    sel = torch.tensor(idx, dtype=torch.long)
    ids = tracks.track_ids if len(tracks.track_ids) == m else list(range(m))
    return PoseTracks(tracks.keypoints[sel], tracks.boxes[sel], tracks.present[sel], tracks.height,
                      tracks.width, [ids[i] for i in idx])


def slice_tracks(tracks: PoseTracks, start: int, stop: int) -> PoseTracks:
    """Frames `start..stop-1` of every track (a segment of a long video). Tracks absent in the
    whole segment are kept, so track positions and the binding stay valid across segments."""
    t = tracks.num_frames
    if not 0 <= start < stop <= t:
        raise AnyCrowdError(
            f"Frame range {start}..{stop} is outside the tracks' {t} frames: use 0 <= start < stop <= {t}."
        )
    return PoseTracks(tracks.keypoints[:, start:stop], tracks.boxes[:, start:stop], tracks.present[:, start:stop],
                      tracks.height, tracks.width, list(tracks.track_ids))
