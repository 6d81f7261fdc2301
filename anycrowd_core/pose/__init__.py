"""Multi-person pose for AnyCrowd: DWPose on onnxruntime, identity tracking, rendering,
POSE_KEYPOINT interop, track -> identity binding and reference alignment."""

from .types import (
    BODY, BODY_POINTS, FACE, FACE_POINTS, HAND_POINTS, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND,
    FramePoses, PoseSequence, PoseTracks,
)

__all__ = [
    "BODY", "BODY_POINTS", "FACE", "FACE_POINTS", "HAND_POINTS", "LEFT_HAND", "NUM_KEYPOINTS",
    "RIGHT_HAND", "FramePoses", "PoseSequence", "PoseTracks",
]
