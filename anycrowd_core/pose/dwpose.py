"""DWPose on onnxruntime: YOLOX-L person boxes, then RTMPose whole-body (SimCC) keypoints for
all people of a frame in one batched run, mapped to the 128-point layout of `types`.
Pre/post-processing follows the DWPose ONNX files as comfyui_controlnet_aux and rtmlib run
them; every step and constant is listed in docs/pose_detection.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..errors import AnyCrowdError, SamplingCancelled
from .onnx_sessions import DETECTOR_FILES, POSE_FILES, Providers, find_model_file, get_session
from .types import BODY_POINTS, NUM_KEYPOINTS, FramePoses, PoseSequence

# ----------------------------------------------------------------------------- constants

YOLOX_INPUT_HW = (640, 640)
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114  # YOLOX's own letterbox grey
PERSON_CLASS = 0

POSE_INPUT_HW = (384, 288)  # dw-ll_ucoco_384: h=384, w=288
BBOX_PADDING = 1.25
# mmpose ImageNet statistics in RGB order on 0..255 pixels (the DWPose training config
# converts BGR->RGB before normalising).
POSE_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], np.float32)
WHOLEBODY_POINTS = 133

# COCO-17 body -> OpenPose-18 body. -1 = neck, made from the two shoulders.
# OpenPose: nose, neck, r_sho, r_elb, r_wri, l_sho, l_elb, l_wri, r_hip, r_knee, r_ank,
#           l_hip, l_knee, l_ank, r_eye, l_eye, r_ear, l_ear
# COCO:     nose, l_eye, r_eye, l_ear, r_ear, l_sho, r_sho, l_elb, r_elb, l_wri, r_wri,
#           l_hip, r_hip, l_knee, r_knee, l_ank, r_ank
COCO_TO_OPENPOSE = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_L_SHOULDER, COCO_R_SHOULDER = 5, 6
WB_FACE = slice(23, 91)  # 68 face landmarks (COCO-WholeBody 17..22 are the feet: skipped)
WB_LEFT_HAND = slice(91, 112)
WB_RIGHT_HAND = slice(112, 133)


# ----------------------------------------------------------------------------- frames


def as_rgb_uint8(frame) -> np.ndarray:
    """`[H, W, 3]` RGB frame (uint8 0..255, or float 0..1 as ComfyUI IMAGE) -> uint8 numpy."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        hint = " For a video [T, H, W, 3] use estimate_video." if frame.ndim == 4 else ""
        raise AnyCrowdError(
            f"A frame for pose detection must be [H, W, 3] RGB, got shape {tuple(frame.shape)}."
            + hint
        )
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise AnyCrowdError(f"Frame of {frame.shape[1]}x{frame.shape[0]} px is too small for pose detection.")
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    if np.issubdtype(frame.dtype, np.floating):
        return np.ascontiguousarray(np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8))
    raise AnyCrowdError(f"Frame dtype {frame.dtype} not supported: pass uint8 0..255 or float 0..1.")


# ----------------------------------------------------------------------------- YOLOX


def letterbox(frame_rgb: np.ndarray, input_hw=YOLOX_INPUT_HW) -> tuple[np.ndarray, float]:
    """YOLOX input `[1, 3, h, w]` float32 BGR 0..255 (not normalised) and the resize ratio.

    The frame is resized by r = min(h/H, w/W) keeping its aspect ratio and placed at the
    top-left of an h x w canvas filled with 114 (YOLOX's `preproc`). BGR because YOLOX was
    trained on OpenCV-loaded images.
    """
    h, w = input_hw
    H, W = frame_rgb.shape[:2]
    r = min(h / H, w / W)
    nh, nw = max(1, int(H * r)), max(1, int(W * r))
    canvas = np.full((h, w, 3), YOLOX_PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame_rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.empty((1, 3, h, w), np.float32)
    for c in range(3):  # per channel: much faster than one strided transpose copy
        out[0, c] = canvas[:, :, 2 - c]
    return out, r


def yolox_grids(input_hw=YOLOX_INPUT_HW, strides=YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor cell (x, y) `[A, 2]` and stride `[A, 1]` in YOLOX's output order (stride by
    stride, row-major cells)."""
    grids, expanded = [], []
    for s in strides:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def yolox_decode(raw: np.ndarray, input_hw=YOLOX_INPUT_HW) -> tuple[np.ndarray, np.ndarray]:
    """Raw YOLOX output `[A, 5 + C]` -> boxes xyxy `[A, 4]` in input px and class scores
    `[A, C]` = objectness * class probability (the export already applied the sigmoids).

    xy = (out + cell) * stride, wh = exp(out) * stride (YOLOX `demo_postprocess`).
    """
    grid, stride = yolox_grids(input_hw)
    if raw.shape[0] != grid.shape[0]:
        raise AnyCrowdError(
            f"The detector returned {raw.shape[0]} anchors, but YOLOX at {input_hw[1]}x{input_hw[0]} "
            f"has {grid.shape[0]}: the file is not a YOLOX export (use yolox_l.onnx)."
        )
    raw = raw.astype(np.float32)
    xy = (raw[:, :2] + grid) * stride
    with np.errstate(over="ignore"):
        wh = np.exp(raw[:, 2:4]) * stride
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    return boxes, raw[:, 4:5] * raw[:, 5:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, highest score first.

    Areas use the +1 pixel convention of the DWPose/YOLOX reference NMS, so results match it.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------------- RTMPose


def bbox_center_scale(boxes: np.ndarray, input_hw=POSE_INPUT_HW, padding=BBOX_PADDING):
    """Person boxes xyxy `[P, 4]` -> crop centres `[P, 2]` and sizes `[P, 2]` (w, h) in px:
    padded by `padding`, then widened or heightened to the model's aspect w/h (mmpose
    `bbox_xyxy2cs` + `_fix_aspect_ratio`)."""
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    scale = (boxes[:, 2:] - boxes[:, :2]) * padding
    aspect = input_hw[1] / input_hw[0]
    w, h = scale[:, 0], scale[:, 1]
    wide = w > h * aspect
    scale = np.stack([np.where(wide, w, h * aspect), np.where(wide, w / aspect, h)], axis=1)
    return center.astype(np.float32), scale.astype(np.float32)


def warp_matrix(center: np.ndarray, scale: np.ndarray, input_hw=POSE_INPUT_HW) -> np.ndarray:
    """2x3 affine frame px -> model input px mapping the crop box (center, scale) onto the
    input (mmpose `get_warp_matrix`, rotation 0, from three point pairs)."""
    oh, ow = input_hw
    src_dir = np.array([0.0, scale[0] * -0.5])
    dst_dir = np.array([0.0, ow * -0.5])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = (ow * 0.5, oh * 0.5)
    dst[1] = dst[0] + dst_dir
    # third point: the first two's difference turned 90 degrees about the second point
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def crop_people(frame_rgb: np.ndarray, boxes: np.ndarray, input_hw=POSE_INPUT_HW):
    """Model input `[P, 3, h, w]` float32 (RGB, ImageNet-normalised) and the crop centres and
    sizes needed to map keypoints back."""
    center, scale = bbox_center_scale(boxes, input_hw)
    oh, ow = input_hw
    batch = np.empty((len(boxes), 3, oh, ow), np.float32)
    for i in range(len(boxes)):
        crop = cv2.warpAffine(frame_rgb, warp_matrix(center[i], scale[i], input_hw), (ow, oh),
                              flags=cv2.INTER_LINEAR)
        for c in range(3):  # per channel: avoids a slow strided HWC -> CHW float copy
            np.subtract(crop[:, :, c], POSE_MEAN[c], out=batch[i, c], dtype=np.float32)
            batch[i, c] /= POSE_STD[c]
    return batch, center, scale


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float):
    """SimCC maps `[P, K, Wx]`, `[P, K, Wy]` -> locations `[P, K, 2]` in model-input px and
    scores `[P, K]` (mmpose `get_simcc_maximum`): argmax per axis, score = the smaller of the
    two maxima, location -1 where the score is <= 0, divided by the split ratio."""
    x = np.argmax(simcc_x, axis=2)
    y = np.argmax(simcc_y, axis=2)
    locs = np.stack([x, y], axis=-1).astype(np.float32)
    score = np.minimum(np.max(simcc_x, axis=2), np.max(simcc_y, axis=2)).astype(np.float32)
    locs[score <= 0] = -1
    return locs / split_ratio, score


def to_openpose_layout(points: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """COCO-WholeBody `[P, 133, 2]` frame px + scores `[P, 133]` -> `[P, 128, 3]` in the
    layout of `types` (OpenPose-18 body, 68 face, left hand, right hand; feet dropped).

    Points scoring below `threshold` become (0, 0, 0). The neck is the shoulders' midpoint
    with the weaker shoulder's score, present only when both shoulders are.
    """
    P = points.shape[0]
    out = np.zeros((P, NUM_KEYPOINTS, 3), np.float32)
    conf = np.clip(scores, 0.0, 1.0)
    kp = np.concatenate([points, conf[..., None]], axis=-1)
    body = np.zeros((P, BODY_POINTS, 3), np.float32)
    for op, coco in enumerate(COCO_TO_OPENPOSE):
        if coco >= 0:
            body[:, op] = kp[:, coco]
    ls, rs = kp[:, COCO_L_SHOULDER], kp[:, COCO_R_SHOULDER]
    body[:, 1, :2] = (ls[:, :2] + rs[:, :2]) * 0.5
    both = (scores[:, COCO_L_SHOULDER] >= threshold) & (scores[:, COCO_R_SHOULDER] >= threshold)
    body[:, 1, 2] = np.where(both, np.minimum(ls[:, 2], rs[:, 2]), 0.0)
    out[:, :BODY_POINTS] = body
    out[:, BODY_POINTS:] = np.concatenate(
        [kp[:, WB_FACE], kp[:, WB_LEFT_HAND], kp[:, WB_RIGHT_HAND]], axis=1
    )
    # Scores are clipped to 0..1 before the test, which changes nothing for thresholds in
    # 0..1; a score <= 0 (SimCC location -1) is missing even at threshold 0.
    conf = out[..., 2]
    out[(conf < threshold) | (conf <= 0)] = 0.0
    return out


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class _ModelIO:
    """Names and sizes read from a session: input name, input (h, w), static batch size or
    None when the batch axis is dynamic, input numpy dtype, output names."""

    input_name: str
    input_hw: tuple[int, int]
    batch: int | None
    dtype: type
    outputs: tuple[str, ...]


def _model_io(session, default_hw, kind: str, n_outputs: int) -> _ModelIO:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) < n_outputs:
        raise AnyCrowdError(
            f"The {kind} ONNX file has inputs {[(i.name, i.shape) for i in inputs]} and outputs "
            f"{[o.name for o in outputs]}, not those of the DWPose {kind} "
            f"({'yolox_l.onnx' if kind == 'detector' else 'dw-ll_ucoco_384.onnx'})."
        )
    shape = inputs[0].shape
    hw = tuple(d if isinstance(d, int) and d > 0 else default_hw[k] for k, d in enumerate(shape[2:]))
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    names = [o.name for o in outputs]
    if kind == "pose" and {"simcc_x", "simcc_y"} <= set(names):
        names = ["simcc_x", "simcc_y"]
    return _ModelIO(inputs[0].name, hw, batch, dtype, tuple(names[:n_outputs]))


class DWPoseEstimator:
    """Whole-body poses of every person in a frame: YOLOX-L boxes + DWPose (RTMPose-l, SimCC).

    detector_path / pose_path: `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` (see `from_folders`).
    providers: "auto" (CUDA / ROCm / DirectML / CoreML when present, else CPU), "cpu", or a
        list of onnxruntime provider names.
    det_threshold: person score (objectness * class) a box must exceed; nms_iou: IoU above
        which the lower-scored of two boxes is dropped; kpt_threshold: keypoint score below
        which a point is reported missing (confidence 0).

    Sessions live in the shared cache of `onnx_sessions` and are looked up on every call, so
    `release_sessions()` frees them even while an estimator object is still around.
    """

    def __init__(
        self,
        detector_path: str | os.PathLike,
        pose_path: str | os.PathLike,
        providers: Providers = "auto",
        det_threshold: float = 0.3,
        nms_iou: float = 0.45,
        kpt_threshold: float = 0.3,
    ):
        for p, what in ((detector_path, "detector (yolox_l.onnx)"), (pose_path, "pose model (dw-ll_ucoco_384.onnx)")):
            if not os.path.isfile(p):
                raise AnyCrowdError(f"DWPose {what} file not found: {p}. Check the path.")
        if not (0.0 <= det_threshold < 1.0 and 0.0 < nms_iou <= 1.0 and 0.0 <= kpt_threshold <= 1.0):
            raise AnyCrowdError(
                f"DWPose thresholds out of range (det_threshold={det_threshold} in [0, 1), "
                f"nms_iou={nms_iou} in (0, 1], kpt_threshold={kpt_threshold} in [0, 1])."
            )
        self.detector_path = os.fspath(detector_path)
        self.pose_path = os.fspath(pose_path)
        self.providers = providers
        self.det_threshold = float(det_threshold)
        self.nms_iou = float(nms_iou)
        self.kpt_threshold = float(kpt_threshold)

    @classmethod
    def from_folders(
        cls,
        search_dirs: Sequence[str | os.PathLike],
        detector: str | None = None,
        pose: str | None = None,
        **kwargs,
    ) -> DWPoseEstimator:
        """Find the model files by name in `search_dirs` (recursively). `detector` / `pose`
        may name a file or give a path; by default the usual DWPose file names are tried."""
        det = find_model_file([detector] if detector else DETECTOR_FILES, search_dirs, "DWPose detector (YOLOX)")
        pos = find_model_file([pose] if pose else POSE_FILES, search_dirs, "DWPose pose")
        return cls(det, pos, **kwargs)

    # -- sessions

    def _detector(self):
        session = get_session(self.detector_path, self.providers)
        return session, _model_io(session, YOLOX_INPUT_HW, "detector", 1)

    def _pose(self):
        session = get_session(self.pose_path, self.providers)
        return session, _model_io(session, POSE_INPUT_HW, "pose", 2)

    # -- steps

    def detect_people(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes xyxy `[P, 4]` in frame px (unclipped, as the pose crop uses them) and
        scores `[P]`, highest score first."""
        rgb = as_rgb_uint8(frame)
        session, io = self._detector()
        x, ratio = letterbox(rgb, io.input_hw)
        raw = session.run(list(io.outputs), {io.input_name: x.astype(io.dtype)})[0]
        raw = np.asarray(raw, np.float32)
        if raw.ndim != 3 or raw.shape[2] <= 5 + PERSON_CLASS:
            raise AnyCrowdError(
                f"The detector output has shape {raw.shape}, not YOLOX's [1, anchors, 85]: use yolox_l.onnx."
            )
        boxes, cls_scores = yolox_decode(raw[0], io.input_hw)
        scores = cls_scores[:, PERSON_CLASS]
        mask = scores > self.det_threshold
        boxes, scores = boxes[mask] / ratio, scores[mask]
        keep = nms(boxes, scores, self.nms_iou)
        return boxes[keep].astype(np.float32), scores[keep].astype(np.float32)

    def estimate_keypoints(self, frame, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """COCO-WholeBody keypoints `[P, 133, 2]` in frame px and raw scores `[P, 133]` for the
        given person boxes, all people in one session run (in chunks of the model's batch
        size when the file has a fixed batch axis)."""
        rgb = as_rgb_uint8(frame)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, WHOLEBODY_POINTS, 2), np.float32), np.zeros((0, WHOLEBODY_POINTS), np.float32)
        session, io = self._pose()
        batch, center, scale = crop_people(rgb, boxes, io.input_hw)
        simcc_x, simcc_y = self._run_pose(session, io, batch)
        oh, ow = io.input_hw
        if simcc_x.shape[1] != WHOLEBODY_POINTS or simcc_y.shape[1] != WHOLEBODY_POINTS:
            raise AnyCrowdError(
                f"The pose model gives {simcc_x.shape[1]} keypoints, not COCO-WholeBody's 133: use "
                "dw-ll_ucoco_384.onnx (a body-only RTMPose file does not have hands and face)."
            )
        split = simcc_x.shape[2] / ow
        if abs(simcc_y.shape[2] / oh - split) > 1e-6:
            raise AnyCrowdError(
                f"SimCC outputs {simcc_x.shape} / {simcc_y.shape} do not match the input {ow}x{oh}: "
                "use dw-ll_ucoco_384.onnx."
            )
        locs, scores = simcc_decode(simcc_x, simcc_y, split)
        # inverse of the crop warp (rotation 0): input px -> frame px
        points = locs / np.array([ow, oh], np.float32) * scale[:, None] + center[:, None] - scale[:, None] / 2
        return points.astype(np.float32), scores

    def _run_pose(self, session, io: _ModelIO, batch: np.ndarray):
        x = batch.astype(io.dtype)
        if io.batch is None:
            out = session.run(list(io.outputs), {io.input_name: x})
            return np.asarray(out[0], np.float32), np.asarray(out[1], np.float32)
        # Fixed batch axis (e.g. an export with batch 1 or 5): run full chunks, zero-padded.
        xs, ys = [], []
        for start in range(0, len(x), io.batch):
            chunk = x[start:start + io.batch]
            n = len(chunk)
            if n < io.batch:
                chunk = np.concatenate([chunk, np.zeros((io.batch - n, *chunk.shape[1:]), chunk.dtype)])
            out = session.run(list(io.outputs), {io.input_name: chunk})
            xs.append(np.asarray(out[0][:n], np.float32))
            ys.append(np.asarray(out[1][:n], np.float32))
        return np.concatenate(xs), np.concatenate(ys)

    # -- whole frame / video

    def __call__(self, frame) -> FramePoses:
        """Every person in one `[H, W, 3]` RGB frame (uint8, or float 0..1)."""
        rgb = as_rgb_uint8(frame)
        boxes, scores = self.detect_people(rgb)
        if len(boxes) == 0:
            return FramePoses.empty()
        points, kpt_scores = self.estimate_keypoints(rgb, boxes)
        keypoints = to_openpose_layout(points, kpt_scores, self.kpt_threshold)
        H, W = rgb.shape[:2]
        clipped = boxes.copy()
        clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, W)
        clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, H)
        return FramePoses(
            keypoints=torch.from_numpy(keypoints),
            boxes=torch.from_numpy(clipped),
            scores=torch.from_numpy(scores),
        )

    def estimate_video(
        self,
        frames,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> PoseSequence:
        """Poses of every frame of a `[T, H, W, 3]` RGB video (uint8, or float 0..1).

        progress(done, T) is called after each frame; cancel() is checked before each frame
        and raises `SamplingCancelled` when it returns True.
        """
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu()
        shape = tuple(frames.shape) if hasattr(frames, "shape") else None
        if shape is None or len(shape) != 4 or shape[3] != 3:
            raise AnyCrowdError(f"Pose extraction needs a video [T, H, W, 3] RGB, got shape {shape}.")
        T, H, W = shape[:3]
        out = []
        for t in range(T):
            if cancel is not None and cancel():
                raise SamplingCancelled(f"pose extraction cancelled at frame {t} of {T}")
            out.append(self(frames[t]))
            if progress is not None:
                progress(t + 1, T)
        return PoseSequence(frames=out, height=int(H), width=int(W))
