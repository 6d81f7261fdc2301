"""AnyCrowd IILR Encode node: isolated identities + control video + per-character boxes ->
native Wan VACE conditioning (as WanVaceToVideo appends it), the latent to sample with the
reference frames in front, the trim count and the token layout (ANYCROWD_LAYOUT).
"""

from __future__ import annotations

from torch import Tensor

from anycrowd_core.boxes import validate_boxes_text
from anycrowd_core.codec import check_frame_count, check_frame_size
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import encode_iilr
from anycrowd_core.layout import build_token_layout
from anycrowd_core.pose.binding import binding_text_problem

from .codec_vae import ComfyVAECodec
from .comfy_runtime import empty_latent, resize_frames, resize_masks
from .input_checks import MAX_RESOLUTION, conditioning, finite_number, mask_batch, user_text, whole_number
from .node_types import INSTANCES, LAYOUT, TRACKS
from .reference_instances import fit_instances, reference_input
from .track_inputs import character_boxes, control_video_input, track_masks_input
from .vace_conditioning import append_vace_stream

EXAMPLE_BOXES = "# one line per character: x0,y0,x1,y1 or keyframes 'frame: box; frame: box'\n"


class AnyCrowdIILREncode:
    DESCRIPTION = (
        "AnyCrowd's Instance-Isolated Latent Representation for Wan 2.1 VACE: encodes each character and the "
        "background ALONE with the VAE as reference frames, adds the control (pose) video like WanVaceToVideo, "
        "and builds the token layout that binds each character to its boxes. Sample with AnyCrowd Sampler, or "
        "with AnyCrowd TSDA Patch + KSampler + TrimVideoLatent(trim_latent)."
    )
    CATEGORY = "AnyCrowd/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "INT", LAYOUT)
    RETURN_NAMES = ("positive", "negative", "latent", "trim_latent", "layout")
    OUTPUT_TOOLTIPS = (
        "Positive conditioning with the VACE inputs appended (what the native WAN21_Vace model reads).",
        "Negative conditioning with the same VACE inputs.",
        "Empty latent including the N+1 reference frames in front.",
        "Reference latent frames to trim after sampling (N characters + 1 background).",
        "Token layout for AnyCrowd Sampler / AnyCrowd TSDA Patch (built for this width, height and length).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "Text conditioning (CLIP Text Encode with the umT5 text encoder)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative text conditioning."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors)."}),
                "instances": (INSTANCES, {"tooltip": "Isolated characters and background from AnyCrowd Instance Decoupler."}),
                "control_video": ("IMAGE", {"tooltip": "The driving control video (e.g. a rendered pose video) with exactly `length` frames; resized to width x height with a centre crop like WanVaceToVideo."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16, "tooltip": "Output width in pixels (a multiple of 16)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16, "tooltip": "Output height in pixels (a multiple of 16)."}),
                "length": ("INT", {"default": 81, "min": 1, "max": MAX_RESOLUTION, "step": 4, "tooltip": "Number of frames (4n+1: 1, 5, ..., 81). The control video must have exactly this many frames."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Videos sampled at once."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.01, "tooltip": "VACE control strength (as in WanVaceToVideo)."}),
                "boxes": ("STRING", {"multiline": True, "default": EXAMPLE_BOXES, "tooltip": "Per-character boxes over time, in pixels of the control video as connected. One line per character: 'x0,y0,x1,y1' (static) or keyframes '0: x0,y0,x1,y1; 80: x0,y0,x1,y1' (linear in between; 'none' = absent). JSON lists work too. Leave empty when track_masks is connected."}),
                "binding": ("STRING", {"default": "", "tooltip": "Which reference character animates which track. Index form: '0,1,2' = one character index per track in order (repeats allowed). Pose form: 'A=0, B=1' (A = first mask, numbers = track ids as in the pose preview), recasting 'A=1, B=0', one-to-many 'A=0+1', many-to-one 'B=0@+0.3w' (tracks input only). Empty: track i -> character i (boxes), left to right (tracks)."}),
            },
            "optional": {
                "track_masks": ("MASK", {"tooltip": "Instead of boxes: per-character mask sequences as one MASK batch, all `length` masks of character 0, then character 1, ...; boxes are their tight bounding boxes (empty mask = absent)."}),
                "control_masks": ("MASK", {"tooltip": "Optional VACE control mask (1 = generate), as in WanVaceToVideo; default all ones."}),
                "background_reference": ("BOOLEAN", {"default": True, "tooltip": "Add the character-free background as its own reference frame (AnyCrowd default)."}),
                "tracks": (TRACKS, {"tooltip": "Instead of boxes: identity tracks from AnyCrowd Pose Extractor / Pose From Keypoints (same frames as the control video). Boxes are the tracks' boxes padded by 10%, mapped like the control video; bind with the binding field."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, length=None, boxes=None, binding=None):
        # Linked inputs arrive as None here; they are checked again when the node runs.
        try:
            if width is not None and height is not None:
                check_frame_size(whole_number(height, "height"), whole_number(width, "width"),
                                 what="requested output (width x height)")
            if length is not None:
                length = whole_number(length, "length")
                check_frame_count(length, "requested length")
        except AnyCrowdError as exc:
            return str(exc)
        if boxes is not None and length is not None:
            try:
                problem = user_text(lambda: validate_boxes_text(boxes, length), "boxes", boxes)
            except AnyCrowdError as exc:
                problem = str(exc)
            if problem:
                return problem
        if binding is not None:
            problem = binding_text_problem(binding)
            if problem:
                return problem
        return True

    def encode(
        self, positive, negative, vae, instances, control_video, width, height, length, batch_size, strength,
        boxes="", binding="", track_masks=None, control_masks=None, background_reference=True, tracks=None,
    ):
        width, height, length = (whole_number(v, name) for v, name in ((width, "width"), (height, "height"),
                                                                         (length, "length")))
        check_frame_size(height, width, what="requested output (width x height)")
        check_frame_count(length, "requested length")
        batch_size = whole_number(batch_size, "batch_size", low=1, fix="Sample at least one video.")
        strength = finite_number(strength, "strength", low=0.0, fix="Use e.g. 1.0 (as in WanVaceToVideo).")
        positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        instances = reference_input(instances)
        video = control_video_input(control_video, length)
        src_size = (int(video.shape[1]), int(video.shape[2]))
        if track_masks is not None:
            track_masks = track_masks_input(track_masks, src_size)
        track_boxes, track_binding, redrawn = character_boxes(
            instances, boxes, binding, length, src_size, (height, width), "IILR Encode", tracks=tracks,
            track_masks=track_masks)
        if redrawn is not None:  # the binding left tracks out or shifted copies: draw what is animated
            video = redrawn

        decoupled = fit_instances(instances.instances, width, height)
        video = resize_frames(video, width, height).clamp(0, 1)
        mask = None
        if control_masks is not None:
            if isinstance(control_masks, Tensor) and control_masks.ndim == 4:
                control_masks = control_masks.reshape(-1, *control_masks.shape[-2:])
            cm = mask_batch(control_masks, "control_masks", weights=True)
            if int(cm.shape[0]) != length:
                raise AnyCrowdError(
                    f"control_masks has {int(cm.shape[0])} masks but length is {length}: give one mask per frame."
                )
            mask = resize_masks(cm.float().cpu(), width, height)

        layout = build_token_layout(decoupled.masks, track_boxes, track_binding, background=bool(background_reference))
        cond = encode_iilr(
            ComfyVAECodec(vae), decoupled, video, mask, background=bool(background_reference), strength=strength
        )
        positive, negative = append_vace_stream(positive, negative, cond.vace_context, cond.vace_strength)
        latent = {"samples": empty_latent(batch_size, cond.noise_latent_shape)}
        return (positive, negative, latent, cond.trim, layout)
