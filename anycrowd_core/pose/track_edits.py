"""User corrections of identity tracks, written as a few short commands:

    swap 0 1 @40      tracks 0 and 1 exchange identities from frame 40 on (no @: the whole clip)
    merge 3 into 1    track 3's frames join track 1 (a person the tracker split in two)
    drop 5            track 5 is removed (a false detection, someone not to animate)
    split 2 @60       track 2's frames from 60 on become a new track (next free id)

One command per line or separated by ';'; '#' starts a comment. Track numbers are the ids the
preview labels (T0, T1, ...; "T2" is accepted too), frames count from 0. Commands apply in
order, each to the result of the ones before. Syntax errors show the line with a caret under
the problem. docs/pose_tracking.md, "Correcting tracks".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import AnyCrowdError
from .types import PoseTracks

EDIT_HELP = (
    "Track edits: 'swap A B [@F]' (tracks A and B exchange identities from frame F on, whole clip without @F), "
    "'merge A into B', 'drop A', 'split A @F' (frames F.. of A become a new track); one per line or separated "
    "by ';'. A, B are the track ids shown in the preview (T0, T1, ...), F a frame number from 0. "
    "Example: \"swap 0 1 @40; drop 5\"."
)
_VERBS = ("swap", "merge", "drop", "split")
_MAX_DIGITS = 9
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class TrackEdit:
    """One parsed command: verb, track ids as written (tracks), frame (None: no @F), and where
    it starts in the text (pos, for error carets)."""

    verb: str
    tracks: tuple[int, ...]
    frame: int | None
    pos: int


def _caret_error(text: str, pos: int, problem: str) -> AnyCrowdError:
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start: line_end if line_end >= 0 else len(text)]
    col = pos - line_start
    if len(line) > 80:  # show the part around the caret of a long line
        lo = max(0, col - 40)
        hi = lo + 80
        line = ("..." if lo else "") + line[lo:hi] + ("..." if hi < len(line) else "")
        col = col - lo + (3 if lo else 0)
    line_no = text.count("\n", 0, pos) + 1
    return AnyCrowdError(
        f"Track edit error on line {line_no}, character {col + 1}: {problem}\n  {line}\n  {' ' * col}^\n{EDIT_HELP}"
    )


def _number(text: str, tok: str, pos: int, what: str, prefix: str = "") -> int:
    body = tok[len(prefix):] if prefix and tok.lower().startswith(prefix) else tok
    if not body.isdigit() or not body.isascii():
        raise _caret_error(text, pos, f"expected {what}, got {tok!r}.")
    if len(body) > _MAX_DIGITS:
        raise _caret_error(text, pos, f"{what} {tok} is too large.")
    return int(body)


def parse_track_edits(text: str) -> list[TrackEdit]:
    """The commands of `text` (see the module docstring); [] for empty text."""
    if not isinstance(text, str):
        raise AnyCrowdError(f"Track edits must be text, got {type(text).__name__}. {EDIT_HELP}")
    edits: list[TrackEdit] = []
    for piece in re.finditer(r"[^;\n]+", text):
        body = piece.group(0).split("#", 1)[0]
        toks = [(m.group(0), piece.start() + m.start()) for m in _TOKEN.finditer(body)]
        if not toks:
            continue
        (verb, vpos), rest = toks[0], toks[1:]
        verb_l = verb.lower()
        if verb_l not in _VERBS:
            raise _caret_error(text, vpos, f"unknown command {verb!r}; use swap, merge, drop or split.")
        frame = None
        if rest and rest[-1][0].startswith("@"):
            ftok, fpos = rest.pop()
            if ftok == "@":
                raise _caret_error(text, fpos, "'@' needs a frame number right after it, e.g. @40.")
            frame = _number(text, ftok[1:], fpos + 1, "a frame number after '@'")
        for tok, pos in rest:
            if tok.startswith("@"):
                raise _caret_error(text, pos, "the frame (@F) goes at the end of the command.")
        if verb_l == "merge":
            if len(rest) != 3 or rest[1][0].lower() != "into":
                at = rest[1][1] if len(rest) > 1 else (rest[0][1] + len(rest[0][0]) + 1 if rest else vpos + len(verb) + 1)
                raise _caret_error(text, min(at, len(text)), "write 'merge A into B' (two track ids and 'into').")
            ids = (rest[0], rest[2])
        else:
            want = 2 if verb_l == "swap" else 1
            if len(rest) != want:
                at = rest[want][1] if len(rest) > want else (rest[-1][1] + len(rest[-1][0]) if rest else vpos + len(verb))
                raise _caret_error(text, min(at, len(text)), f"'{verb_l}' takes {'two track ids' if want == 2 else 'one track id'}"
                                   f"{', then @F' if verb_l == 'split' else ''}.")
            ids = tuple(rest)
        tracks = tuple(_number(text, tok, pos, "a track id (e.g. 3 or T3)", "t") for tok, pos in ids)
        if verb_l == "split" and frame is None:
            raise _caret_error(text, vpos + len(verb), "'split' needs the first frame of the new track, e.g. split 2 @60.")
        if verb_l in ("merge", "drop") and frame is not None:
            raise _caret_error(text, vpos, f"'{verb_l}' takes no frame; use 'split A @F' first to cut a track.")
        if len(tracks) == 2 and tracks[0] == tracks[1]:
            raise _caret_error(text, ids[1][1], f"'{verb_l}' needs two different tracks, got {tracks[0]} twice.")
        edits.append(TrackEdit(verb_l, tracks, frame, vpos))
    return edits


def check_track_edits_syntax(text: str) -> None:
    """AnyCrowdError with a caret if `text` is not valid edit syntax (tracks not checked)."""
    parse_track_edits(text)


def apply_track_edits(tracks: PoseTracks, text: str) -> PoseTracks:
    """`tracks` with the commands of `text` applied in order (ids as in the preview; a track made
    by split gets the next free id). Empty text: the tracks unchanged. Errors name the command."""
    if not isinstance(tracks, PoseTracks):
        raise AnyCrowdError(f"Track edits need PoseTracks, got {type(tracks).__name__}.")
    edits = parse_track_edits(text)
    if not edits:
        return tracks
    kp = tracks.keypoints.clone()
    boxes = tracks.boxes.clone()
    present = tracks.present.bool().clone()
    ids = [int(i) for i in tracks.track_ids] if len(tracks.track_ids) == tracks.num_tracks else list(range(tracks.num_tracks))
    num_t = tracks.num_frames

    def row(tid: int, e: TrackEdit) -> int:
        if tid not in ids:
            known = ", ".join(str(i) for i in ids) or "none"
            raise _caret_error(text, e.pos, f"there is no track {tid} (tracks now: {known}).")
        return ids.index(tid)

    for e in edits:
        if e.frame is not None and not 0 <= e.frame < num_t:
            raise _caret_error(text, e.pos, f"frame {e.frame} is outside the clip's {num_t} frames (0..{num_t - 1}).")
        if e.verb == "swap":
            a, b = row(e.tracks[0], e), row(e.tracks[1], e)
            f = e.frame or 0
            for data in (kp, boxes, present):
                data[[a, b], f:] = data[[b, a], f:].clone()
        elif e.verb == "drop":
            a = row(e.tracks[0], e)
            keep = [i for i in range(len(ids)) if i != a]
            kp, boxes, present = kp[keep], boxes[keep], present[keep]
            ids.pop(a)
        elif e.verb == "merge":
            a, b = row(e.tracks[0], e), row(e.tracks[1], e)
            both = torch.nonzero(present[a] & present[b]).flatten().tolist()
            if both:
                shown = ", ".join(str(f) for f in both[:5]) + (" ..." if len(both) > 5 else "")
                raise _caret_error(text, e.pos, f"tracks {e.tracks[0]} and {e.tracks[1]} are both present in frame(s) "
                                                f"{shown}: one person cannot be two; split or swap first.")
            take = present[a]
            kp[b][take], boxes[b][take], present[b][take] = kp[a][take], boxes[a][take], True
            keep = [i for i in range(len(ids)) if i != a]
            kp, boxes, present = kp[keep], boxes[keep], present[keep]
            ids.pop(a)
        else:  # split
            a = row(e.tracks[0], e)
            f = e.frame
            if not present[a, f:].any():
                raise _caret_error(text, e.pos, f"track {e.tracks[0]} is not present from frame {f} on: nothing to split off.")
            new_kp, new_box, new_present = torch.zeros_like(kp[a]), torch.full_like(boxes[a], float("nan")), torch.zeros_like(present[a])
            new_kp[f:], new_box[f:], new_present[f:] = kp[a, f:], boxes[a, f:], present[a, f:]
            kp[a, f:], boxes[a, f:], present[a, f:] = 0.0, float("nan"), False
            kp = torch.cat([kp, new_kp[None]])
            boxes = torch.cat([boxes, new_box[None]])
            present = torch.cat([present, new_present[None]])
            ids.append(max(ids) + 1)
    kp[~present] = 0.0
    boxes[~present] = float("nan")
    return PoseTracks(kp, boxes, present, tracks.height, tracks.width, ids)
