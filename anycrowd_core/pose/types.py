"""Pose data shared by the detector, the tracker, rendering, binding and POSE_KEYPOINT interop.

Pixel coordinates of the driving video throughout. Keypoints use one OpenPose-style layout
of 128 points: 18 body points (OpenPose/COCO-18 order, as `anycrowd_core.scenes`), 68 face
landmarks, 21 left-hand and 21 right-hand points; confidence 0 marks a missing point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

BODY_POINTS, FACE_POINTS, HAND_POINTS = 18, 68, 21
NUM_KEYPOINTS = BODY_POINTS + FACE_POINTS + 2 * HAND_POINTS  # 128
BODY = slice(0, 18)
FACE = slice(18, 86)
LEFT_HAND = slice(86, 107)
RIGHT_HAND = slice(107, 128)


@dataclass
class FramePoses:
    """People found in one frame, in no particular order (detector output).

    keypoints: float `[P, 128, 3]` (x px, y px, confidence 0..1; 0 = missing).
    boxes:     float `[P, 4]` xyxy px person boxes (detector box, or the keypoints' extent).
    scores:    float `[P]` detection confidence.
    """

    keypoints: Tensor
    boxes: Tensor
    scores: Tensor

    @classmethod
    def empty(cls) -> FramePoses:
        return cls(torch.zeros(0, NUM_KEYPOINTS, 3), torch.zeros(0, 4), torch.zeros(0))

    @property
    def num_people(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class PoseSequence:
    """Per-frame detections of a whole video: `frames[t]` for t in 0..T-1, canvas H x W px."""

    frames: list[FramePoses]
    height: int
    width: int


@dataclass
class PoseTracks:
    """People followed through a video with stable identities (tracker output).

    keypoints: float `[M, T, 128, 3]` px; confidence 0 where the track is absent.
    boxes:     float `[M, T, 4]` xyxy px person boxes as detected (interpolated over bridged
               gaps); NaN rows where absent. `track_boxes.padded_track_boxes` pads them.
    present:   bool `[M, T]` whether the track was observed (or bridged) in the frame.
    track_ids: stable ids, one per track, in the tracks' order (left to right where all are
               first visible).
    height, width: canvas size in px.
    """

    keypoints: Tensor
    boxes: Tensor
    present: Tensor
    height: int
    width: int
    track_ids: list[int] = field(default_factory=list)

    @property
    def num_tracks(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.boxes.shape[1])
