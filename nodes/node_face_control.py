"""AnyCrowd Face Control node (X-Dyna §3.3): face patches of the driving video as a SECOND
native VACE context with its own strength, appended to the conditioning of AnyCrowd IILR
Encode (zero reference frames, so it lines up with that latent); docs/face_control.md.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.face_control import FACE_MODES, face_control_video
from anycrowd_core.iilr import encode_control_stream
from anycrowd_core.layout import TokenLayout
from anycrowd_core.pose.binding import bind_tracks, is_index_binding
from anycrowd_core.pose.types import PoseTracks

from .codec_vae import ComfyVAECodec
from .comfy_runtime import resize_frames
from .input_checks import conditioning, finite_number, image_batch
from .node_types import LAYOUT, TRACKS
from .track_inputs import tracks_input
from .vace_conditioning import append_vace_stream


def bound_tracks(tracks: PoseTracks, binding: str, num_identities: int | None) -> tuple[PoseTracks, Tensor]:
    """(the tracks the binding animates, source offsets `[M', 2]` px) — the same binding
    rules as AnyCrowd IILR Encode (`bind_tracks`): empty = left to right, "0,1,2" or
    "A=0, B=1" (shifted copies "B=0@+0.3w" read their face at the source track).
    Without a layout (`num_identities` None) an empty or index-form binding keeps every
    track, and the pose syntax counts the identities it names."""
    text = (binding or "").strip()
    n = num_identities
    if n is None:
        if not text or text.lower() == "auto" or is_index_binding(text):
            return tracks, torch.zeros(tracks.num_tracks, 2)
        letters = re.findall(r"(?:^|[,;\n])\s*([A-Za-z])\s*=", text)
        n = max((ord(c.upper()) - ord("A") + 1 for c in letters), default=1)
    bound = bind_tracks(text, tracks, n, None)
    return bound.tracks, bound.offsets


class AnyCrowdFaceControl:
    DESCRIPTION = (
        "X-Dyna-style face control: cuts each tracked face out of the DRIVING video (global: the whole face box; "
        "local: eyes and mouth only, less of the driver's identity leaks), pastes it at its position on neutral "
        "gray, and appends it to the Wan VACE conditioning as a second control stream with its own strength. "
        "Connect after AnyCrowd IILR Encode; sample as usual. Without a layout only face_video is produced "
        "(for AnyCrowd Long Video Sampler)."
    )
    CATEGORY = "AnyCrowd/conditioning"
    FUNCTION = "apply"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "IMAGE")
    RETURN_NAMES = ("positive", "negative", "face_video")
    OUTPUT_TOOLTIPS = (
        "Positive conditioning with the face stream appended as one more VACE context (unchanged without a layout).",
        "Negative conditioning with the same face stream.",
        "The face-control video (face pixels on neutral gray), at the layout's size, else the driving video's size.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "Positive conditioning from AnyCrowd IILR Encode (or text conditioning when only face_video is wanted)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning from AnyCrowd IILR Encode."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors)."}),
                "images": ("IMAGE", {"tooltip": "The DRIVING video the poses were extracted from (real frames, not the pose rendering), same size and frame count as the tracks."}),
                "mode": (FACE_MODES, {"default": "local", "tooltip": "local: eyes and mouth only (expression with little identity leakage, recommended); global: the whole face box."}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "Strength of the face stream's VACE hints (the pose stream keeps its own strength)."}),
                "enlarge": ("FLOAT", {"default": 1.5, "min": 0.5, "max": 4.0, "step": 0.05, "tooltip": "Face box side as a multiple of the face landmarks' extent (1.5 takes in forehead and chin)."}),
            },
            "optional": {
                "layout": (LAYOUT, {"tooltip": "Token layout from AnyCrowd IILR Encode: gives the output size, length and reference-frame count the face stream must match. Leave unconnected to only make face_video."}),
                "tracks": (TRACKS, {"tooltip": "Identity tracks from AnyCrowd Pose Extractor (with face landmarks)."}),
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Instead of tracks: POSE_KEYPOINT from a DWPose node with face landmarks; person i of every frame is track i (or its track_id)."}),
                "binding": ("STRING", {"default": "", "tooltip": "Which tracks get a face: the same binding as for the characters. Same rules as AnyCrowd IILR Encode: empty = left to right (every track without a layout), '0,1' per track, or 'A=0, B=1' (shifted copies like 'B=0@+0.3w' read the face at the source track)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, mode=None, strength=None):
        if mode is not None and mode not in FACE_MODES:
            return f"mode {mode!r} is not available: choose one of {', '.join(FACE_MODES)}."
        if strength is not None:
            try:
                finite_number(strength, "strength", low=0.0)
            except AnyCrowdError:
                return f"strength must be a finite number >= 0 (got {strength})."
        return True

    def apply(self, positive, negative, vae, images, mode, strength, enlarge, layout=None, tracks=None,
              pose_keypoint=None, binding=""):
        if layout is not None and not isinstance(layout, TokenLayout):
            raise AnyCrowdError("layout must come from AnyCrowd IILR Encode (an ANYCROWD_LAYOUT).")
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise AnyCrowdError("images must be the driving video as an IMAGE batch [frames, H, W, 3].")
        images = image_batch(images, "images (the driving video)", fix="Connect the driving video the poses came from.")
        strength = finite_number(strength, "strength", low=0.0, fix="Use e.g. 0.5.")
        enlarge = finite_number(enlarge, "enlarge", low=0.0, fix="Use e.g. 1.5.")
        if layout is not None:
            positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        source = tracks_input(tracks, pose_keypoint)
        frames = int(images.shape[0])
        if layout is not None and frames != layout.pixel_frames:
            raise AnyCrowdError(
                f"The driving video has {frames} frames but the layout (AnyCrowd IILR Encode) was built for "
                f"{layout.pixel_frames}: give the face control the same frames as the control video "
                "(same ImageFromBatch / frame cap), and extract the tracks from them."
            )
        bound, offsets = bound_tracks(source, binding, layout.num_identities if layout is not None else None)
        face = face_control_video(images, bound, mode=mode, enlarge=enlarge,
                                  source_offsets=offsets)
        video = face.video
        if layout is None:
            return (positive, negative, video)
        height, width = layout.frame_size
        video = resize_frames(video, width, height).clamp(0, 1)
        stream = encode_control_stream(ComfyVAECodec(vae), video, num_ref_frames=layout.num_ref_frames)
        positive, negative = append_vace_stream(positive, negative, stream, strength)
        return (positive, negative, video)
