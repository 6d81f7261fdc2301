"""Multi-person pose for AnyCrowd: DWPose on onnxruntime, identity tracking, rendering,
POSE_KEYPOINT interop, track -> identity binding and reference alignment."""

from .dwpose import DWPoseEstimator
from .onnx_sessions import release_sessions
from .types import (
    BODY, BODY_POINTS, FACE, FACE_POINTS, HAND_POINTS, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND,
    FramePoses, PoseSequence, PoseTracks,
)

__all__ = [
    "DWPoseEstimator", "release_sessions",
    "BODY", "BODY_POINTS", "FACE", "FACE_POINTS", "HAND_POINTS", "LEFT_HAND", "NUM_KEYPOINTS",
    "RIGHT_HAND", "FramePoses", "PoseSequence", "PoseTracks",
]
