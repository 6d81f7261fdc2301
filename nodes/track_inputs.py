"""Track and box inputs of the AnyCrowd nodes (not a node): the control video's frame count, the
boxes text / track masks / pose tracks each character follows, their binding to the reference
characters, and the boxes at the output size. IILR Encode, Long Video Sampler and Face Control
read them through these functions, so every node has the same rules and the same messages.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anycrowd_core.boxes import BOXES_SYNTAX, boxes_from_mask_sequences, has_boxes, parse_boxes, resize_boxes
from anycrowd_core.codec import nearest_valid_frame_counts
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.binding import bind_tracks, is_index_binding, parse_index_binding, resolve_binding
from anycrowd_core.pose.keypoint_format import pose_keypoint_to_tracks
from anycrowd_core.pose.render import render_pose_video
from anycrowd_core.pose.track_boxes import padded_track_boxes
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks

from .input_checks import aspects_differ, check_identities_visible, check_same_aspect, image_batch, mask_batch, user_text

TRACK_BOX_PADDING = 0.1  # padded_track_boxes: each side grows by 10% of the box (hair, hands, clothes)


def control_video_input(control_video, length: int) -> Tensor:
    """The control video as float `[length, H, W, 3]`: an IMAGE batch of exactly `length` frames."""
    if not isinstance(control_video, Tensor) or control_video.ndim != 4:
        shape = tuple(control_video.shape) if isinstance(control_video, Tensor) else type(control_video).__name__
        raise AnyCrowdError(f"control_video must be an IMAGE batch [frames, H, W, 3]; got {shape}.")
    control_video = image_batch(control_video, "control_video", fix="Connect the driving (pose) video.")
    frames = int(control_video.shape[0])
    if frames != length:
        lo, hi = nearest_valid_frame_counts(frames)
        fits = f"set length to {frames}" if lo == frames else f"set length to {lo} or {hi} and trim/pad the video"
        word = "shorter" if frames < length else "longer"
        raise AnyCrowdError(
            f"The control video has {frames} frames, {word} than length = {length}: {fits}, or cut the video "
            f"to {length} frames (e.g. Load Video's frame_load_cap / skip_first_frames)."
        )
    return control_video


def track_masks_input(track_masks, video_size: tuple[int, int]) -> Tensor:
    """Per-character mask sequences as one MASK batch `[characters * length, H, W]` (a
    `[characters, length, H, W]` tensor is flattened), drawn on frames of the control video's shape."""
    if isinstance(track_masks, Tensor) and track_masks.ndim == 4:  # [characters, length, H, W]
        track_masks = track_masks.reshape(-1, *track_masks.shape[-2:])
    track_masks = mask_batch(track_masks, "track_masks",
                             fix="Give all length masks of character 0, then of character 1, ...")
    check_same_aspect((int(track_masks.shape[-2]), int(track_masks.shape[-1])), video_size, "track_masks",
                      "control_video", "make the track masks on the frames of the control video "
                      "(the same size, or a resize of it).")
    return track_masks


def tracks_input(tracks=None, pose_keypoint=None) -> PoseTracks:
    """TRACKS, else POSE_KEYPOINT (people keep their list position or track_id), else an error."""
    if tracks is not None:
        if not isinstance(tracks, PoseTracks):
            raise AnyCrowdError(
                f"tracks must come from AnyCrowd Pose Extractor (ANYCROWD_TRACKS), got {type(tracks).__name__}."
            )
        return tracks
    if pose_keypoint is not None:
        return user_text(lambda: pose_keypoint_to_tracks(pose_keypoint), "pose_keypoint (POSE_KEYPOINT)", pose_keypoint)
    raise AnyCrowdError(
        "No poses: connect tracks from AnyCrowd Pose Extractor (or a POSE_KEYPOINT from a DWPose node with "
        "face landmarks enabled)."
    )


def _box_tracks_as_pose_tracks(track_boxes: Tensor, frame_size: tuple[int, int]) -> PoseTracks:
    """Box tracks `[M, T, 4]` as PoseTracks without keypoints, so the pose binding syntax
    ("A=0, B=1", ids = box line numbers) applies to them too."""
    m, t = int(track_boxes.shape[0]), int(track_boxes.shape[1])
    present = ~torch.isnan(track_boxes).any(-1)
    return PoseTracks(torch.zeros(m, t, NUM_KEYPOINTS, 3), track_boxes.float(), present, frame_size[0],
                      frame_size[1], list(range(m)))


def bind_box_tracks(binding: str, track_boxes: Tensor, frame_size, num_ids: int) -> tuple[Tensor, list[int]]:
    """(boxes of the bound tracks, character per bound track) for box tracks: the index form
    ("0,1,2"), or the pose syntax with box line numbers as track ids (no offsets)."""
    text = (binding or "").strip()
    if not text or is_index_binding(text):
        return track_boxes, parse_index_binding(text, int(track_boxes.shape[0]), num_ids)
    bound = resolve_binding(text, _box_tracks_as_pose_tracks(track_boxes, frame_size), num_ids)
    if bool((bound.offsets != 0).any()):
        raise AnyCrowdError(
            f"binding {text!r} shifts a copy of a motion (@offset), which needs pose tracks so the copy can be "
            "drawn into the control video: connect the tracks input instead of boxes, or add a box line for the copy."
        )
    return track_boxes[torch.tensor(bound.sources, dtype=torch.long)], list(bound.identities)


def text_or_mask_boxes(boxes: str, track_masks, length: int, video_size: tuple[int, int]) -> Tensor:
    """Track boxes `[M, length, 4]` (pixels of `video_size`) from the boxes text or the
    per-character mask sequences, exactly one of which must be given."""
    has_text = has_boxes(boxes)
    if track_masks is not None:
        if has_text:
            raise AnyCrowdError(
                "Both track_masks and boxes are given: use one of them (clear the boxes text, or disconnect track_masks)."
            )
        return boxes_from_mask_sequences(track_masks.float().cpu(), length)
    if not has_text:
        raise AnyCrowdError(
            "No per-character boxes: write them in the boxes field (or connect track_masks).\n" + BOXES_SYNTAX
        )
    return user_text(lambda: parse_boxes(boxes, length, video_size), "boxes", boxes)


def pose_track_boxes(tracks, boxes, track_masks, binding, instances, length, video_size, out_size):
    """(boxes `[M', T, 4]` at the output size, character per track, redrawn control video or
    None) for pose tracks. The control video is redrawn from the bound tracks when the
    binding leaves tracks out or shifts copies, so the pose video shows exactly the bound motions."""
    if not isinstance(tracks, PoseTracks):
        raise AnyCrowdError("tracks must come from AnyCrowd Pose Extractor or AnyCrowd Pose From Keypoints.")
    if has_boxes(boxes) or track_masks is not None:
        raise AnyCrowdError(
            "Both tracks and boxes/track_masks are given: use one of them (clear the boxes text and disconnect "
            "track_masks, or disconnect tracks)."
        )
    if tracks.num_frames != length:
        raise AnyCrowdError(
            f"The tracks have {tracks.num_frames} frames but length is {length}: extract the poses from the same "
            f"{length} frames as the control video."
        )
    th, tw = int(tracks.height), int(tracks.width)
    vh, vw = video_size
    if aspects_differ((th, tw), (vh, vw)):
        raise AnyCrowdError(
            f"The tracks were extracted from a {tw}x{th} video but the control video is {vw}x{vh} (another shape): "
            "extract the poses from the driving video the control video was made from."
        )
    bound = bind_tracks(binding, tracks, instances.num_identities, instances.masks)
    track_boxes = resize_boxes(padded_track_boxes(bound.tracks, TRACK_BOX_PADDING), (th, tw), out_size)
    redrawn = None
    if bound.unbound or bool((bound.offsets != 0).any()):
        redrawn = render_pose_video(bound.tracks)
    return track_boxes, list(bound.identities), redrawn


def character_boxes(instances, boxes: str, binding: str, length: int, video_size: tuple[int, int],
                    out_size: tuple[int, int], node: str, tracks=None,
                    track_masks=None) -> tuple[Tensor, list[int], Tensor | None]:
    """What each reference character follows, from whichever input the node got: (boxes
    `[M', length, 4]` xyxy px of the `out_size` (H, W) frame after the centre crop, character
    per track, the control video redrawn from the bound pose tracks or None). Pose tracks
    (`pose_track_boxes`), else the boxes text or track masks (`text_or_mask_boxes`, in pixels
    of the masks' own frame when given, else of `video_size`), bound by `binding`. Every bound
    track must show up in the output frame (`check_identities_visible`; `node` names the node)."""
    num_ids = instances.num_identities
    redrawn = None
    if tracks is not None:
        track_boxes, identities, redrawn = pose_track_boxes(tracks, boxes, track_masks, binding, instances, length,
                                                            video_size, out_size)
        where = "track"
    else:
        track_boxes = text_or_mask_boxes(boxes, track_masks, length, video_size)
        box_frame = video_size if track_masks is None else (int(track_masks.shape[-2]), int(track_masks.shape[-1]))
        track_boxes, identities = bind_box_tracks(binding, track_boxes, box_frame, num_ids)
        track_boxes = resize_boxes(track_boxes, box_frame, out_size)
        where = "boxes line" if track_masks is None else "track_masks character"
    check_identities_visible(track_boxes, identities, num_ids, out_size, where, node)
    return track_boxes, identities, redrawn
