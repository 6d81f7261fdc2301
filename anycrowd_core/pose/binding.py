"""Track -> identity binding: automatic (left-to-right order, or box overlap when the reference
frame comes from the driving video) or written in a small syntax covering recasting,
one-to-many and many-to-one (AnyCrowd appendix, Fig. 12). Syntax in docs/pose_rendering_binding.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..errors import AnyCrowdError
from .tracking import box_iou
from .types import PoseTracks

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MODES = ("left_to_right", "overlap")
SYNTAX_HELP = (
    'Binding syntax: IDENTITY=TRACK[+TRACK...][@OFFSET], clauses separated by "," ";" or new lines. '
    "Identities are letters (A = first reference mask), tracks the numbers shown in the preview (T0, T1, ...); "
    "OFFSET shifts a copy of the motion: +0.3w / -0.1h (fractions of the frame width / height), "
    "+40px / -20py (pixels, horizontal / vertical). Examples: \"A=0, B=1\" (one each); \"A=1, B=0\" "
    "(recast); \"A=0+1, B=2\" (A on two tracks); \"A=0, B=0@+0.3w\" (B repeats track 0's motion "
    "30% of the width to the right)."
)
_UNITS = ("px", "py", "w", "h")  # longest first for the scanner
# Largest shift accepted, px: a whole frame already pushes a copy out of the picture; past this
# an offset is a typo (and float32, the offsets' dtype, overflows near 3e38).
_MAX_OFFSET = 1e6
_MAX_TRACK_DIGITS = 9


@dataclass
class Binding:
    """Which reference identity animates which motion, for M' output tracks.

    identities: identity index (0..N-1; letter A = 0) of each output track.
    sources:    index into the input tracks of the motion each output track uses.
    offsets:    float `[M', 2]` (dx, dy) px by which that motion is shifted (zero for plain tracks).
    tracks:     the M' output tracks: keypoints/boxes/presence of the (shifted) motions,
                track_ids 0..M'-1. Render the control video and build the token layout from these.
    num_identities: N, the number of reference identities.
    unbound:    indices of input tracks no identity uses (neither rendered nor animated).
    offset_text: the offset as written ("+0.3w"), "" for none, per output track.
    source_ids: the input tracks' ids (as shown in the preview) of `sources`.
    """

    identities: list[int]
    sources: list[int]
    offsets: Tensor
    tracks: PoseTracks
    num_identities: int
    unbound: list[int] = field(default_factory=list)
    offset_text: list[str] = field(default_factory=list)
    source_ids: list[int] = field(default_factory=list)

    @property
    def boxes(self) -> Tensor:
        """`[M', T, 4]` xyxy px boxes of the output tracks (NaN where absent)."""
        return self.tracks.boxes

    def to_string(self) -> str:
        """The binding in the syntax (parses back to the same binding)."""
        return ", ".join(
            f"{identity_name(k)}={sid}" + (f"@{off}" if off else "")
            for k, sid, off in zip(self.identities, self.source_ids, self._offsets_text())
        )

    def labels(self) -> list[str]:
        """Preview labels per output track: "A T2", "B T0+0.3w"."""
        return [f"{identity_name(k)} T{sid}{off}" for k, sid, off in
                zip(self.identities, self.source_ids, self._offsets_text())]

    def _offsets_text(self) -> list[str]:
        if self.offset_text:
            return list(self.offset_text)
        out = []
        for dx, dy in self.offsets.tolist():
            out.append((f"{dx:+g}px" if dx else "") + (f"{dy:+g}py" if dy else ""))
        return out


def identity_name(k: int) -> str:
    """Letter of identity k (A = 0); "#k" past Z (those can only be bound automatically)."""
    return LETTERS[k] if 0 <= k < len(LETTERS) else f"#{k}"


def _syntax_error(text: str, pos: int, problem: str) -> AnyCrowdError:
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start: line_end if line_end >= 0 else len(text)]
    col = pos - line_start
    if len(line) > 80:  # a long line (a pasted 5000-digit number): show the part around the caret
        lo = max(0, col - 40)
        hi = lo + 80
        line = ("..." if lo else "") + line[lo:hi] + ("..." if hi < len(line) else "")
        col = col - lo + (3 if lo else 0)
    caret = " " * col + "^"
    return AnyCrowdError(
        f"Binding syntax error at character {pos + 1}: {problem}\n  {line}\n  {caret}\n{SYNTAX_HELP}"
    )


@dataclass
class _Clause:
    identity: int
    tracks: list[int]  # track ids as written
    offset: tuple[float, float, float, float]  # (dx px, dy px, dx frac w, dy frac h)
    offset_text: str
    pos: int


def _parse_clauses(text: str, num_identities: int) -> list[_Clause]:
    clauses: list[_Clause] = []
    i, n = 0, len(text)

    def skip_ws(j: int) -> int:
        while j < n and text[j] in " \t\r":
            j += 1
        return j

    def number(j: int, what: str, integer: bool) -> tuple[float, int]:
        m = (re.compile(r"\d+") if integer else re.compile(r"\d+(?:\.\d*)?|\.\d+")).match(text, j)
        if not m:
            found = repr(text[j]) if j < n else "the end"
            raise _syntax_error(text, j, f"expected {what}, found {found}.")
        digits = m.group()
        shown = digits if len(digits) <= 12 else digits[:12] + "..."
        if integer:
            if len(digits.lstrip("0")) > _MAX_TRACK_DIGITS:
                raise _syntax_error(text, j, f"track number {shown} is too large: tracks are numbered as "
                                             "shown in the preview (T0 -> 0).")
            return int(digits), m.end()
        value = float(digits)
        if not value <= _MAX_OFFSET:  # so many digits that it is a typo (or infinity)
            raise _syntax_error(text, j, f"offset number {shown} is out of range: offsets are fractions of "
                                         f"the frame (e.g. 0.3w) or pixels (at most {_MAX_OFFSET:.0f}px).")
        return value, m.end()

    while i < n:
        i = skip_ws(i)
        if i < n and text[i] in ",;\n":
            i += 1
            continue
        if i >= n:
            break
        start = i
        if not text[i].isalpha() or not text[i].isascii():
            raise _syntax_error(text, i, f"expected an identity letter (A, B, ...), found {text[i]!r}.")
        letter = text[i].upper()
        i += 1
        if i < n and text[i].isalpha():
            raise _syntax_error(text, i, "an identity is a single letter (A = first reference mask, B = second, ...).")
        k = LETTERS.index(letter)
        if k >= num_identities:
            names = ", ".join(identity_name(j) for j in range(min(num_identities, 26)))
            raise _syntax_error(
                text, start, f"identity {letter} does not exist: the reference has {num_identities} "
                f"identit{'y' if num_identities == 1 else 'ies'} ({names})."
            )
        i = skip_ws(i)
        if i >= n or text[i] != "=":
            found = repr(text[i]) if i < n else "the end"
            raise _syntax_error(text, i, f"expected '=' after identity {letter}, found {found}.")
        i = skip_ws(i + 1)
        tracks = []
        while True:
            tid, i = number(i, "a track number (as shown in the preview, T0 -> 0)", integer=True)
            tracks.append(int(tid))
            i = skip_ws(i)
            if i < n and text[i] == "+":
                i = skip_ws(i + 1)
                continue
            break
        dx = dy = fx = fy = 0.0
        off_text = ""
        if i < n and text[i] == "@":
            i = skip_ws(i + 1)
            off_start, terms = i, 0
            while i < n and text[i] not in ",;\n":
                sign = 1.0
                if text[i] in "+-":
                    sign = -1.0 if text[i] == "-" else 1.0
                    i = skip_ws(i + 1)
                elif terms:
                    raise _syntax_error(text, i, "expected '+' or '-' before the next offset term.")
                value, i = number(i, "an offset number (e.g. +0.3w or -40px)", integer=False)
                unit = next((u for u in _UNITS if text.startswith(u, i)), None)
                if unit is None:
                    raise _syntax_error(text, i, "expected an offset unit: w or h (fraction of the frame "
                                                 "width / height), px or py (pixels, horizontal / vertical).")
                i += len(unit)
                v = sign * value
                if unit == "px":
                    dx += v
                elif unit == "py":
                    dy += v
                elif unit == "w":
                    fx += v
                else:
                    fy += v
                terms += 1
                i = skip_ws(i)
            if not terms:
                raise _syntax_error(text, i, "expected an offset after '@' (e.g. @+0.3w).")
            off_text = re.sub(r"\s+", "", text[off_start:i])
            if off_text[0] not in "+-":
                off_text = "+" + off_text
        i = skip_ws(i)
        if i < n and text[i] not in ",;\n":
            raise _syntax_error(text, i, f"unexpected {text[i]!r}; separate clauses with ',' (e.g. \"A=0, B=1\").")
        clauses.append(_Clause(k, tracks, (dx, dy, fx, fy), off_text, start))
    return clauses


def _track_index(tracks: PoseTracks) -> dict[int, int]:
    ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
    return {int(t): i for i, t in enumerate(ids)}


def _shift_tracks(tracks: PoseTracks, sources: list[int], offsets: np.ndarray) -> PoseTracks:
    """Output tracks: copies of `sources`, shifted by `offsets` `[M', 2]` px."""
    height, width = int(tracks.height), int(tracks.width)
    idx = torch.tensor(sources, dtype=torch.long)
    kp = tracks.keypoints.float()[idx].clone()
    boxes = tracks.boxes.float()[idx].clone()
    present = tracks.present.bool()[idx].clone()
    for j, (dx, dy) in enumerate(offsets.tolist()):
        if dx == 0 and dy == 0:
            continue
        k = kp[j]
        valid = k[..., 2] > 0
        k[..., 0] = torch.where(valid, k[..., 0] + dx, k[..., 0])
        k[..., 1] = torch.where(valid, k[..., 1] + dy, k[..., 1])
        # A shifted point that leaves the frame is not visible, as a detector would report it.
        outside = valid & ((k[..., 0] < 0) | (k[..., 0] > width - 1) | (k[..., 1] < 0) | (k[..., 1] > height - 1))
        k[outside] = 0.0
        b = boxes[j] + torch.tensor([dx, dy, dx, dy])
        b[:, 0::2] = b[:, 0::2].clamp(0, width)
        b[:, 1::2] = b[:, 1::2].clamp(0, height)
        gone = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | ~(k[..., 2] > 0).any(-1)
        b[gone] = float("nan")
        present[j] &= ~gone
        kp[j][~present[j]] = 0.0
        boxes[j] = b
    return PoseTracks(kp, boxes, present, height, width, list(range(len(sources))))


def _make_binding(tracks: PoseTracks, identities, sources, offsets, num_identities, offset_text=None) -> Binding:
    ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    return Binding(
        identities=[int(k) for k in identities],
        sources=[int(s) for s in sources],
        offsets=torch.from_numpy(offsets).float(),
        tracks=_shift_tracks(tracks, list(sources), offsets),
        num_identities=int(num_identities),
        unbound=[i for i in range(tracks.num_tracks) if i not in set(sources)],
        offset_text=list(offset_text) if offset_text is not None else [""] * len(sources),
        source_ids=[int(ids[s]) for s in sources],
    )


def check_binding_syntax(text: str) -> None:
    """AnyCrowdError (with the position of the problem) if `text` is not valid binding syntax;
    tracks and identity counts are not checked (for early validation before tracks exist)."""
    if not isinstance(text, str):
        raise AnyCrowdError(f"The binding must be text, got {type(text).__name__}. {SYNTAX_HELP}")
    _parse_clauses(text, len(LETTERS))


def parse_binding(text: str, tracks: PoseTracks, num_identities: int) -> Binding:
    """Parse a binding string (see SYNTAX_HELP) against `tracks` and N reference identities.

    Output tracks follow the order of the clauses (and of the tracks within a clause).
    Tracks not named are left out; every identity must be bound at least once.
    """
    if not isinstance(text, str) or not text.strip():
        raise AnyCrowdError(f"The binding is empty: leave it empty for automatic binding, or write one. {SYNTAX_HELP}")
    if num_identities < 1:
        raise AnyCrowdError("No reference identities to bind: give at least one reference mask.")
    clauses = _parse_clauses(text, num_identities)
    index = _track_index(tracks)
    if not index:
        raise AnyCrowdError("No motion tracks to bind: the driving video has no tracked person. Check the pose "
                            "extractor's preview (detection threshold, video content).")
    height, width = int(tracks.height), int(tracks.width)
    identities, sources, offsets, texts = [], [], [], []
    seen: dict[tuple, int] = {}
    for c in clauses:
        dx = c.offset[0] + c.offset[2] * width
        dy = c.offset[1] + c.offset[3] * height
        if not (abs(dx) <= _MAX_OFFSET and abs(dy) <= _MAX_OFFSET):
            raise _syntax_error(text, c.pos, f"the offset {c.offset_text} shifts by {dx:+g}px, {dy:+g}py: out of "
                                             f"range (a whole frame, {width}x{height} px, already hides the copy).")
        for tid in c.tracks:
            if tid not in index:
                shown = ", ".join(str(t) for t in index) or "none"
                raise _syntax_error(text, c.pos, f"track {tid} does not exist; the tracks are {shown} "
                                                 f"(labels T{next(iter(index), 0)}... in the preview).")
            key = (index[tid], round(dx, 3), round(dy, 3))
            if key in seen:
                other = seen[key]
                if other == c.identity:
                    raise _syntax_error(text, c.pos, f"{identity_name(c.identity)} is bound to track {tid} twice.")
                raise _syntax_error(
                    text, c.pos,
                    f"identities {identity_name(other)} and {identity_name(c.identity)} are both placed on track "
                    f"{tid} at the same position; shift one copy, e.g. {identity_name(c.identity)}={tid}@+0.3w.",
                )
            seen[key] = c.identity
            identities.append(c.identity)
            sources.append(index[tid])
            offsets.append((dx, dy))
            texts.append(c.offset_text)
    missing = sorted(set(range(num_identities)) - set(identities))
    if missing:
        unused = [t for t, i in index.items() if i not in set(sources)]
        first = next(iter(index))
        hint = ", ".join(
            f"{identity_name(k)}={unused[j]}" if j < len(unused) else f"{identity_name(k)}={first}@+{0.25 * (j + 1):g}w"
            for j, k in enumerate(missing)
        )
        raise AnyCrowdError(
            f"Identit{'y' if len(missing) == 1 else 'ies'} {', '.join(identity_name(k) for k in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not bound to any track: add e.g. \"{hint}\" to the binding "
            f"\"{text.strip()}\", or remove {'its' if len(missing) == 1 else 'their'} reference mask."
        )
    return _make_binding(tracks, identities, sources, offsets, num_identities, texts)


def _first_common_x(tracks: PoseTracks) -> np.ndarray:
    """Box centre x of each track at the first frame where all are present (else at each
    track's own first present frame; +inf for a track that is never present)."""
    boxes = tracks.boxes.detach().cpu().double().numpy()
    present = tracks.present.detach().cpu().numpy().astype(bool) & np.isfinite(boxes).all(-1)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    common = np.flatnonzero(present.all(0)) if present.size else np.zeros(0, int)
    if common.size:
        return cx[:, common[0]]
    out = np.full(tracks.num_tracks, np.inf)
    for i in range(tracks.num_tracks):
        f = np.flatnonzero(present[i])
        if f.size:
            out[i] = cx[i, f[0]]
    return out


def _reference_boxes(reference_boxes, num_identities: int) -> np.ndarray | None:
    """`[N, 4]` xyxy boxes from boxes `[N, 4]` or masks `[N, H, W]`."""
    if reference_boxes is None:
        return None
    if isinstance(reference_boxes, Tensor):
        r = reference_boxes.detach().cpu()
    else:
        r = torch.as_tensor(np.asarray(reference_boxes))
    if r.dim() == 3:  # masks
        masks = r > 0.5 if r.is_floating_point() else r.bool()
        out = np.full((r.shape[0], 4), np.nan)
        for k, m in enumerate(masks.numpy()):
            ys, xs = np.nonzero(m)
            if xs.size:
                out[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        r = torch.from_numpy(out)
    if r.dim() != 2 or r.shape[-1] != 4 or r.shape[0] != num_identities:
        raise AnyCrowdError(
            f"reference_boxes must be [N, 4] xyxy boxes (or [N, H, W] masks) for the {num_identities} "
            f"identities, got shape {tuple(r.shape)}."
        )
    return r.double().numpy()


def suggest_bindings(tracks: PoseTracks, num_identities: int, reference_boxes=None) -> list[str]:
    """Binding strings that work for these counts, left-to-right order first (used in messages)."""
    ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
    m, n = tracks.num_tracks, num_identities
    order = [ids[i] for i in np.argsort(_first_common_x(tracks), kind="stable")] if m else []
    ref = _reference_boxes(reference_boxes, n)
    ident_order = np.argsort((ref[:, 0] + ref[:, 2]) / 2, kind="stable") if ref is not None else range(n)
    letters = [identity_name(int(k)) for k in ident_order]
    if m == 0 or n == 0:
        return []
    if m >= n:
        base = [f"{letters[j]}={order[j]}" for j in range(n)]
        extra = [f"{letters[j % n]}={order[j]}" for j in range(n, m)]
        return [", ".join(base + extra), ", ".join(base)] if extra else [", ".join(base)]
    out = [f"{letters[j]}={order[j]}" for j in range(m)]
    for j in range(m, n):
        r = j - m
        step = 0.25 * (r // 2 + 1)
        out.append(f"{letters[j]}={order[j % m]}@{'+' if r % 2 == 0 else '-'}{step:g}w")
    return [", ".join(out)]


def _count_error(tracks: PoseTracks, n: int, reference_boxes, why: str) -> AnyCrowdError:
    m = tracks.num_tracks
    sugg = suggest_bindings(tracks, n, reference_boxes)
    if m > n:
        hint = (f"bind them explicitly, e.g. \"{sugg[0]}\" (one identity on several tracks) or \"{sugg[1]}\" "
                f"(leave the extra tracks out)")
    else:
        hint = f"bind them explicitly, e.g. \"{sugg[0]}\" (several identities share one motion, shifted copies)"
    return AnyCrowdError(f"{why}: {hint}. {SYNTAX_HELP}")


def auto_binding(
    tracks: PoseTracks,
    num_identities: int,
    reference_boxes=None,
    mode: str = "left_to_right",
    *,
    reference_frame: int = 0,
    min_iou: float = 0.1,
) -> Binding:
    """Bind tracks to identities without a binding string.

    left_to_right: tracks ordered by box centre x at their first common visible frame are
    matched to identities ordered by reference box/mask centre x (identity index order
    without `reference_boxes`). overlap: the reference frame is frame `reference_frame` of
    the driving video; tracks and reference boxes (`[N, 4]` or masks `[N, H, W]`) are matched
    by maximum total IoU (Hungarian), every pair needing IoU >= min_iou.
    Counts that differ raise an error that suggests a binding string.
    """
    if mode not in MODES:
        raise AnyCrowdError(f"Unknown binding mode {mode!r}; use one of {', '.join(MODES)}.")
    m, n = tracks.num_tracks, int(num_identities)
    if n < 1:
        raise AnyCrowdError("No reference identities to bind: give at least one reference mask.")
    if m == 0:
        raise AnyCrowdError("No motion tracks to bind: the driving video has no tracked person. Check the pose "
                            "extractor's preview (detection threshold, video content).")
    ref = _reference_boxes(reference_boxes, n)
    if mode == "left_to_right":
        if m != n:
            raise _count_error(tracks, n, reference_boxes, f"{m} motion tracks but {n} reference identities")
        track_order = np.argsort(_first_common_x(tracks), kind="stable")
        ident_order = np.argsort((ref[:, 0] + ref[:, 2]) / 2, kind="stable") if ref is not None else np.arange(n)
        pairs = sorted(zip(track_order.tolist(), ident_order.tolist()))
    else:
        if ref is None:
            raise AnyCrowdError("Binding mode 'overlap' needs the reference boxes or masks (the reference frame taken "
                                "from the driving video); give them, or use mode 'left_to_right'.")
        if not 0 <= reference_frame < tracks.num_frames:
            raise AnyCrowdError(f"reference_frame {reference_frame} is outside the video (0..{tracks.num_frames - 1}).")
        if m != n:
            raise _count_error(tracks, n, reference_boxes, f"{m} motion tracks but {n} reference identities")
        tb = tracks.boxes[:, reference_frame].detach().cpu().double().numpy()
        iou = box_iou(tb, ref)
        rows, cols = linear_sum_assignment(-iou)
        weak = [(r, c) for r, c in zip(rows, cols) if iou[r, c] < min_iou]
        if weak:
            ids = list(tracks.track_ids) or list(range(m))
            detail = ", ".join(f"track {ids[r]} / identity {identity_name(c)} (IoU {iou[r, c]:.2f})" for r, c in weak)
            raise AnyCrowdError(
                f"Box overlap binding at frame {reference_frame} is unreliable: {detail} overlap less than {min_iou}. "
                f"Is the reference frame taken from frame {reference_frame} of the driving video? Otherwise use "
                "mode 'left_to_right' or an explicit binding, e.g. "
                f"\"{suggest_bindings(tracks, n, reference_boxes)[0]}\"."
            )
        pairs = sorted(zip(rows.tolist(), cols.tolist()))
    return _make_binding(tracks, [k for _, k in pairs], [t for t, _ in pairs], np.zeros((len(pairs), 2)), n)


INDEX_FORM = re.compile(r"^[\d\s,;]*$")  # "0,1,2": one identity index per track, in track order


def is_index_binding(text: str | None) -> bool:
    """True for the index form "0,1,2" (and empty text), False for the syntax "A=0, B=1"."""
    return bool(INDEX_FORM.match(text or ""))


def parse_index_binding(text: str, num_tracks: int, num_identities: int, track_ids=None) -> list[int]:
    """Identity index per track from the index form "0,1,2" (separators "," ";" or spaces;
    repeats allowed). Empty text binds track i to identity i and needs equal counts.

    track_ids: the ids of pose tracks (as shown in the preview), for messages that offer the
    syntax instead; None for box tracks (one per boxes line).
    """
    text = (text or "").strip()
    example = ",".join(str(i % num_identities) for i in range(num_tracks)) if num_identities > 0 else "0"
    if not text:
        if num_tracks != num_identities:
            raise AnyCrowdError(
                f"There are {num_tracks} box tracks but {num_identities} characters in the reference masks, "
                f"and no binding: give one box track per character, or a binding with one character index "
                f"(0..{num_identities - 1}) per track, e.g. '{example}'."
            )
        return list(range(num_tracks))
    try:
        indices = [int(p) for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    except ValueError:
        raise AnyCrowdError(f"binding {text!r} is not a list of whole numbers: write e.g. '{example}'.") from None
    if len(indices) != num_tracks:
        if track_ids is None:
            fix = f"box tracks: give one character index per track, e.g. '{example}'."
        else:
            syntax = ", ".join(f"{identity_name(i % num_identities)}={t}" for i, t in enumerate(track_ids))
            fix = (f"tracks (ids {list(track_ids)}): give one character index per track in track order, or write "
                   f"it as e.g. '{syntax}'. {SYNTAX_HELP}")
        raise AnyCrowdError(f"binding {text!r} has {len(indices)} entries but there are {num_tracks} {fix}")
    bad = [k for k in indices if not 0 <= k < num_identities]
    if bad:
        raise AnyCrowdError(
            f"binding {text!r} refers to characters {bad}, but the reference has {num_identities} "
            f"(indices 0..{num_identities - 1})" + (f": e.g. '{example}'." if track_ids is None else ".")
        )
    return indices


def binding_text_problem(text: str | None) -> str | None:
    """A message if `text` is neither the index form ("0,1,2") nor the binding syntax
    ("A=0, B=1@+0.3w"), else None: the syntax only, for a node's early validation (tracks and
    identity counts are checked when they exist). Empty and "auto" are fine."""
    if not text or not text.strip() or text.strip().lower() == "auto" or is_index_binding(text):
        return None
    try:
        check_binding_syntax(text)
    except AnyCrowdError as exc:
        return (f"binding {text!r} is not a list of character indices ('0,1,2') nor a valid pose binding "
                f"('A=0, B=1'): {exc}")
    return None


def bind_tracks(text: str | None, tracks: PoseTracks, num_identities: int, reference_boxes=None) -> Binding:
    """The binding of pose tracks as users write it in the nodes: empty / "auto" = left to right
    (tracks by position, identities by reference box/mask centre), "0,1,2" = identity index per
    track in track order, or the syntax (`parse_binding`)."""
    text = (text or "").strip()
    if text and is_index_binding(text):
        ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
        indices = parse_index_binding(text, len(ids), num_identities, track_ids=ids)
        text = ", ".join(f"{identity_name(k)}={t}" for k, t in zip(indices, ids))
    return resolve_binding(text or None, tracks, num_identities, reference_boxes=reference_boxes)


def resolve_binding(
    text: str | None,
    tracks: PoseTracks,
    num_identities: int,
    reference_boxes=None,
    mode: str = "left_to_right",
    **auto_options,
) -> Binding:
    """`parse_binding` when `text` holds a binding, else `auto_binding` (empty or "auto")."""
    if text is None or not text.strip() or text.strip().lower() == "auto":
        return auto_binding(tracks, num_identities, reference_boxes, mode, **auto_options)
    return parse_binding(text, tracks, num_identities)
