"""AnyCrowd pose nodes: driving video -> identity tracks + VACE pose video (DWPose on onnxruntime),
POSE_KEYPOINT from any pack -> tracks, and reference instance masks from poses by GrabCut (for
users without a segmentation pack). Thin glue over anycrowd_core.pose; docs/comfyui_pose_nodes.md.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.binding import identity_name
from anycrowd_core.pose.grabcut_masks import grabcut_instance_masks
from anycrowd_core.pose.keypoint_format import (
    COORDS, keypoint_boxes, pose_keypoint_to_sequence, pose_keypoint_to_tracks, tracks_to_pose_keypoint,
)
from anycrowd_core.pose.onnx_sessions import release_sessions
from anycrowd_core.pose.render import identity_colors, render_identity_preview, render_pose_video
from anycrowd_core.pose.track_edits import apply_track_edits, check_track_edits_syntax
from anycrowd_core.pose.tracking import track_people
from anycrowd_core.pose.types import PoseTracks

from . import pose_models
from .comfy_runtime import check_interrupted, progress_bar
from .input_checks import (
    aspects_differ,
    check_same_aspect,
    finite_number,
    image_batch,
    pose_canvas,
    user_text,
    whole_number,
)
from .node_types import TRACKS

POSE_KEYPOINT = "POSE_KEYPOINT"  # comfyui_controlnet_aux's socket type, so its nodes connect directly
CATEGORY = "AnyCrowd/pose"


def _model_inputs() -> dict:
    return {
        "detector_model": (pose_models.detector_choices(), {"tooltip": "YOLOX person detector (yolox_l.onnx from huggingface.co/yzd-v/DWPose), in ComfyUI/models/dwpose/ (comfyui_controlnet_aux's ckpts folder is searched too)."}),
        "pose_model": (pose_models.pose_choices(), {"tooltip": "DWPose whole-body model (dw-ll_ucoco_384.onnx from huggingface.co/yzd-v/DWPose), in ComfyUI/models/dwpose/."}),
        "providers": (["auto", "cpu"], {"default": "auto", "tooltip": "onnxruntime execution provider: auto = CUDA/ROCm/DirectML/CoreML when this onnxruntime build has one, else CPU; cpu = always CPU."}),
        "det_threshold": ("FLOAT", {"default": 0.3, "min": 0.01, "max": 0.99, "step": 0.01, "tooltip": "Person detection score threshold (DWPose default 0.3). Lower finds half-hidden people, higher drops false detections."}),
    }


def _tracker_inputs() -> dict:
    return {
        "max_gap": ("INT", {"default": 8, "min": 0, "max": 1000, "tooltip": "Frames a person may be missed (occlusion, detector miss) and still keep the same id; the gap is interpolated."}),
        "min_track_length": ("INT", {"default": 3, "min": 1, "max": 10000, "tooltip": "Tracks seen in fewer frames are dropped (false detections)."}),
        "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip": "Temporal smoothing of keypoints and boxes (0 = off, 0.5 = moderate); zero-phase, so it adds no lag."}),
        "max_people": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Keep at most this many tracks (the longest observed); 0 = all."}),
    }


def _render_inputs() -> dict:
    return {
        "draw_body": ("BOOLEAN", {"default": True, "tooltip": "Draw the body skeleton in the pose video."}),
        "draw_hands": ("BOOLEAN", {"default": True, "tooltip": "Draw the hands in the pose video."}),
        "draw_face": ("BOOLEAN", {"default": True, "tooltip": "Draw the face landmarks in the pose video."}),
        "light_head": ("BOOLEAN", {"default": False, "tooltip": "One-to-All's lightened head: head limbs and face drawn dim, telling a model trained on it to take the face from the reference. Leave off for stock Wan VACE."}),
    }


def _correction_inputs(what: str) -> dict:
    return {
        "appearance": ("BOOLEAN", {"default": True, "tooltip": f"Also tell people apart by the colours of their clothes (torso colour histogram from {what}); off = pose and motion only."}),
        "edits": ("STRING", {"multiline": True, "default": "", "tooltip": "Corrections applied to the tracks, one per line (or separated by ';'), with the ids and frame numbers of the preview: 'swap 0 1 @40' (exchange from frame 40 on), 'merge 3 into 1', 'drop 5', 'split 2 @60' (frames 60.. become a new track). Empty = none."}),
    }


def _edits_text(edits) -> str:
    text = "" if edits is None else edits
    user_text(lambda: check_track_edits_syntax(text), "edits", text)  # before any expensive work
    return text


def _apply_edits(tracks: PoseTracks, text: str) -> PoseTracks:
    return user_text(lambda: apply_track_edits(tracks, text), "edits", text) if text.strip() else tracks


def _track(seq, max_gap, min_track_length, smoothing, max_people, frames=None) -> PoseTracks:
    return track_people(seq, max_gap=int(max_gap), min_track_length=int(min_track_length),
                        smoothing=float(smoothing), max_tracks=int(max_people) or None, frames=frames)


def _render(tracks: PoseTracks, draw_body, draw_hands, draw_face, light_head) -> Tensor:
    return render_pose_video(tracks, draw_body=bool(draw_body), draw_hands=bool(draw_hands),
                             draw_face=bool(draw_face), light_head=bool(light_head))


def _video(images, what: str) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim not in (3, 4) or images.shape[-1] < 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise AnyCrowdError(f"{what} must be an IMAGE batch [frames, H, W, 3]; got {shape}.")
    return image_batch(images, what)


def _poses_fit(pose_keypoint, size: tuple[int, int], what: str, fix: str) -> None:
    """Refuse POSE_KEYPOINT whose canvas has another shape than the image/video (H, W) they are
    placed on: rescaling them would stretch every skeleton."""
    canvas = pose_canvas(pose_keypoint)
    if canvas is not None:
        check_same_aspect(canvas, size, "The pose_keypoint canvas", what, fix)


class AnyCrowdPoseExtractor:
    DESCRIPTION = (
        "Finds every person in the driving video with DWPose (onnxruntime) and follows them with stable ids "
        "through crossings, occlusion and exits. Outputs the tracks (for IILR Encode's binding), the OpenPose-style "
        "pose video (the VACE control video), the poses as POSE_KEYPOINT, and a preview labelling each track "
        "(T0, T1, ...) as you write it in a binding, and each frame's number. Wrong ids? Fix them in 'edits' "
        "(e.g. swap 0 1 @40). Save the POSE_KEYPOINT output to reuse the tracks without running this again."
    )
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = (TRACKS, "IMAGE", POSE_KEYPOINT, "IMAGE")
    RETURN_NAMES = ("tracks", "pose_video", "pose_keypoint", "preview")
    OUTPUT_TOOLTIPS = (
        "People with stable ids (keypoints, boxes, presence per frame), for IILR Encode / Instance Decoupler.",
        "Skeletons on black, controlnet_aux style: connect to IILR Encode's control_video.",
        "The tracks as POSE_KEYPOINT (pixels, one person per track in track order, with a track_id key).",
        "The video dimmed with each track's skeleton, box and id: check tracking here and read the ids for the binding.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The driving video as an IMAGE batch (e.g. Load Video -> Get Video Components)."}),
                **_model_inputs(),
                **_tracker_inputs(),
                **_render_inputs(),
                "release_models": ("BOOLEAN", {"default": False, "tooltip": "Free the onnxruntime sessions (CPU/GPU memory) after this run; off keeps them loaded for the next run."}),
            },
            "optional": _correction_inputs("the video"),
        }

    def extract(self, images, detector_model, pose_model, providers="auto", det_threshold=0.3, max_gap=8,
                min_track_length=3, smoothing=0.0, max_people=0, draw_body=True, draw_hands=True,
                draw_face=True, light_head=False, release_models=False, appearance=None, edits=None):
        video = _video(images, "images")
        edits = _edits_text(edits)
        est = pose_models.estimator(detector_model, pose_model, providers, det_threshold)
        bar = progress_bar(int(video.shape[0]))

        def cancel() -> bool:
            check_interrupted()  # raises ComfyUI's own InterruptProcessingException on Cancel
            return False

        try:
            seq = est.estimate_video(video, progress=lambda done, total: bar.update_absolute(done, total), cancel=cancel)
        finally:
            if release_models:
                release_sessions()
        tracks = _track(seq, max_gap, min_track_length, smoothing, max_people, video if appearance is not False else None)
        tracks = _apply_edits(tracks, edits)
        return (
            tracks,
            _render(tracks, draw_body, draw_hands, draw_face, light_head),
            tracks_to_pose_keypoint(tracks),
            render_identity_preview(video, tracks),
        )


class AnyCrowdPoseFromKeypoints:
    DESCRIPTION = (
        "Turns POSE_KEYPOINT from any pose pack (DWPose / OpenPose of comfyui_controlnet_aux, edited poses, our own "
        "export; pixel or normalised coordinates) into AnyCrowd tracks with stable ids, plus the pose video and "
        "an id preview. Other packs reorder people every frame; the tracker fixes that. Our own export with "
        "identities = as_given gives back the saved tracks exactly (ids, boxes), so a tracked clip is never tracked again."
    )
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = (TRACKS, "IMAGE", "IMAGE")
    RETURN_NAMES = ("tracks", "pose_video", "preview")
    OUTPUT_TOOLTIPS = (
        "People with stable ids, for IILR Encode / Instance Decoupler.",
        "Skeletons on black (the VACE control video).",
        "Each track's skeleton, box and id (over `images` when connected, else on black).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_keypoint": (POSE_KEYPOINT, {"tooltip": "Poses per frame in the comfyui_controlnet_aux format (a list of {'people': [...], 'canvas_width', 'canvas_height'})."}),
                "coords": (list(COORDS), {"default": "auto", "tooltip": "Coordinate convention: auto (normalised when every point is within 0..1.5, else pixels), pixel, or normalized."}),
                "identities": (["retrack", "as_given"], {"default": "retrack", "tooltip": "retrack: follow people with AnyCrowd's tracker (other packs reorder people every frame). as_given: keep the ids of the data (its track_id keys, else list position), e.g. poses exported by AnyCrowd and edited."}),
                **_tracker_inputs(),
                **_render_inputs(),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "The driving video: its size places the keypoints and it is shown under the preview (default: the canvas size stored in the poses)."}),
                **_correction_inputs("images, when connected, in retrack mode"),
            },
        }

    def convert(self, pose_keypoint, coords="auto", identities="retrack", max_gap=8, min_track_length=3,
                smoothing=0.0, max_people=0, draw_body=True, draw_hands=True, draw_face=True, light_head=False,
                images=None, appearance=None, edits=None):
        video = _video(images, "images") if images is not None else None
        edits = _edits_text(edits)
        size = dict(height=int(video.shape[1]), width=int(video.shape[2])) if video is not None else {}
        if video is not None:
            _poses_fit(pose_keypoint, (size["height"], size["width"]), "images",
                       "connect the video the poses were extracted from (or leave images unconnected).")
        if identities == "as_given":
            tracks = user_text(lambda: pose_keypoint_to_tracks(pose_keypoint, coords=coords, **size),
                               "pose_keypoint (POSE_KEYPOINT)", pose_keypoint)
        elif identities == "retrack":
            seq = user_text(lambda: pose_keypoint_to_sequence(pose_keypoint, coords=coords, **size),
                            "pose_keypoint (POSE_KEYPOINT)", pose_keypoint)
            if video is not None and int(video.shape[0]) != len(seq.frames):
                raise AnyCrowdError(
                    f"images has {int(video.shape[0])} frames but the poses have {len(seq.frames)}: connect the video "
                    "the poses were extracted from (or leave images unconnected)."
                )
            tracks = _track(seq, max_gap, min_track_length, smoothing, max_people,
                            video if appearance is not False and video is not None else None)
        else:
            raise AnyCrowdError(f"identities must be 'retrack' or 'as_given', got {identities!r}.")
        if video is not None and int(video.shape[0]) != tracks.num_frames:
            raise AnyCrowdError(
                f"images has {int(video.shape[0])} frames but the poses have {tracks.num_frames}: connect the video "
                "the poses were extracted from (or leave images unconnected)."
            )
        tracks = _apply_edits(tracks, edits)
        return (
            tracks,
            _render(tracks, draw_body, draw_hands, draw_face, light_head),
            render_identity_preview(video, tracks),
        )


def _scale_people(kp: np.ndarray, boxes: np.ndarray, src_hw, dst_hw, what: str):
    """Keypoints `[P, K, 3]` and boxes `[P, 4]` from an src (H, W) canvas onto dst (H, W)."""
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if aspects_differ((sh, sw), (dh, dw)):
        raise AnyCrowdError(
            f"The {what} are for a {sw}x{sh} picture but the image is {dw}x{dh} (another shape): give the poses "
            "of this image (run the pose extractor on it, or use the driving-video frame the image was taken from)."
        )
    kp, boxes = kp.copy(), boxes.copy()
    kp[..., 0] *= dw / sw
    kp[..., 1] *= dh / sh
    boxes[..., 0::2] *= dw / sw
    boxes[..., 1::2] *= dh / sh
    return kp, boxes


def masks_preview(image: Tensor, masks: Tensor) -> Tensor:
    """`[1, H, W, 3]`: the image dimmed, each mask tinted in its identity colour and labelled A, B, ..."""
    out = (image.numpy() * 0.5 * 255).astype(np.float32)
    colors = identity_colors(max(int(masks.shape[0]), 1))
    m = masks.numpy() > 0.5
    for k in range(m.shape[0]):
        out[m[k]] = out[m[k]] * 0.4 + np.asarray(colors[k], np.float32) * 0.6
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    scale = max(0.4, min(out.shape[:2]) / 600)
    for k in range(m.shape[0]):
        ys, xs = np.nonzero(m[k])
        if xs.size:
            org = (int(xs.min()) + 2, max(int(ys.min()) + int(22 * scale), int(22 * scale)))
            cv2.putText(out, identity_name(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(out, identity_name(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, colors[k], 2, cv2.LINE_AA)
    return torch.from_numpy(out).float().div_(255.0)[None]


class AnyCrowdMasksFromPoses:
    DESCRIPTION = (
        "Reference instance masks without a segmentation pack: OpenCV GrabCut seeded with each person's box and "
        "skeleton (the other people's skeletons are background). One MASK per person, left to right, ready for "
        "the Instance Decoupler (A = leftmost). Poses come from tracks or POSE_KEYPOINT of this image, or DWPose "
        "runs on the image when neither is connected."
    )
    CATEGORY = CATEGORY
    FUNCTION = "make_masks"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("masks", "preview")
    OUTPUT_TOOLTIPS = (
        "One mask per person [N, H, W], ordered left to right: connect to Instance Decoupler's masks.",
        "The image with each mask tinted and labelled with its identity letter (A, B, ...).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference image with all characters (the first image of a batch is used)."}),
                **_model_inputs(),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Which frame of the connected tracks / POSE_KEYPOINT shows this image (0 for poses of the image itself)."}),
                "iterations": ("INT", {"default": 5, "min": 1, "max": 50, "tooltip": "GrabCut iterations (more = slower, rarely better)."}),
                "margin": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Context around each person's box given to GrabCut, as a fraction of the box size."}),
            },
            "optional": {
                "tracks": (TRACKS, {"tooltip": "Poses of this image as AnyCrowd tracks (e.g. the Pose Extractor run on the image). Leave both pose inputs empty to detect with DWPose."}),
                "pose_keypoint": (POSE_KEYPOINT, {"tooltip": "Poses of this image as POSE_KEYPOINT from any pose pack."}),
            },
        }

    def make_masks(self, image, detector_model, pose_model, providers="auto", det_threshold=0.3, frame=0,
                   iterations=5, margin=0.15, tracks=None, pose_keypoint=None):
        img = _video(image, "image")[0]
        frame = whole_number(frame, "frame", low=0, fix="Use 0 for poses of the image itself.")
        iterations = whole_number(iterations, "iterations", low=1, fix="Use e.g. 5.")
        margin = finite_number(margin, "margin", low=0.0, fix="Use e.g. 0.15 (a fraction of the box size).")
        kp, boxes = self._people(img, detector_model, pose_model, providers, det_threshold, frame,
                                 tracks, pose_keypoint)
        if kp.shape[0] == 0:
            raise AnyCrowdError(
                "No person found in the reference image: check the image, lower det_threshold, or connect its poses."
            )
        order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")
        kp, boxes = kp[order], boxes[order]
        masks = grabcut_instance_masks(img, kp, boxes, iterations=iterations, margin=margin)
        for k in range(masks.shape[0]):
            if not masks[k].any():
                # GrabCut found nothing (no confident skeleton): the box keeps the person usable.
                logging.warning("AnyCrowd: GrabCut found no pixels for person %s; using its box.", identity_name(k))
                x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
                masks[k, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        masks = masks.float()
        return (masks, masks_preview(img, masks))

    @staticmethod
    def _people(img, detector_model, pose_model, providers, det_threshold, frame, tracks, pose_keypoint):
        """Keypoints `[P, 128, 3]` and boxes `[P, 4]` px of the people in the image."""
        height, width = int(img.shape[0]), int(img.shape[1])
        if tracks is not None and pose_keypoint is not None:
            raise AnyCrowdError("Both tracks and pose_keypoint are connected: connect one of them (or none to detect).")
        if tracks is not None:
            if not isinstance(tracks, PoseTracks):
                raise AnyCrowdError("tracks must come from an AnyCrowd pose node (Pose Extractor / Pose From Keypoints).")
            if not 0 <= frame < tracks.num_frames:
                raise AnyCrowdError(f"frame {frame} is outside the tracks' {tracks.num_frames} frames (0..{tracks.num_frames - 1}).")
            here = tracks.present[:, frame].bool().numpy() & np.isfinite(tracks.boxes[:, frame].numpy()).all(-1)
            kp = tracks.keypoints[:, frame].double().numpy()[here]
            boxes = tracks.boxes[:, frame].double().numpy()[here]
            return _scale_people(kp, boxes, (tracks.height, tracks.width), (height, width), "tracks")
        if pose_keypoint is not None:
            _poses_fit(pose_keypoint, (height, width), "image",
                       "give the poses of this image (run a pose node on it), or leave pose_keypoint unconnected.")
            seq = user_text(lambda: pose_keypoint_to_sequence(pose_keypoint, height=height, width=width),
                            "pose_keypoint (POSE_KEYPOINT)", pose_keypoint)
            if not 0 <= frame < len(seq.frames):
                raise AnyCrowdError(f"frame {frame} is outside the POSE_KEYPOINT's {len(seq.frames)} frames.")
            f = seq.frames[frame]
            kp = f.keypoints.double().numpy()
            return kp, keypoint_boxes(kp, height, width, 0.1)
        est = pose_models.estimator(detector_model, pose_model, providers, det_threshold)
        poses = est(img)
        return poses.keypoints.double().numpy(), poses.boxes.double().numpy()
