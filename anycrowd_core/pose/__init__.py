"""Multi-person pose for AnyCrowd: DWPose on onnxruntime, identity tracking, rendering,
POSE_KEYPOINT interop, track -> identity binding and reference alignment."""

from .dwpose import DWPoseEstimator
from .onnx_sessions import release_sessions
from .track_boxes import padded_track_boxes, select_tracks, slice_tracks
from .tracking import Tracker, TrackerConfig, track_people
from .types import (
    BODY, BODY_POINTS, FACE, FACE_POINTS, HAND_POINTS, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND,
    FramePoses, PoseSequence, PoseTracks,
)

__all__ = [
    "DWPoseEstimator", "release_sessions", "Tracker", "TrackerConfig", "track_people",
    "padded_track_boxes", "select_tracks", "slice_tracks",
    "BODY", "BODY_POINTS", "FACE", "FACE_POINTS", "HAND_POINTS", "LEFT_HAND", "NUM_KEYPOINTS",
    "RIGHT_HAND", "FramePoses", "PoseSequence", "PoseTracks",
]
