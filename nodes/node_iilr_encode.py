"""AnyCrowd IILR Encode node: isolated identities + control video + per-character boxes ->
native Wan VACE conditioning (as WanVaceToVideo appends it), the latent to sample with the
reference frames in front, the trim count and the token layout (ANYCROWD_LAYOUT).
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import Tensor

from anycrowd_core.boxes import (
    BOXES_SYNTAX,
    boxes_from_masks,
    boxes_from_mask_sequences,
    has_boxes,
    parse_boxes,
    resize_boxes,
    validate_boxes_text,
)
from anycrowd_core.codec import check_frame_count, check_frame_size, nearest_valid_frame_counts
from anycrowd_core.decoupler import DecoupledInstances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import comfy_vace_inputs, encode_iilr
from anycrowd_core.layout import build_token_layout
from anycrowd_core.pose.binding import SYNTAX_HELP, Binding, check_binding_syntax, identity_name, resolve_binding
from anycrowd_core.pose.render import render_pose_video
from anycrowd_core.pose.track_boxes import padded_track_boxes
from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks

from .comfy_runtime import ComfyVAECodec, conditioning_set_values, empty_latent, resize_frames, resize_masks
from .input_checks import (
    check_identities_visible,
    check_same_aspect,
    conditioning,
    finite_number,
    image_batch,
    mask_batch,
    user_text,
    whole_number,
)
from .node_decoupler import DecoupledReference
from .node_types import INSTANCES, LAYOUT, TRACKS

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION

EXAMPLE_BOXES = "# one line per character: x0,y0,x1,y1 or keyframes 'frame: box; frame: box'\n"


def parse_binding(text: str, num_tracks: int, num_identities: int) -> list[int]:
    """Identity index per track from "0,1,2" (empty: track i -> identity i)."""
    text = (text or "").strip()
    example = ",".join(str(i % num_identities) for i in range(num_tracks))
    if not text:
        if num_tracks != num_identities:
            raise AnyCrowdError(
                f"There are {num_tracks} box tracks but {num_identities} characters in the reference masks, "
                f"and no binding: give one box track per character, or a binding with one character index "
                f"(0..{num_identities - 1}) per track, e.g. '{example}'."
            )
        return list(range(num_tracks))
    try:
        binding = [int(p) for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    except ValueError:
        raise AnyCrowdError(f"binding {text!r} is not a list of whole numbers: write e.g. '{example}'.") from None
    if len(binding) != num_tracks:
        raise AnyCrowdError(
            f"binding {text!r} has {len(binding)} entries but there are {num_tracks} box tracks: give one "
            f"character index per track, e.g. '{example}'."
        )
    bad = [b for b in binding if not 0 <= b < num_identities]
    if bad:
        raise AnyCrowdError(
            f"binding {text!r} refers to characters {bad}, but the reference has {num_identities} "
            f"(indices 0..{num_identities - 1}): e.g. '{example}'."
        )
    return binding


SIMPLE_BINDING = re.compile(r"^[\d\s,;]*$")
TRACK_BOX_PADDING = 0.1  # padded_track_boxes: each side grows by 10% of the box (hair, hands, clothes)
ASPECT_TOLERANCE = 0.02


def is_simple_binding(text: str) -> bool:
    """True for the index form "0,1,2" (one character index per track), False for "A=0, B=1"."""
    return bool(SIMPLE_BINDING.match(text or ""))


def check_binding_text(text: str) -> str | None:
    """A message if `text` is neither the index form ("0,1,2") nor the pose binding syntax
    ("A=0, B=1@+0.3w"), else None (the syntax only: tracks and characters are checked at run time)."""
    if not text or not text.strip() or text.strip().lower() == "auto" or is_simple_binding(text):
        return None
    try:
        check_binding_syntax(text)
    except AnyCrowdError as exc:
        return (f"binding {text!r} is not a list of character indices ('0,1,2') nor a valid pose binding "
                f"('A=0, B=1'): {exc}")
    return None


def _box_tracks(track_boxes: Tensor, frame_size: tuple[int, int]) -> PoseTracks:
    """Box tracks `[M, T, 4]` as PoseTracks without keypoints, so the pose binding syntax
    ("A=0, B=1", ids = box line numbers) applies to them too."""
    m, t = int(track_boxes.shape[0]), int(track_boxes.shape[1])
    present = ~torch.isnan(track_boxes).any(-1)
    return PoseTracks(torch.zeros(m, t, NUM_KEYPOINTS, 3), track_boxes.float(), present, frame_size[0],
                      frame_size[1], list(range(m)))


def _index_form_to_syntax(text: str, tracks: PoseTracks, num_identities: int) -> str:
    """"0,1,0" (character index per track position) -> "A=<id0>, B=<id1>, A=<id2>"."""
    ids = list(tracks.track_ids) or list(range(tracks.num_tracks))
    indices = [int(p) for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if len(indices) != len(ids):
        raise AnyCrowdError(
            f"binding {text!r} has {len(indices)} entries but there are {len(ids)} tracks (ids {ids}): give one "
            f"character index per track in track order, or write it as e.g. "
            f"'{', '.join(f'{identity_name(i % num_identities)}={t}' for i, t in enumerate(ids))}'. {SYNTAX_HELP}"
        )
    bad = [k for k in indices if not 0 <= k < num_identities]
    if bad:
        raise AnyCrowdError(
            f"binding {text!r} refers to characters {bad}, but the reference has {num_identities} "
            f"(indices 0..{num_identities - 1})."
        )
    return ", ".join(f"{identity_name(k)}={t}" for k, t in zip(indices, ids))


def bind_pose_tracks(text: str, tracks: PoseTracks, num_identities: int, reference_masks: Tensor) -> Binding:
    """The binding for pose tracks: empty / "auto" = left to right (tracks by position, characters
    by mask centre), "0,1,2" = character index per track in track order, or the pose syntax."""
    text = (text or "").strip()
    if text and is_simple_binding(text):
        text = _index_form_to_syntax(text, tracks, num_identities)
    return resolve_binding(text or None, tracks, num_identities, reference_boxes=reference_masks)


def fit_instances(decoupled: DecoupledInstances, width: int, height: int) -> DecoupledInstances:
    """The decoupled reference at width x height, resized (center crop) like WanVaceToVideo
    resizes its reference image; masks by nearest neighbour, boxes recomputed."""
    if decoupled.size == (height, width):
        return decoupled
    images = resize_frames(decoupled.identity_images, width, height)
    background = resize_frames(decoupled.background[None], width, height)[0]
    masks = resize_masks(decoupled.masks.float(), width, height, mode="nearest-exact") > 0.5
    gone = [k for k in range(masks.shape[0]) if not masks[k].any()]
    if gone:
        raise AnyCrowdError(
            f"Character(s) {gone} vanish when the reference is resized to {width}x{height} (their masks "
            "are too small or outside the centre crop): use a larger width/height or a reference with the same shape."
        )
    boxes = boxes_from_masks(masks[:, None])[:, 0]
    scale = torch.tensor([width / decoupled.size[1], height / decoupled.size[0]])
    return replace(
        decoupled, identity_images=images.clamp(0, 1), background=background.clamp(0, 1), masks=masks,
        boxes=boxes, offsets=decoupled.offsets * scale,
    )


def _check_geometry(width: int, height: int, length: int) -> None:
    check_frame_size(height, width, what="requested output (width x height)")
    check_frame_count(length, "requested length")


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
            problem = check_binding_text(binding)
            if problem:
                return problem
        return True

    def encode(
        self, positive, negative, vae, instances, control_video, width, height, length, batch_size, strength,
        boxes="", binding="", track_masks=None, control_masks=None, background_reference=True, tracks=None,
    ):
        width, height, length = (whole_number(v, name) for v, name in ((width, "width"), (height, "height"),
                                                                         (length, "length")))
        _check_geometry(width, height, length)
        batch_size = whole_number(batch_size, "batch_size", low=1, fix="Sample at least one video.")
        strength = finite_number(strength, "strength", low=0.0, fix="Use e.g. 1.0 (as in WanVaceToVideo).")
        positive, negative = conditioning(positive, "positive"), conditioning(negative, "negative")
        if not isinstance(instances, DecoupledReference):
            raise AnyCrowdError("instances must come from AnyCrowd Instance Decoupler.")
        video = self._control_video(control_video, length)
        src_size = (int(video.shape[1]), int(video.shape[2]))
        if track_masks is not None:
            if isinstance(track_masks, Tensor) and track_masks.ndim == 4:  # [characters, length, H, W]
                track_masks = track_masks.reshape(-1, *track_masks.shape[-2:])
            track_masks = mask_batch(track_masks, "track_masks",
                                     fix="Give all length masks of character 0, then of character 1, ...")
            check_same_aspect((int(track_masks.shape[-2]), int(track_masks.shape[-1])), src_size, "track_masks",
                              "control_video", "make the track masks on the frames of the control video "
                              "(the same size, or a resize of it).")

        num_ids = instances.num_identities
        if tracks is not None:
            track_boxes, track_binding, redrawn = self.pose_track_boxes(tracks, boxes, track_masks, binding, instances,
                                                                     length, src_size, (height, width))
            if redrawn is not None:
                video = redrawn
        else:
            track_boxes = self.text_or_mask_boxes(boxes, track_masks, length, src_size)
            box_frame = self._box_frame(track_masks, src_size)
            track_boxes, track_binding = self.bind_box_tracks(binding, track_boxes, box_frame, num_ids)
            track_boxes = resize_boxes(track_boxes, box_frame, (height, width))
        where = "track" if tracks is not None else "track_masks character" if track_masks is not None else "boxes line"
        check_identities_visible(track_boxes, track_binding, num_ids, (height, width), where, "IILR Encode")

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
        vace = comfy_vace_inputs(cond)
        values = {"vace_frames": [vace.vace_frames], "vace_mask": [vace.vace_mask], "vace_strength": [vace.vace_strength]}
        positive = conditioning_set_values(positive, values, append=True)
        negative = conditioning_set_values(negative, values, append=True)
        latent = {"samples": empty_latent(batch_size, tuple(vace.latent.shape[1:]))}
        return (positive, negative, latent, vace.trim_latent, layout)

    @staticmethod
    def _control_video(control_video, length: int) -> Tensor:
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

    @staticmethod
    def bind_box_tracks(binding: str, track_boxes: Tensor, frame_size, num_ids: int) -> tuple[Tensor, list[int]]:
        """(boxes of the bound tracks, character per bound track) for box tracks: the index form
        as before, or the pose syntax with box line numbers as track ids (no offsets)."""
        text = (binding or "").strip()
        if not text or is_simple_binding(text):
            return track_boxes, parse_binding(text, int(track_boxes.shape[0]), num_ids)
        bound = resolve_binding(text, _box_tracks(track_boxes, frame_size), num_ids)
        if bool((bound.offsets != 0).any()):
            raise AnyCrowdError(
                f"binding {text!r} shifts a copy of a motion (@offset), which needs pose tracks so the copy can be "
                "drawn into the control video: connect the tracks input instead of boxes, or add a box line for the copy."
            )
        return track_boxes[torch.tensor(bound.sources, dtype=torch.long)], list(bound.identities)

    @staticmethod
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
        if abs((tw / th) / (vw / vh) - 1) > ASPECT_TOLERANCE:
            raise AnyCrowdError(
                f"The tracks were extracted from a {tw}x{th} video but the control video is {vw}x{vh} (another shape): "
                "extract the poses from the driving video the control video was made from."
            )
        bound = bind_pose_tracks(binding, tracks, instances.num_identities, instances.masks)
        track_boxes = resize_boxes(padded_track_boxes(bound.tracks, TRACK_BOX_PADDING), (th, tw), out_size)
        redrawn = None
        if bound.unbound or bool((bound.offsets != 0).any()):
            redrawn = render_pose_video(bound.tracks)
        return track_boxes, list(bound.identities), redrawn

    @staticmethod
    def _box_frame(track_masks, video_size: tuple[int, int]) -> tuple[int, int]:
        """Pixel frame the boxes are expressed in: the masks' own size, else the control video's."""
        if track_masks is not None:
            return int(track_masks.shape[-2]), int(track_masks.shape[-1])
        return video_size

    @staticmethod
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
