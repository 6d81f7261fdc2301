"""AnyCrowd Identity Masks node: SCAIL-2 colour-coded masks or SAM3 track data -> reference
masks (for the Instance Decoupler), mask-only driving tracks + a colour-matched binding (for
IILR Encode / Long Video Sampler), per-track masks and a labelled preview. The reading is
`anycrowd_core.pose.identity_masks`; formats and ordering in docs/identity_masks.md.
"""

from __future__ import annotations

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.binding import LETTERS, SYNTAX_HELP, check_binding_syntax, identity_name, parse_binding
from anycrowd_core.pose.identity_masks import (
    SAM3_SORT_BY,
    DecodeSettings,
    IdentityMasks,
    colour_binding,
    decode_colour_masks,
    decode_sam3_track_data,
)
from anycrowd_core.pose.identity_masks_render import identity_preview, render_identity_masks
from anycrowd_core.pose.track_boxes import select_tracks

from .input_checks import check_same_aspect, finite_number, image_batch, whole_number
from .node_types import TRACKS

SAM3_TRACK_DATA = "SAM3_TRACK_DATA"  # ComfyUI core's socket name (comfy_extras/nodes_scail.py, io.Custom)


def _driving_and_reference(mask_video, reference_mask, driving_track_data, reference_track_data, settings, sort_by):
    """(driving IdentityMasks, reference IdentityMasks or None) from the connected inputs."""
    if mask_video is not None and driving_track_data is not None:
        raise AnyCrowdError(
            "Both mask_video and driving_track_data are connected: use one of them (the SAM3 track data, or the "
            "colour mask video rendered from it)."
        )
    if mask_video is None and driving_track_data is None:
        raise AnyCrowdError(
            "No driving masks: connect mask_video (a colour-coded mask video, e.g. SCAIL2ColoredMask's "
            "pose_video_mask) or driving_track_data (SAM3 Video Track's track_data)."
        )
    if reference_mask is not None and reference_track_data is not None:
        raise AnyCrowdError("Both reference_mask and reference_track_data are connected: use one of them.")
    reference = None
    if mask_video is not None:
        video = image_batch(mask_video, "mask_video", fix="Connect the colour-coded mask video.")
        ref = image_batch(reference_mask, "reference_mask")[:1] if reference_mask is not None else None
        driving, reference = decode_colour_masks(video, settings, ref)
    else:
        driving = decode_sam3_track_data(driving_track_data, sort_by)
    if reference is None and reference_track_data is not None:
        reference = decode_sam3_track_data(reference_track_data, sort_by).frame(0)
    elif reference is None and reference_mask is not None:  # SAM3 driving data, colour reference image
        reference = decode_colour_masks(image_batch(reference_mask, "reference_mask")[:1], settings)[0]
    return driving, reference


def _check_driving_video(driving_video, driving: IdentityMasks):
    """The driving video as float `[T, H, W, 3]`, refused when its length or shape differs."""
    video = image_batch(driving_video, "driving_video")
    t, (h, w) = driving.num_frames, driving.size
    if int(video.shape[0]) != t:
        raise AnyCrowdError(
            f"The masks have {t} frames but driving_video has {int(video.shape[0])}: make the masks from the same "
            "frames as the driving video (the same Load Video frame_load_cap / skip_first_frames)."
        )
    check_same_aspect((int(video.shape[1]), int(video.shape[2])), (h, w), "driving_video", "the masks",
                      "make the masks from this video (or resize both the same way).")
    return video


class AnyCrowdIdentityMasks:
    DESCRIPTION = (
        "Reads the colour-coded identity masks of a SCAIL-2 graph (SCAIL2ColoredMask's pose_video_mask / "
        "reference_image_mask, or any video that paints each person one flat colour) or SAM3 Video Track's "
        "track data, with no cap on the number of people. Outputs the reference masks for Instance Decoupler, "
        "mask-only tracks and the colour-matched binding for IILR Encode, per-track masks, the masks redrawn "
        "cleanly, and a preview numbering each identity on its colour."
    )
    CATEGORY = "AnyCrowd/pose"
    FUNCTION = "read"
    RETURN_TYPES = ("MASK", TRACKS, "STRING", "MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("reference_masks", "tracks", "binding", "track_masks", "mask_video", "preview")
    OUTPUT_TOOLTIPS = (
        "One mask per reference identity (A, B, ... in identity-number order): Instance Decoupler's masks.",
        "The bound driving identities as tracks (boxes from the masks, no keypoints), ids = identity numbers: "
        "IILR Encode's / Long Video Sampler's tracks.",
        "Which reference identity animates which track, in the pose binding syntax (same colour = same person "
        "unless you wrote a binding): link it to IILR Encode's binding.",
        "Per-track mask sequences as one batch (all frames of the first bound track, then the next): IILR "
        "Encode's track_masks, instead of tracks.",
        "The bound identities' masks redrawn in their colours on black (speckles and compression noise removed).",
        "Reference identities labelled 'A 0' (letter, number) beside a driving frame labelled 'T0 A': check the "
        "numbering here and write a binding to change it.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference_frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Without reference_mask / reference_track_data: the frame of the driving masks that is the reference (the reference image is that frame of the driving video)."}),
                "binding": ("STRING", {"default": "", "tooltip": "Empty: each reference identity animates the driving track of the same number (same colour). Or the pose binding syntax with the numbers of the preview: recast 'A=1, B=0', one-to-many 'A=0+1', leave tracks out 'A=2'. " + SYNTAX_HELP}),
                "tolerance": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Each pixel takes the nearest colour (background black/white, the SCAIL-2 palette, further colours) within this RGB distance (channels 0..1); farther pixels are background. Lower it if odd colours are read as people; a further colour must differ from the known ones by half of it."}),
                "min_area": ("INT", {"default": 16, "min": 0, "max": 1000000, "tooltip": "Pieces of a mask smaller than this many pixels in a frame are dropped (compression speckles); a colour outside the SCAIL-2 palette needs this many flat pixels to count as a person."}),
                "extra_colours": ("BOOLEAN", {"default": True, "tooltip": "Read colours beyond SCAIL-2's six (blue, red, green, magenta, cyan, yellow) as further identities, numbered 6, 7, ... by first appearance, then left to right."}),
                "sort_by": (list(SAM3_SORT_BY), {"default": "left_to_right", "tooltip": "SAM3 track data only: how objects are numbered, as SCAIL2ColoredMask's sort_by colours them (first appearance, then left to right or larger first; none = SAM3's order)."}),
            },
            "optional": {
                "mask_video": ("IMAGE", {"tooltip": "Colour-coded identity masks of the driving video, e.g. SCAIL2ColoredMask's pose_video_mask (black or white background)."}),
                "reference_mask": ("IMAGE", {"tooltip": "Colour-coded mask of the reference image, e.g. SCAIL2ColoredMask's reference_image_mask (first image used)."}),
                "driving_track_data": (SAM3_TRACK_DATA, {"tooltip": "Instead of mask_video: SAM3 Video Track's track data of the driving video."}),
                "reference_track_data": (SAM3_TRACK_DATA, {"tooltip": "Instead of reference_mask: SAM3 Video Track's track data of the reference image."}),
                "driving_video": ("IMAGE", {"tooltip": "The driving video: checked to have the masks' length and shape, and shown under the preview."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, binding=None):
        if binding is not None and str(binding).strip():
            try:
                check_binding_syntax(binding)
            except AnyCrowdError as exc:
                return str(exc)
        return True

    def read(self, reference_frame=0, binding="", tolerance=0.5, min_area=16, extra_colours=True,
             sort_by="left_to_right", mask_video=None, reference_mask=None, driving_track_data=None,
             reference_track_data=None, driving_video=None):
        settings = DecodeSettings(
            tolerance=finite_number(tolerance, "tolerance", low=0.0, high=1.0, fix="Use e.g. 0.5."),
            min_area=whole_number(min_area, "min_area", low=0, fix="Use e.g. 16."),
            extra_colours=bool(extra_colours),
        )
        driving, reference = _driving_and_reference(mask_video, reference_mask, driving_track_data,
                                                    reference_track_data, settings, sort_by)
        if driving.num_identities == 0:
            raise AnyCrowdError(
                "No identities found in the driving masks: the mask video holds no SCAIL-2 palette colour (nor any "
                "other flat colour) — is it the colour mask video (not the driving video)? Otherwise raise tolerance "
                "or lower min_area; SAM3 track data: SAM3 tracked nobody, check its prompt and threshold."
            )
        video = _check_driving_video(driving_video, driving) if driving_video is not None else None
        reference_frame = whole_number(reference_frame, "reference_frame", low=0)
        ref_image = None
        if reference is None:
            if reference_frame >= driving.num_frames:
                raise AnyCrowdError(
                    f"reference_frame {reference_frame} is outside the mask video (0..{driving.num_frames - 1}): pick "
                    "the frame the reference image was taken from, or connect reference_mask."
                )
            reference = driving.frame(reference_frame)
            ref_image = video[reference_frame] if video is not None else None
        if reference.num_identities == 0:
            where = "the reference mask" if reference_mask is not None or reference_track_data is not None \
                else f"frame {reference_frame} of the driving masks"
            raise AnyCrowdError(f"No identities found in {where}: connect the reference's colour mask, or pick a "
                                "reference_frame where the people are visible.")
        if reference.num_identities > len(LETTERS):
            raise AnyCrowdError(
                f"The reference has {reference.num_identities} identities; the binding names at most {len(LETTERS)} "
                "(A..Z): split the crowd into groups of 26 or fewer."
            )

        tracks = driving.to_tracks()
        text = (binding or "").strip() or colour_binding(reference, driving)
        bound = parse_binding(text, tracks, reference.num_identities)
        if bool((bound.offsets != 0).any()):
            raise AnyCrowdError(
                f"binding {text!r} shifts a copy of a motion (@offset); mask-only tracks have no skeleton to draw "
                "the copy into the control video: bind every identity to a track of its own (e.g. A=0, B=1)."
            )
        order = list(dict.fromkeys(bound.sources))  # input track positions, in first-use order
        bound_ids = [driving.ids[p] for p in order]
        out_tracks = select_tracks(tracks, order)
        letters = [identity_name(k) for k in range(reference.num_identities)]
        by_track: dict[int, str] = {}
        for k, p in zip(bound.identities, bound.sources):
            by_track[driving.ids[p]] = by_track.get(driving.ids[p], "") + letters[k]
        chosen = driving.select(bound_ids)
        shown = max(range(driving.num_frames), key=lambda t: (int(chosen.present[:, t].sum()), -t))
        preview = identity_preview(reference, driving, letters, by_track, shown, ref_image,
                                   video[shown] if video is not None else None)
        return (
            reference.masks[:, 0].float(),
            out_tracks,
            bound.to_string(),
            chosen.masks.flatten(0, 1).float(),
            render_identity_masks(chosen),
            preview,
        )
