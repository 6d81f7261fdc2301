"""AnyCrowd Long Video Sampler node: a driving video of any length -> the whole decoded
IMAGE sequence, by token-replace segments or latent sliding windows on the native Wan 2.1
VACE MODEL: the core's long-video loops (anycrowd_core/long_video_run.py) with the ComfyUI
adapter of long_video_comfy.py; docs/comfyui_long_video.md.
"""

from __future__ import annotations

from torch import Tensor

from anycrowd_core.codec import check_frame_size
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.long_video import STRATEGIES, LongVideoSettings
from anycrowd_core.long_video_run import LongVideoInputs

from .comfy_patch import check_gates, check_wan_vace
from .codec_vae import ComfyVAECodec
from .comfy_runtime import apply_shift, resize_frames
from .long_video_comfy import SamplingOptions, run_sliding_window, run_token_replace
from .input_checks import (
    MAX_RESOLUTION,
    check_same_aspect,
    conditioning,
    finite_number,
    image_batch,
    whole_number,
)
from .guidance import GUIDANCE_INPUTS, guidance_options
from .node_types import INSTANCES, TRACKS
from .sampling_inputs import AGF_CHOICES, ATTENTION_MODES, GATES_INPUT, sampler_options, sampling_inputs
from .reference_instances import DecoupledReference, fit_instances, reference_input
from .track_inputs import character_boxes


class AnyCrowdLongVideoSampler:
    DESCRIPTION = (
        "Animates a driving video of ANY length: splits it into Wan-sized segments joined by token replace "
        "(the last frames of each segment are kept fixed at the start of the next: no seams, no duplicated "
        "frames), or denoises overlapping latent windows at every step and averages them (sliding_window). "
        "Does IILR encoding, AnyCrowd attention, sampling and VAE decoding per segment; returns every frame. "
        "The input MODEL is not changed."
    )
    CATEGORY = "AnyCrowd/sampling"
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The whole decoded video, exactly as many frames as the control video (kept on the CPU).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Wan 2.1 VACE model from Load Diffusion Model (LoRAs and other patches may be applied first)."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors)."}),
                "positive": ("CONDITIONING", {"tooltip": "Text conditioning from CLIP Text Encode (NOT from IILR Encode: this node encodes each segment itself)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative text conditioning from CLIP Text Encode."}),
                "instances": (INSTANCES, {"tooltip": "Isolated characters and background from AnyCrowd Instance Decoupler."}),
                "control_video": ("IMAGE", {"tooltip": "The FULL-LENGTH control (pose) video; any number of frames. Resized to width x height with a centre crop like WanVaceToVideo."}),
                "width": ("INT", {"default": 832, "min": 16, "max": MAX_RESOLUTION, "step": 16, "tooltip": "Output width in pixels (a multiple of 16)."}),
                "height": ("INT", {"default": 480, "min": 16, "max": MAX_RESOLUTION, "step": 16, "tooltip": "Output height in pixels (a multiple of 16)."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.01, "tooltip": "VACE strength of the control video (as in WanVaceToVideo)."}),
                "boxes": ("STRING", {"multiline": True, "default": "", "tooltip": "Per-character boxes over the WHOLE video (syntax as in AnyCrowd IILR Encode, frames of the full video). Leave empty when tracks are connected."}),
                "binding": ("STRING", {"default": "", "tooltip": "Which character each track animates. With boxes: '0,1,2' (empty: box i -> character i). With tracks: empty = automatic left to right, '0,1' per track, or 'A=0, B=1' (recasting, shifted copies 'B=0@+0.3w')."}),
                **sampling_inputs(per_segment=True),
                "strategy": (STRATEGIES, {"default": "token_replace", "tooltip": "token_replace: segments one after another, each starting from the previous one's last frames (One-to-All; any length, flat memory). sliding_window: overlapping latent windows all denoised at every step and averaged (AnyCrowd appendix)."}),
                "segment_frames": ("INT", {"default": 81, "min": 5, "max": 1001, "step": 4, "tooltip": "Frames per segment / window (4n+1; Wan 2.1 is trained on 81)."}),
                "overlap_frames": ("INT", {"default": 5, "min": 0, "max": 1000, "step": 1, "tooltip": "token_replace: frames taken over from the previous segment (0 or 4m+1; 5 = 2 latent frames, as in One-to-All). sliding_window: overlap between windows in frames (rounded up to whole latent frames of 4)."}),
            },
            "optional": {
                "tracks": (TRACKS, {"tooltip": "Identity tracks of the whole video from AnyCrowd Pose Extractor (instead of boxes)."}),
                "face_video": ("IMAGE", {"tooltip": "Full-length face-control video from AnyCrowd Face Control (its face_video output, without a layout); added as a second VACE stream."}),
                "face_strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "VACE strength of the face stream."}),
                "gates": GATES_INPUT,
                "background_reference": ("BOOLEAN", {"default": True, "tooltip": "Add the character-free background as its own reference frame (AnyCrowd default)."}),
                **GUIDANCE_INPUTS,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, strategy=None, segment_frames=None, overlap_frames=None,
                        attention_mode=None, agf_mode=None):
        for name, value, choices in (("strategy", strategy, STRATEGIES), ("attention_mode", attention_mode, ATTENTION_MODES),
                                     ("agf_mode", agf_mode, AGF_CHOICES)):
            if value is not None and value not in choices:
                return f"{name} {value!r} is not available: choose one of {', '.join(choices)}."
        try:
            if width is not None and height is not None:
                check_frame_size(whole_number(height, "height"), whole_number(width, "width"),
                                 what="requested output (width x height)")
            if strategy is not None and segment_frames is not None and overlap_frames is not None:
                segment = whole_number(segment_frames, "segment_frames")
                LongVideoSettings(strategy, segment, whole_number(overlap_frames, "overlap_frames")).plan(max(segment, 1))
        except AnyCrowdError as exc:
            return str(exc)
        return True

    def generate(self, model, vae, positive, negative, instances, control_video, width, height, strength, boxes,
                 binding, attention_mode, agf_mode, seed, steps, cfg, sampler_name, scheduler, shift, strategy,
                 segment_frames, overlap_frames, tracks=None, face_video=None, face_strength=0.5, gates=None,
                 background_reference=True, guidance="cfg", ref_cfg=1.5):
        # every check that can fail runs before the first segment is sampled
        check_wan_vace(model)
        width, height = whole_number(width, "width"), whole_number(height, "height")
        check_frame_size(height, width, what="requested output (width x height)")
        if strategy not in STRATEGIES:
            raise AnyCrowdError(f"strategy {strategy!r} is not available: choose one of {', '.join(STRATEGIES)}.")
        instances = reference_input(instances)
        if not isinstance(control_video, Tensor) or control_video.ndim != 4:
            raise AnyCrowdError("control_video must be an IMAGE batch [frames, H, W, 3] (the whole pose video).")
        control_video = image_batch(control_video, "control_video", fix="Connect the full-length pose video.")
        positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        sampling = sampler_options(seed, steps, cfg, shift)
        guidance, ref_cfg = guidance_options(guidance, ref_cfg)
        strength = finite_number(strength, "strength", low=0.0, fix="Use e.g. 1.0 (as in WanVaceToVideo).")
        face_strength = finite_number(face_strength, "face_strength", low=0.0, fix="Use e.g. 0.5.")
        segment_frames = whole_number(segment_frames, "segment_frames")
        overlap_frames = whole_number(overlap_frames, "overlap_frames")
        frames = int(control_video.shape[0])
        LongVideoSettings(strategy, segment_frames, overlap_frames).plan(frames)
        if attention_mode not in ATTENTION_MODES or agf_mode not in AGF_CHOICES:
            raise AnyCrowdError(
                f"attention_mode {attention_mode!r} / agf_mode {agf_mode!r}: choose attention_mode from "
                f"{', '.join(ATTENTION_MODES)} and agf_mode from {', '.join(AGF_CHOICES)}."
            )
        if gates is not None:
            check_gates(gates, model.model.diffusion_model)
        inputs = resolve_inputs(instances, control_video, width, height, boxes, binding, tracks, face_video,
                                strength, face_strength, bool(background_reference))
        options = SamplingOptions(sampling["seed"], sampling["steps"], sampling["cfg"], sampler_name, scheduler,
                                  attention_mode, agf_mode, gates, guidance, ref_cfg)
        if sampling["shift"] > 0:
            model = apply_shift(model, sampling["shift"])
        run = run_token_replace if strategy == "token_replace" else run_sliding_window
        kwargs = {"segment_frames": segment_frames} if strategy == "token_replace" else {"window_frames": segment_frames}
        images = run(model, ComfyVAECodec(vae), inputs, positive, negative, options,
                     overlap_frames=overlap_frames, **kwargs)
        return (images,)


def resolve_inputs(instances: DecoupledReference, control_video: Tensor, width: int, height: int, boxes: str,
                   binding: str, tracks, face_video, strength: float, face_strength: float,
                   background: bool) -> LongVideoInputs:
    """Node inputs -> LongVideoInputs at width x height: control (and face) video resized with
    the centre crop, boxes from the text or from the tracks mapped through the same crop."""
    frames = int(control_video.shape[0])
    src = (int(control_video.shape[1]), int(control_video.shape[2]))
    video = control_video[..., :3].float().cpu()
    # the same binding rules and checks as AnyCrowd IILR Encode, over the whole video
    track_boxes, ids, redrawn = character_boxes(instances, boxes, binding, frames, src, (height, width),
                                                "Long Video Sampler", tracks=tracks)
    if redrawn is not None:  # the binding left tracks out or shifted copies: draw what is animated
        video = redrawn
    face = None
    if face_video is not None:
        if not isinstance(face_video, Tensor) or face_video.ndim != 4:
            raise AnyCrowdError(
                f"face_video must be an IMAGE batch [frames, H, W, 3] (the face_video output of AnyCrowd Face Control); "
                f"got {tuple(face_video.shape) if isinstance(face_video, Tensor) else type(face_video).__name__}."
            )
        face_video = image_batch(face_video, "face_video")
        check_same_aspect((int(face_video.shape[1]), int(face_video.shape[2])), src, "face_video", "control_video",
                          "make the face video from the driving video the control video was made from (AnyCrowd "
                          "Face Control without a layout keeps its size).")
        if int(face_video.shape[0]) != frames:
            raise AnyCrowdError(
                f"face_video has {int(face_video.shape[0])} frames but the control video has {frames}: make the face "
                "video from the same full-length driving video (AnyCrowd Face Control without a layout)."
            )
        face = resize_frames(face_video, width, height).clamp(0, 1)
    return LongVideoInputs(
        decoupled=fit_instances(instances.instances, width, height),
        control=resize_frames(video, width, height).clamp(0, 1),
        boxes=track_boxes,
        binding=list(ids),
        face=face,
        strength=strength,
        face_strength=face_strength,
        background=background,
    )
