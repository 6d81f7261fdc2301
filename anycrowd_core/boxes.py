"""Manual per-character boxes over time: a boxes text/JSON or per-character mask sequences
-> track boxes `[M, T, 4]` (xyxy pixels, NaN = absent), the input `build_token_layout` takes.

For users who draw boxes themselves (and until/besides pose tracking). Keyframes are
linearly interpolated. Syntax with examples: BOXES_SYNTAX (also in docs/comfyui_nodes.md).
"""

from __future__ import annotations

import json
import math
import re
import reprlib

import torch
from torch import Tensor

from .errors import AnyCrowdError

BOXES_SYNTAX = """Boxes syntax (xyxy pixels of the control video as you connect it; one character per line):
  120,40,260,470                       the same box in every frame
  0: 120,40,260,470; 80: 300,40,440,470  keyframes (0-based frame: box), linear in between
  0: 120,40,260,470; 30: none; 60: 500,40,640,470   'none' = absent from that keyframe on
Lines starting with # are comments. All numbers in 0..1 = fractions of width/height.
JSON works too: [[x0,y0,x1,y1], ...] (static), [[box or null per frame], ...] or
[{"0": [x0,y0,x1,y1], "80": [...]}, ...] (keyframes), one entry per character."""

_NONE_WORDS = {"none", "null", "-", "absent", "off"}
# A number as typed: digits with an optional fraction and exponent (no inf / nan / 1_000 / 0x10).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# A keyframe: a whole frame number in digits ("80"; "80.0" is read as 80).
_FRAME = re.compile(r"\+?(\d+)(?:\.0*)?")
# Coordinates are pixels of a video frame (or fractions 0..1): anything larger is a typo, and
# float32 (the boxes' dtype) would turn numbers past ~3e38 into infinity.
_MAX_COORD = 1e6
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong, _SHOW.maxlevel, _SHOW.maxlist = 60, 60, 40, 3, 8


def center_crop_region(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the centred crop of a src frame with the aspect of dst — the crop
    ComfyUI's common_upscale(crop="center") takes before resizing (so boxes follow pixels)."""
    src_aspect, dst_aspect = src_w / src_h, dst_w / dst_h
    x0 = y0 = 0
    if src_aspect > dst_aspect:
        x0 = round((src_w - src_w * (dst_aspect / src_aspect)) / 2)
    elif src_aspect < dst_aspect:
        y0 = round((src_h - src_h * (src_aspect / dst_aspect)) / 2)
    return y0, x0, src_h - 2 * y0, src_w - 2 * x0


def resize_boxes(boxes: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Tensor:
    """Map xyxy pixel boxes `[..., 4]` from a (H, W) frame to a (H', W') frame resized with a
    centred crop (center_crop_region). Boxes are clipped to the frame; a box entirely in
    the cropped-away border becomes NaN (absent)."""
    (sh, sw), (dh, dw) = src_size, dst_size
    y0, x0, ch, cw = center_crop_region(sh, sw, dh, dw)
    b = boxes.float().clone()
    sx, sy = dw / cw, dh / ch
    b[..., 0::2] = ((b[..., 0::2] - x0) * sx).clamp(0, dw)
    b[..., 1::2] = ((b[..., 1::2] - y0) * sy).clamp(0, dh)
    empty = (b[..., 2] <= b[..., 0]) | (b[..., 3] <= b[..., 1])
    return torch.where(empty[..., None], torch.full_like(b, float("nan")), b)


def _error(message: str) -> AnyCrowdError:
    return AnyCrowdError(f"{message}\n{BOXES_SYNTAX}")


def _show(value) -> str:
    """repr for messages, shortened (a pasted 5000-digit number or deep JSON stays readable)."""
    return _SHOW.repr(value)


def _number(value, where: str, box) -> float:
    """A finite coordinate from a typed number or a JSON number; AnyCrowdError naming the
    number and its box otherwise (words, inf/nan, bools, numbers past +-_MAX_COORD)."""
    if isinstance(value, str):
        ok = _NUMBER.fullmatch(value.strip()) is not None
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            number = float(value)
        except OverflowError:  # a JSON integer past 1e308
            number = math.inf
        except ValueError:  # pragma: no cover - the pattern only lets numbers through
            ok = False
    non_finite = (f"{where}: box {_show(box)} has a non-finite number {_show(value)} (NaN, infinity or too "
                  "large to represent); give a finite number.")
    if not ok:
        if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
            raise _error(non_finite)
        raise _error(f"{where}: {_show(box)} is not 4 numbers x0,y0,x1,y1: {_show(value)} is not a number.")
    if not math.isfinite(number):
        raise _error(non_finite)
    if abs(number) > _MAX_COORD:
        raise _error(f"{where}: {_show(value)} in box {_show(box)} is out of range: coordinates are pixels of "
                     f"the control video (or fractions 0..1) and lie within -{_MAX_COORD:.0f}..{_MAX_COORD:.0f}.")
    return number


def _box(values, where: str) -> list[float] | None:
    """A box from 4 numbers (or None for absent); checks xyxy order."""
    if values is None or (isinstance(values, str) and values.strip().lower() in _NONE_WORDS):
        return None
    if isinstance(values, str):
        values = values.strip()
        parts = [p for p in re.split(r"[,\s]+", values.strip().strip("[]()")) if p]
    else:
        parts = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(parts) != 4:
        raise _error(f"{where}: a box needs 4 numbers x0,y0,x1,y1, got {_show(values)}.")
    box = [_number(p, where, values) for p in parts]
    # the order is checked on the float32 values the boxes are stored in
    x0, y0, x1, y1 = torch.tensor(box, dtype=torch.float32).tolist()
    if x1 <= x0 or y1 <= y0:
        raise _error(
            f"{where}: box {_show(values)} has x1 <= x0 or y1 <= y0. Boxes are corners x0,y0,x1,y1 "
            "(if yours are x,y,width,height use x,y,x+width,y+height)."
        )
    return box


def _frame_index(key, where: str) -> int:
    text = str(key).strip()
    whole = _FRAME.fullmatch(text)
    if whole is None:
        if _NUMBER.fullmatch(text) is None:
            raise _error(f"{where}: keyframe {_show(key)} is not a frame number.")
        raise _error(f"{where}: keyframe {_show(key)} must be a whole frame number >= 0 (digits, e.g. 80).")
    digits = whole.group(1).lstrip("0") or "0"
    if len(digits) > 12:
        raise _error(f"{where}: keyframe {_show(key)} is too large for a frame number.")
    return int(digits)


def _from_keyframes(keys: dict[int, list[float] | None], num_frames: int, where: str) -> Tensor:
    """`[T, 4]` from {frame: box | None}: linear between two boxes, held before the first and
    after the last keyframe; after a None keyframe absent until the next keyframe."""
    late = [f for f in keys if f >= num_frames]
    if late:
        raise _error(
            f"{where}: keyframe {max(late)} is past the last frame ({num_frames - 1}; frames count "
            f"from 0 and the video has {num_frames} frames)."
        )
    out = torch.full((num_frames, 4), float("nan"))
    frames = sorted(keys)
    first = keys[frames[0]]
    if first is not None:
        out[: frames[0]] = torch.tensor(first)
    for a, b in zip(frames, frames[1:]):
        ba, bb = keys[a], keys[b]
        if ba is None:
            continue
        if bb is None:
            out[a:b] = torch.tensor(ba)
            continue
        w = torch.arange(b - a, dtype=torch.float64)[:, None] / (b - a)
        out[a:b] = ((1 - w) * torch.tensor(ba, dtype=torch.float64) + w * torch.tensor(bb, dtype=torch.float64)).float()
    last = keys[frames[-1]]
    if last is not None:
        out[frames[-1]:] = torch.tensor(last)
    return out


def _text_line(line: str, num_frames: int, where: str) -> Tensor:
    if ":" not in line:
        box = _box(line, where)
        if box is None:
            raise _error(f"{where}: a character line cannot be only 'none'; delete the line instead.")
        return torch.tensor(box).expand(num_frames, 4).clone()
    keys: dict[int, list[float] | None] = {}
    for part in (p.strip() for p in line.split(";")):
        if not part:
            continue
        if ":" not in part:
            raise _error(f"{where}: {part!r} has no 'frame:' in front (write e.g. '0: {part}').")
        frame, box = part.split(":", 1)
        f = _frame_index(frame.strip(), where)
        if f in keys:
            raise _error(f"{where}: keyframe {f} is given twice.")
        keys[f] = _box(box, f"{where}, keyframe {f}")
    if not keys:
        raise _error(f"{where}: no keyframes found.")
    return _from_keyframes(keys, num_frames, where)


def _json_entry(entry, num_frames: int, where: str) -> Tensor:
    if isinstance(entry, dict):
        if not entry:
            raise _error(f"{where}: empty keyframe dictionary.")
        keys = {}
        for k, v in entry.items():
            f = _frame_index(k, where)
            if f in keys:
                raise _error(f"{where}: keyframe {f} is given twice.")
            keys[f] = _box(v, f"{where}, keyframe {f}")
        return _from_keyframes(keys, num_frames, where)
    if isinstance(entry, list) and entry and all(isinstance(v, (int, float)) for v in entry):
        return torch.tensor(_box(entry, where)).expand(num_frames, 4).clone()
    if isinstance(entry, list) and all(v is None or isinstance(v, list) for v in entry):
        if len(entry) != num_frames:
            raise _error(
                f"{where}: {len(entry)} per-frame boxes but the video has {num_frames} frames: give "
                "one box (or null) per frame, or use keyframes."
            )
        rows = [_box(v, f"{where}, frame {t}") for t, v in enumerate(entry)]
        return torch.tensor([r if r is not None else [float("nan")] * 4 for r in rows], dtype=torch.float32)
    raise _error(f"{where}: {_show(entry)} is not a box, a list of boxes or a keyframe dict.")


def parse_boxes(text: str, num_frames: int, frame_size: tuple[int, int]) -> Tensor:
    """Boxes text/JSON -> float `[M, T, 4]` xyxy pixels of a (H, W) = frame_size frame,
    NaN rows where a character is absent. Raises AnyCrowdError with the syntax on errors."""
    if num_frames < 1:
        raise AnyCrowdError(f"num_frames must be >= 1, got {num_frames}.")
    text = (text or "").strip()
    if not text:
        raise _error("No boxes given: write one line per character.")
    tracks: list[Tensor] = []
    if text[0] in "[{":
        try:
            # integers past float range are read as floats (infinity): refused as non-finite like
            # NaN / Infinity (Python's reader accepts those), not a traceback from int -> float
            data = json.loads(text, parse_int=lambda t: int(t) if len(t) < 300 else float(t))
        except json.JSONDecodeError as exc:
            raise _error(f"The boxes look like JSON but do not parse: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        except RecursionError:
            raise _error("The boxes JSON is nested too deeply: give a list of boxes, one entry per character.") from None
        if isinstance(data, dict):
            data = [data]  # one character given as a keyframe dict
        if not isinstance(data, list) or not data:
            raise _error("JSON boxes must be a non-empty list with one entry per character.")
        if all(isinstance(v, (int, float)) for v in data):
            data = [data]  # one character given as a single box
        where = [f"character {i}" for i in range(len(data))]
        tracks = [_json_entry(e, num_frames, w) for e, w in zip(data, where)]
    else:
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if not lines:
            raise _error("No boxes given (only comments): write one line per character.")
        where = [f"character {i} (line '{ln[:40]}')" for i, ln in enumerate(lines)]
        tracks = [_text_line(ln, num_frames, w) for ln, w in zip(lines, where)]
    boxes = torch.stack(tracks)
    finite = boxes[~torch.isnan(boxes)]
    if finite.numel() and float(finite.max()) <= 1.0:
        h, w = frame_size
        boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype)
    # every keyframe box is checked, but float32 rounding can still collapse an interpolated or
    # scaled box that is a sliver of a pixel wide
    present = ~torch.isnan(boxes).any(-1)
    flat = present & ((boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1]))
    if flat.any():
        m, t = (int(i) for i in flat.nonzero()[0])
        raise _error(f"{where[m]}: the box at frame {t} is {boxes[m, t].tolist()}, narrower than float precision; "
                     "draw boxes at least a pixel wide and high.")
    return boxes


def format_boxes(boxes: Tensor, every: int = 4) -> str:
    """`[M, T, 4]` pixel boxes (NaN = absent) -> the keyframe syntax `parse_boxes` reads:
    one line per character, a keyframe every `every` frames, at the last frame and wherever
    the character appears or leaves ('none'). Coordinates rounded to whole pixels, so with
    every=1 integer boxes round-trip exactly; a box that rounds to zero width or height is
    written one pixel wide or high (so the text always parses back)."""
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise AnyCrowdError(f"format_boxes expects [characters, frames, 4] boxes, got {tuple(boxes.shape)}.")
    if torch.isinf(boxes).any():
        raise AnyCrowdError("format_boxes got infinite box coordinates; boxes must be finite (NaN = absent).")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise AnyCrowdError(f"format_boxes: every must be a whole number >= 1 (frames between keyframes), got {every!r}.")
    lines = []
    for track in boxes:
        absent = torch.isnan(track).any(dim=1)
        parts, previous = [], None
        for t in range(track.shape[0]):
            state = bool(absent[t])
            edge = state != previous
            if state and edge:
                parts.append(f"{t}: none")
            elif not state and (edge or t % every == 0 or t == track.shape[0] - 1):
                x0, y0, x1, y1 = (int(round(float(v))) for v in track[t])
                parts.append(f"{t}: {x0},{y0},{max(x1, x0 + 1)},{max(y1, y0 + 1)}")
            previous = state
        lines.append("; ".join(parts))
    return "\n".join(lines)


def has_boxes(text: str | None) -> bool:
    """True if the boxes text has a line that is not blank or a comment."""
    return any(ln.strip() and not ln.strip().startswith("#") for ln in (text or "").splitlines())


def validate_boxes_text(text: str, num_frames: int) -> str | None:
    """None if `text` is empty (or only comments) or parses for `num_frames` frames, else the
    error message (for a node's early validation; an empty text is checked later, when it is
    known whether track masks are connected)."""
    if not has_boxes(text):
        return None
    try:
        parse_boxes(text, num_frames, frame_size=(1, 1))
    except AnyCrowdError as exc:
        return str(exc)
    return None


def boxes_from_masks(track_masks: Tensor) -> Tensor:
    """Tight xyxy pixel boxes `[M, T, 4]` of bool masks `[M, T, H, W]`; NaN rows where empty.

    A pixel (x, y) spans [x, x+1), so a one-pixel mask at (x, y) gives (x, y, x+1, y+1).
    """
    if track_masks.dim() != 4:
        raise AnyCrowdError(f"track_masks must be [M, T, H, W], got shape {tuple(track_masks.shape)}.")
    m = track_masks.bool()
    cols, rows = m.any(2), m.any(3)  # [M, T, W], [M, T, H]
    present = cols.any(-1)

    def span(a: Tensor) -> tuple[Tensor, Tensor]:
        n = a.shape[-1]
        idx = torch.arange(n, dtype=torch.float32, device=a.device)
        lo = torch.where(a, idx, torch.full_like(idx, float(n))).amin(-1)
        hi = torch.where(a, idx + 1, torch.zeros_like(idx)).amax(-1)
        return lo, hi

    x0, x1 = span(cols)
    y0, y1 = span(rows)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(present[..., None], boxes, torch.full_like(boxes, float("nan")))


def boxes_from_mask_sequences(masks: Tensor, num_frames: int) -> Tensor:
    """Per-character mask sequences -> tight boxes `[M, T, 4]` px of the masks' own frame.

    masks: `[M, T, H, W]`, or a ComfyUI MASK batch `[M*T, H, W]` ordered character by
    character (all T frames of character 0, then character 1, ...). Values > 0.5 count.
    Empty masks give NaN rows (the character is absent in that frame).
    """
    if masks.ndim == 3:
        total = int(masks.shape[0])
        if total % num_frames:
            raise AnyCrowdError(
                f"track_masks has {total} masks, not a multiple of the length ({num_frames} frames): give "
                f"all {num_frames} masks of character 0, then all of character 1, ... "
                f"(e.g. {2 * num_frames} masks for 2 characters)."
            )
        masks = masks.reshape(total // num_frames, num_frames, *masks.shape[1:])
    if masks.ndim != 4 or int(masks.shape[1]) != num_frames:
        raise AnyCrowdError(
            f"track_masks must be [characters, {num_frames}, H, W] or a MASK batch of characters x "
            f"{num_frames} masks; got shape {tuple(masks.shape)}."
        )
    bool_masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    return boxes_from_masks(bool_masks.cpu())
