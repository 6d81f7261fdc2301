"""The training manifest: one JSON object per line naming a clip and its masks, references,
tracks and pose source (keys: docs/training_data.md). Paths resolve against the manifest's
folder; a bad line becomes a skipped entry, not a failed run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from anycrowd_core.errors import AnyCrowdError

from .prepare_readers import SkipSample

_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,120}$")


@dataclass
class ManifestSample:
    """One manifest line with paths resolved against the manifest's folder."""

    line: int
    id: str
    clip: Path
    masks: Path
    reference_frame: int | None = None
    reference_image: Path | None = None
    reference_masks: Path | None = None
    tracks: Path | None = None
    pose_video: Path | None = None
    keypoints: Path | None = None
    frames: tuple[int, int | None] | None = None
    prompt: str | None = None
    raw: dict = field(default_factory=dict)

    def input_files(self) -> list[Path]:
        return [p for p in (self.clip, self.masks, self.reference_image, self.reference_masks,
                            self.tracks, self.pose_video, self.keypoints) if p is not None]


MANIFEST_KEYS = {"id", "clip", "masks", "reference_frame", "reference_image", "reference_masks",
                 "tracks", "pose_video", "keypoints", "frames", "prompt"}


def parse_manifest_line(text: str, line: int, root: Path) -> ManifestSample:
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise SkipSample(f"manifest line {line} is not JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise SkipSample(f"manifest line {line} must be a JSON object")
    unknown = set(d) - MANIFEST_KEYS
    if unknown:
        raise SkipSample(f"unknown keys {sorted(unknown)}; allowed: {sorted(MANIFEST_KEYS)}")
    for key in ("clip", "masks"):
        if not isinstance(d.get(key), str):
            raise SkipSample(f"'{key}' (a path) is required")
    sid = str(d.get("id") or f"{line:06d}")
    if not _ID_RE.match(sid):
        raise SkipSample(f"id {sid!r} may only use letters, digits, '.', '_' and '-'")

    def path(key):
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise SkipSample(f"'{key}' must be a path string or null")
        return (root / v) if not Path(v).is_absolute() else Path(v)

    ref_frame = d.get("reference_frame")
    if ref_frame is not None and (not isinstance(ref_frame, int) or isinstance(ref_frame, bool)):
        raise SkipSample("'reference_frame' must be an integer frame index")
    if ref_frame is not None and d.get("reference_image") is not None:
        raise SkipSample("give either 'reference_frame' or 'reference_image', not both")
    if (d.get("reference_image") is None) != (d.get("reference_masks") is None):
        raise SkipSample("'reference_image' needs 'reference_masks' (one mask per identity) and vice versa")
    frames = d.get("frames")
    if frames is not None:
        ok = isinstance(frames, list) and len(frames) == 2 and isinstance(frames[0], int) and frames[0] >= 0 \
            and (frames[1] is None or (isinstance(frames[1], int) and frames[1] > 0))
        if not ok:
            raise SkipSample("'frames' must be [start, count] (count may be null = to the end)")
        frames = (frames[0], frames[1])
    prompt = d.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise SkipSample("'prompt' must be a string")
    return ManifestSample(
        line=line, id=sid, clip=path("clip"), masks=path("masks"), reference_frame=ref_frame,
        reference_image=path("reference_image"), reference_masks=path("reference_masks"),
        tracks=path("tracks"), pose_video=path("pose_video"), keypoints=path("keypoints"),
        frames=frames, prompt=prompt, raw=d,
    )


def read_manifest(manifest: Path) -> tuple[list[ManifestSample], list[dict]]:
    """(samples, skipped lines as {"line", "id", "clip", "reason"}) of a JSONL manifest;
    blank lines and `#` comments are ignored. Raises AnyCrowdError when ids repeat."""
    manifest = Path(manifest)
    root = manifest.parent
    samples: list[ManifestSample] = []
    skipped: list[dict] = []
    for i, text_line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not text_line.strip() or text_line.lstrip().startswith("#"):
            continue
        try:
            samples.append(parse_manifest_line(text_line, i, root))
        except AnyCrowdError as exc:
            skipped.append({"line": i, "id": "?", "clip": None, "reason": str(exc)})
    ids = [s.id for s in samples]
    dup = {x for x, n in Counter(ids).items() if n > 1}
    if dup:
        raise AnyCrowdError(f"manifest ids {sorted(dup)} appear more than once: every sample needs its own id.")
    return samples, skipped
