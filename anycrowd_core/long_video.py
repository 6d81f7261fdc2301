"""Long-video planning: split a driving video of any length into Wan-sized segments (token
replace, One-to-All §3.4) or latent sliding windows (AnyCrowd appendix), and slice the
per-frame inputs (control video, track boxes) for one segment. The loops that run a plan
for either host: `long_video_run.py`; the core-DiT sampler: `long_video_sampling.py`; rules
and worked examples: docs/long_video.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .codec import TEMPORAL_FACTOR
from .errors import AnyCrowdError

__all__ = [
    "STRATEGIES",
    "DEFAULT_OVERLAP",
    "LongVideoSettings",
    "Segment",
    "Window",
    "plan_segments",
    "plan_windows",
    "plan_latent_windows",
    "slice_frames",
    "slice_tracks",
    "slice_inputs",
    "pad_frames",
    "window_track_boxes",
    "padded_frame_count",
    "latent_count",
]


STRATEGIES = ("token_replace", "sliding_window")
DEFAULT_OVERLAP = {"token_replace": 5, "sliding_window": 16}
"""Default overlap in PIXEL frames: 5 = 2 context latent frames (One-to-All); 16 = 4 latent
frames shared by neighbouring windows."""


def padded_frame_count(num_frames: int) -> int:
    """Smallest valid Wan frame count (4n+1) >= num_frames."""
    if num_frames < 1:
        raise AnyCrowdError(f"A video needs at least 1 frame, got {num_frames}.")
    return (num_frames - 1 + TEMPORAL_FACTOR - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1


def latent_count(pixel_frames: int) -> int:
    """Latent frames covering `pixel_frames` frames from a causal start: ceil((T-1)/4)+1
    (the first latent frame covers 1 pixel frame, each next one 4); 0 for 0 frames."""
    if pixel_frames <= 0:
        return 0
    return (pixel_frames - 1 + TEMPORAL_FACTOR - 1) // TEMPORAL_FACTOR + 1


# ----------------------------------------------------------------------------- token replace


@dataclass(frozen=True)
class Segment:
    """One generation pass of the token-replace plan. All units are PIXEL frames.

    index:   0, 1, ... in generation order.
    start, stop: frames [start, stop) of the full video this segment's real (non-padding)
             frames cover; segment frame i is video frame start + i.
    frames:  the segment's length as generated, 4n+1, padding included (= stop - start + pad).
    pad:     padding frames after `stop` (only in the last segment, < 4): the last control
             frame and track box repeated; their output is dropped.
    context_frames: the first frames of the segment that are NOT generated but taken from
             the previous segment's output (0 for segment 0, else the overlap, 4m+1).
    keep:    slice of the segment's frames written to the output (context and padding out).
    out:     slice of the full video those frames go to (same length as `keep`).
    context_latent_frames: latent frames the context occupies, (context_frames-1)/4+1 (0
             without context); they are the first latent video frames of the segment.
    """

    index: int
    start: int
    stop: int
    frames: int
    pad: int
    context_frames: int
    keep: slice
    out: slice
    context_latent_frames: int

    @property
    def latent_frames(self) -> int:
        """Latent video frames of the segment (reference frames not included)."""
        return (self.frames - 1) // TEMPORAL_FACTOR + 1

    @property
    def new_frames(self) -> int:
        """Frames this segment contributes to the output."""
        return self.out.stop - self.out.start


def _check_4n1(value: int, name: str, allow_zero: bool = False) -> None:
    if allow_zero and value == 0:
        return
    if int(value) != value or value < 1 or (value - 1) % TEMPORAL_FACTOR:
        lo = max(1, (int(value) - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1)
        zero = "0 or " if allow_zero else ""
        raise AnyCrowdError(
            f"{name} is {value} but must be {zero}4n+1 (1, 5, 9, ..., 81) so that it maps to whole "
            f"latent frames: use {lo} or {lo + TEMPORAL_FACTOR}."
        )


def plan_segments(num_frames: int, segment_frames: int = 81, overlap_frames: int = 5) -> list[Segment]:
    """Token-replace plan for a video of `num_frames` (>= 1) pixel frames.

    Segments have `segment_frames` frames (4n+1; Wan's 81 by default). Segment s > 0 starts
    `overlap_frames` frames (0 or 4m+1; 5 = 2 latent frames, as in One-to-All) before the end
    of segment s-1; those frames are its context (taken from s-1's output, not generated
    again). Every video frame is generated and kept exactly once. The last segment is the
    SHORTEST 4n+1 that covers the remaining frames: its context plus the rest, rounded up
    with at most 3 padding frames (repeated last control frame / box) whose output is
    dropped. A video of at most `segment_frames` frames is one segment (1 frame: a 1-frame
    segment; 2-4 frames: 5 frames with padding).
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise AnyCrowdError(f"num_frames must be a positive integer, got {num_frames!r}: give the driving video.")
    _check_4n1(segment_frames, "segment_frames")
    _check_4n1(overlap_frames, "overlap_frames", allow_zero=True)
    num_frames, seg, ovl = int(num_frames), int(segment_frames), int(overlap_frames)
    if ovl >= seg:
        raise AnyCrowdError(
            f"overlap_frames ({ovl}) must be smaller than segment_frames ({seg}) so that each segment "
            f"generates new frames: use e.g. overlap_frames=5 with segment_frames={max(seg, 9)}."
        )

    segments: list[Segment] = []
    done = 0  # frames of the video already generated
    while done < num_frames:
        ctx = 0 if not segments else ovl
        start = done - ctx
        want = num_frames - start  # context + everything still missing
        frames = min(seg, padded_frame_count(want))
        stop = min(start + frames, num_frames)
        pad = frames - (stop - start)
        segments.append(Segment(
            index=len(segments), start=start, stop=stop, frames=frames, pad=pad,
            context_frames=ctx, keep=slice(ctx, stop - start), out=slice(start + ctx, stop),
            context_latent_frames=latent_count(ctx),
        ))
        done = stop
    return segments


# ----------------------------------------------------------------------------- sliding windows


@dataclass(frozen=True)
class Window:
    """One window of the sliding-window plan. Units: LATENT video frames (reference frames
    not counted: every window is [all reference frames | video latents start:stop]).

    index: 0, 1, ...;  start, stop: latent video frames [start, stop) of the whole clip.
    left_overlap / right_overlap: latent frames shared with the previous / next window.
    pixel_start, pixel_stop: the pixel frames [pixel_start, pixel_stop) of the (4n+1-padded)
        video those latents cover (latent 0 covers frame 0, latent j > 0 frames 4j-3..4j).
    """

    index: int
    start: int
    stop: int
    left_overlap: int
    right_overlap: int

    @property
    def frames(self) -> int:
        return self.stop - self.start

    @property
    def latents(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def pixel_start(self) -> int:
        return 0 if self.start == 0 else TEMPORAL_FACTOR * self.start - (TEMPORAL_FACTOR - 1)

    @property
    def pixel_stop(self) -> int:
        return TEMPORAL_FACTOR * (self.stop - 1) + 1

    def weights(self, ramp: bool = False) -> Tensor:
        """float32 `[frames]` blending weight of each latent frame of the window.

        ramp=False: all ones (plain average by update count, AnyCrowd appendix).
        ramp=True: linear ramps over the overlaps, (i+1)/(overlap+1) rising from the left
        neighbour and falling towards the right one; 1 elsewhere. Never 0, so every latent
        frame keeps a positive total weight.
        """
        w = torch.ones(self.frames, dtype=torch.float32)
        if ramp:
            if self.left_overlap:
                n = self.left_overlap
                w[:n] = torch.minimum(w[:n], torch.arange(1, n + 1, dtype=torch.float32) / (n + 1))
            if self.right_overlap:
                n = self.right_overlap
                down = torch.arange(n, 0, -1, dtype=torch.float32) / (n + 1)
                w[-n:] = torch.minimum(w[-n:], down)
        return w


def plan_latent_windows(num_latent_frames: int, window: int = 21, overlap: int = 5) -> list[Window]:
    """Windows of `window` latent frames stepping by `window - overlap` from frame 0; the
    last window is aligned to the end (full length; it may overlap its predecessor more).
    A clip of at most `window` latent frames is a single window covering it."""
    if int(num_latent_frames) != num_latent_frames or num_latent_frames < 1:
        raise AnyCrowdError(f"num_latent_frames must be a positive integer, got {num_latent_frames!r}.")
    if int(window) != window or window < 1:
        raise AnyCrowdError(f"The window must be at least 1 latent frame (81 pixel frames = 21), got {window!r}.")
    if int(overlap) != overlap or not 0 <= overlap < window:
        raise AnyCrowdError(
            f"The window overlap ({overlap} latent frames) must be >= 0 and smaller than the window "
            f"({window}): use e.g. overlap {max(0, min(5, window - 1))}."
        )
    total, window, overlap = int(num_latent_frames), int(window), int(overlap)
    if total <= window:
        return [Window(0, 0, total, 0, 0)]
    starts = [0]
    while starts[-1] + window < total:
        starts.append(min(starts[-1] + window - overlap, total - window))
    out = []
    for i, s in enumerate(starts):
        left = starts[i - 1] + window - s if i else 0
        right = s + window - starts[i + 1] if i + 1 < len(starts) else 0
        out.append(Window(i, s, s + window, left, right))
    return out


def plan_windows(num_frames: int, window_frames: int = 81, overlap_frames: int = 16) -> list[Window]:
    """Sliding-window plan in LATENT frames for a video of `num_frames` PIXEL frames.

    The video is padded to 4n+1 frames (repeated last frame) and encoded as one latent
    clip of T_lat = ceil((num_frames-1)/4)+1 frames. `window_frames` (4n+1 pixel frames, 81
    = 21 latent) and `overlap_frames` (pixel frames) are converted to latent frames as
    ComfyUI's context windows do, ceil(x/4) = (x-1)//4+1 (81 -> 21, 16 -> 4, 17 -> 5).
    """
    _check_4n1(window_frames, "window_frames")
    if int(overlap_frames) != overlap_frames or overlap_frames < 0:
        raise AnyCrowdError(f"overlap_frames must be >= 0 pixel frames, got {overlap_frames!r}.")
    window_latents = latent_count(int(window_frames))
    if (int(overlap_frames) + TEMPORAL_FACTOR - 1) // TEMPORAL_FACTOR >= window_latents:
        # worded in pixel frames, the unit the caller used
        limit = TEMPORAL_FACTOR * (window_latents - 1)
        raise AnyCrowdError(
            f"overlap_frames {overlap_frames} is too large for windows of {window_frames} frames: the overlap "
            f"must leave at least one new latent frame per window, so use at most {limit} "
            f"(e.g. overlap_frames={min(16, limit)})."
        )
    return plan_latent_windows(
        latent_count(padded_frame_count(int(num_frames))),
        latent_count(int(window_frames)),
        (int(overlap_frames) + TEMPORAL_FACTOR - 1) // TEMPORAL_FACTOR,
    )


# ----------------------------------------------------------------------------- segment inputs


def _frame_index(segment: Segment) -> Tensor:
    """Full-video frame index of each of the segment's frames (padding repeats stop-1)."""
    idx = torch.arange(segment.start, segment.start + segment.frames)
    return idx.clamp(max=segment.stop - 1)


def slice_frames(video: Tensor, segment: Segment) -> Tensor:
    """`[T, ...]` per-frame data of the full video -> `[segment.frames, ...]`, padding frames
    repeating the last real frame (so the padded control holds the last pose)."""
    if video.shape[0] < segment.stop:
        raise AnyCrowdError(
            f"The video has {video.shape[0]} frames but the plan needs {segment.stop}: plan with the "
            f"video's own frame count (plan_segments(num_frames={video.shape[0]}, ...))."
        )
    if segment.pad == 0:
        return video[segment.start:segment.stop]
    return video[_frame_index(segment).to(video.device)]


def slice_tracks(track_boxes: Tensor, segment: Segment) -> Tensor:
    """Track boxes `[M, T, 4]` (xyxy px, NaN = absent) -> `[M, segment.frames, 4]`.

    Padding frames repeat each track's box of the last real frame (NaN if the track is
    absent there), matching the repeated control frame. A track absent in the whole
    segment gives all-NaN rows: its identity has no video tokens in that segment's layout
    (its reference frame is still there), which `build_token_layout` supports."""
    if track_boxes.dim() != 3 or track_boxes.shape[-1] != 4:
        raise AnyCrowdError(f"track_boxes must be [M, T, 4] xyxy pixel boxes, got {tuple(track_boxes.shape)}.")
    return slice_frames(track_boxes.transpose(0, 1), segment).transpose(0, 1)


def slice_inputs(inputs, segment: Segment):
    """The `AnimationInputs` of one segment: the same reference image, masks and binding
    (so the IILR references are identical in every segment), control video and track
    boxes sliced (and padded) to the segment's frames."""
    return replace(
        inputs,
        control_video=slice_frames(inputs.control_video, segment),
        track_boxes=slice_tracks(inputs.track_boxes, segment),
    )


# ----------------------------------------------------------------------------- window inputs


def pad_frames(video: Tensor, num_frames: int) -> Tensor:
    """`[T, ...]` -> `[num_frames, ...]` (num_frames >= T) repeating the last frame along dim 0."""
    t = video.shape[0]
    if num_frames == t:
        return video
    idx = torch.arange(num_frames, device=video.device).clamp(max=t - 1)
    return video[idx]


def window_track_boxes(track_boxes: Tensor, binding, window: Window) -> tuple[Tensor, list[int]]:
    """Track boxes and binding whose `build_token_layout` is exactly the layout of `window`.

    track_boxes: `[M, T, 4]` of the 4n+1-padded video (see `pad_frames`). A window starting
    at latent frame a > 0 begins with a latent frame covering FOUR pixel frames (4a-3..4a),
    while a layout's first latent frame covers one. So the window's first pixel slot gets
    frame 4a of every track, and each of frames 4a-3..4a-1 becomes an extra pseudo-track
    (bound to the same identity, boxes NaN after the first slot); the union the layout takes
    per identity is then the same token set as in the whole clip. Returns boxes
    `[M', 4(stop-start-1)+1, 4]` and the extended binding (M' = M, or 4M for a > 0).
    """
    binding = [int(b) for b in binding]
    if window.start == 0:
        return track_boxes[:, : window.pixel_stop], binding
    first = TEMPORAL_FACTOR * window.start  # last pixel frame of the window's first latent
    main = track_boxes[:, first : window.pixel_stop]
    extra = []
    for f in range(window.pixel_start, first):
        pseudo = torch.full_like(main, float("nan"))
        pseudo[:, 0] = track_boxes[:, f]
        extra.append(pseudo)
    return torch.cat([main, *extra]), binding * (1 + len(extra))


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LongVideoSettings:
    """How a long video is split, the same for the headless and the ComfyUI path.

    strategy: "token_replace" or "sliding_window".  segment_frames: PIXEL frames per segment
    / window (4n+1).  overlap_frames: PIXEL frames (token replace: context taken from the
    previous segment, 0 or 4m+1; windows: shared frames, rounded up to whole latent frames);
    None = `DEFAULT_OVERLAP[strategy]`.  ramp: sliding windows blend overlaps with linear
    ramps instead of a plain average.  codec_chunk: sliding windows, latent frames per VAE
    call (None = the whole clip in one call).
    """

    strategy: str = "token_replace"
    segment_frames: int = 81
    overlap_frames: int | None = None
    ramp: bool = False
    codec_chunk: int | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise AnyCrowdError(f"Unknown long-video strategy {self.strategy!r}: choose one of {STRATEGIES}.")

    @property
    def overlap(self) -> int:
        """overlap_frames, or the strategy's default."""
        return DEFAULT_OVERLAP[self.strategy] if self.overlap_frames is None else int(self.overlap_frames)

    def plan(self, num_frames: int) -> list:
        """The `Segment`s (token replace) or `Window`s (sliding windows) for `num_frames`
        pixel frames; AnyCrowdError for a bad segment / overlap combination."""
        if self.strategy == "sliding_window":
            return plan_windows(num_frames, self.segment_frames, self.overlap)
        return plan_segments(num_frames, self.segment_frames, self.overlap)
