"""Identity masks from SCAIL-2 colour-coded masks and SAM3 track data (anycrowd_core.pose.identity_masks)
and the AnyCrowd Identity Masks node.

Inputs are built in the exact formats of today's ComfyUI source (comfy_extras/nodes_scail.py,
comfy/ldm/sam3/tracker.py): SCAIL2ColoredMask paints object i in DEFAULT_PALETTE[i % 6] on black or
white, the lowest object index winning on overlap; SAM3_TRACK_DATA is {"packed_masks": uint8
[T, N, Hm, Wm/8] (LSB first), "n_frames", "scores", "orig_size": (H, W)}.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pose.identity_masks import (
    SCAIL2_PALETTE,
    DecodeSettings,
    colour_binding,
    decode_colour_masks,
    decode_sam3_track_data,
    mask_boxes,
    unpack_sam3_masks,
)
from anycrowd_core.pose.types import PoseTracks
from comfy_vae_stand_in import TestVAE
from pack import load_pack

T, H, W = 9, 64, 96
EXTRA = ((1.0, 0.5, 0.0), (0.5, 0.0, 1.0), (0.0, 0.5, 0.25))  # orange, violet, dark green: not SCAIL-2 colours


def people_masks(n: int, t: int = T, h: int = H, w: int = W, enter: dict | None = None) -> torch.Tensor:
    """bool [n, t, h, w]: n ellipses in a row, person i at x = (i + 0.5) * w / n, drifting right by one
    px per frame; `enter` = {person: first frame it is visible}."""
    out = np.zeros((n, t, h, w), np.uint8)
    rx = max(2, int(w / n * 0.35))
    for i in range(n):
        for f in range(t):
            if enter and f < enter.get(i, 0):
                continue
            cx = int((i + 0.5) * w / n) + f
            cv2.ellipse(out[i, f], (min(cx, w - 1), h // 2), (rx, h // 3), 0, 0, 360, 1, -1)
    return torch.from_numpy(out.astype(bool))


def scail_colour_video(masks: torch.Tensor, background: str = "black", colours=None) -> torch.Tensor:
    """float [T, H, W, 3]: SCAIL2ColoredMask's rendering of object masks [N, T, H, W] (object i in
    DEFAULT_PALETTE[i % 6], or `colours[i]`; painted last to first so the lowest index wins)."""
    n, t, h, w = masks.shape
    out = torch.full((t, h, w, 3), 1.0 if background == "white" else 0.0)
    for i in reversed(range(n)):
        c = colours[i] if colours is not None else SCAIL2_PALETTE[i % len(SCAIL2_PALETTE)]
        out[masks[i]] = torch.tensor(c, dtype=torch.float32)
    return out


def sam3_pack(masks: torch.Tensor) -> torch.Tensor:
    """comfy/ldm/sam3/tracker.py pack_masks: bool [*, H, W] -> uint8 [*, H, W/8], 8 px per byte, LSB first."""
    shifts = torch.arange(8)
    return (masks.view(*masks.shape[:-1], -1, 8).long() * (1 << shifts)).sum(-1).to(torch.uint8)


def sam3_track_data(masks: torch.Tensor, orig_size=None) -> dict:
    """SAM3_TRACK_DATA for object masks [N, T, Hm, Wm] at the tracker's working size."""
    n, t = masks.shape[:2]
    return {"packed_masks": sam3_pack(masks.permute(1, 0, 2, 3).contiguous()), "n_frames": t,
            "scores": [0.9] * n, "orig_size": tuple(orig_size or masks.shape[-2:])}


def jpeg(video: torch.Tensor, quality: int = 60) -> torch.Tensor:
    """Every frame through a real JPEG encode/decode (chroma subsampling, ringing)."""
    frames = []
    for f in video.numpy():
        ok, buf = cv2.imencode(".jpg", np.round(f * 255).astype(np.uint8)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        frames.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0)
    return torch.from_numpy(np.stack(frames))


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


# --- colour-coded masks ----------------------------------------------------------------------

@pytest.mark.parametrize("background", ["black", "white"])
def test_scail2_palette_colours_decode_exactly_to_their_palette_numbers(background):
    truth = people_masks(4)
    decoded, ref = decode_colour_masks(scail_colour_video(truth, background))
    assert ref is None
    assert decoded.ids == [0, 1, 2, 3] and decoded.names == ["blue", "red", "green", "magenta"]
    assert torch.equal(decoded.masks, truth)
    assert torch.equal(decoded.colours, torch.tensor(SCAIL2_PALETTE[:4]))


def test_numbers_are_palette_indices_even_when_colours_are_missing():
    truth = people_masks(6)[[1, 4]]  # only red and cyan painted
    video = scail_colour_video(truth, colours=[SCAIL2_PALETTE[1], SCAIL2_PALETTE[4]])
    decoded, _ = decode_colour_masks(video)
    assert decoded.ids == [1, 4] and decoded.names == ["red", "cyan"]
    assert torch.equal(decoded.masks, truth)


def test_boxes_are_the_tight_mask_extent_and_nan_where_absent():
    truth = people_masks(2, enter={1: 3})
    decoded, _ = decode_colour_masks(scail_colour_video(truth))
    boxes = decoded.boxes()
    ys, xs = torch.nonzero(truth[0, 0], as_tuple=True)
    assert boxes[0, 0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert torch.isnan(boxes[1, :3]).all() and not torch.isnan(boxes[1, 3:]).any()
    assert decoded.present[1].tolist() == [False] * 3 + [True] * (T - 3)


def test_jpeg_compressed_antialiased_masks_decode_without_phantoms_or_speckles():
    truth = people_masks(5)
    video = scail_colour_video(truth)
    soft = torch.from_numpy(np.stack([cv2.GaussianBlur(f, (3, 3), 0.8) for f in video.numpy()]))  # antialiased edges
    speckled = soft.clone()
    speckled[:, 2:4, 2:4] = torch.tensor(SCAIL2_PALETTE[5])  # 2x2 yellow dots: not a person
    speckled[:, 60:62, 90:92] = torch.tensor(SCAIL2_PALETTE[0])  # a stray blue dot far from person 0
    decoded, _ = decode_colour_masks(jpeg(speckled, 60))
    assert decoded.ids == [0, 1, 2, 3, 4]
    for k in range(5):
        assert iou(decoded.masks[k], truth[k]) > 0.9, k
    assert not decoded.masks[0, :, 55:, 85:].any()


def test_more_than_six_identities_extra_colours_numbered_by_first_appearance_then_left_to_right():
    # nine people left to right: six in the SCAIL-2 palette, then violet (enters at frame 4), orange, teal
    truth = people_masks(9, enter={6: 4})
    violet, orange, teal = EXTRA[1], EXTRA[0], EXTRA[2]
    video = scail_colour_video(truth, colours=list(SCAIL2_PALETTE) + [violet, orange, teal])
    decoded, _ = decode_colour_masks(jpeg(video, 80))
    assert decoded.ids == list(range(9))
    # 6 = orange and 7 = teal (both seen at frame 0, orange further left), 8 = violet (first seen at frame 4)
    for number, person, colour in ((6, 7, orange), (7, 8, teal), (8, 6, violet)):
        assert iou(decoded.masks[number], truth[person]) > 0.9, number
        assert torch.allclose(decoded.colours[number], torch.tensor(colour), atol=0.05), number
    assert not decoded.masks[8, :4].any()


def test_extra_colours_can_be_turned_off():
    gray = (0.5, 0.5, 0.5)  # farther than the tolerance (0.5) from black, white and every palette colour
    truth = people_masks(3)
    video = scail_colour_video(truth, colours=[SCAIL2_PALETTE[0], gray, SCAIL2_PALETTE[1]])
    assert decode_colour_masks(video)[0].ids == [0, 1, 6]
    assert decode_colour_masks(video, DecodeSettings(extra_colours=False))[0].ids == [0, 1]


def test_reference_mask_is_read_with_the_videos_colours():
    truth = people_masks(3)
    colours = [SCAIL2_PALETTE[0], EXTRA[0], SCAIL2_PALETTE[2]]
    video = scail_colour_video(truth, colours=colours)
    reference = scail_colour_video(truth[[0, 1], :1], "white", colours=colours[:2])  # animation mode: white background
    drv, ref = decode_colour_masks(video, reference=reference)
    assert drv.ids == [0, 2, 6] and ref.ids == [0, 6]
    assert torch.equal(ref.masks[:, 0], truth[[0, 1], 0])
    assert colour_binding(ref, drv) == "A=0, B=6"


def test_bad_settings_and_inputs_are_refused_in_words():
    with pytest.raises(AnyCrowdError, match="tolerance"):
        decode_colour_masks(torch.zeros(1, 8, 8, 3), DecodeSettings(tolerance=1.5))
    with pytest.raises(AnyCrowdError, match="NaN"):
        decode_colour_masks(torch.full((1, 8, 8, 3), float("nan")))
    with pytest.raises(AnyCrowdError, match="IMAGE"):
        decode_colour_masks(torch.zeros(8, 8))


def test_mask_boxes_of_an_empty_mask_are_nan():
    assert torch.isnan(mask_boxes(torch.zeros(2, 5, 5, dtype=torch.bool))).all()


# --- SAM3 track data --------------------------------------------------------------------------

def test_sam3_unpack_inverts_comfyuis_pack_format():
    masks = torch.rand(3, 2, 16, 24) > 0.5
    assert torch.equal(unpack_sam3_masks(sam3_pack(masks)), masks)


def test_sam3_numbers_are_the_colours_scail2coloredmask_gives_them():
    # SAM3 finds the people in another order (right to left); person 2 enters late
    truth = people_masks(3, enter={2: 2})
    sam3_order = truth[[2, 1, 0]]
    decoded = decode_sam3_track_data(sam3_track_data(sam3_order), "left_to_right")
    assert decoded.ids == [0, 1, 2]
    # SCAIL2ColoredMask (sort_by=left_to_right: first frame seen, then centroid x) paints person 0 blue, 1 red, 2 green
    from_colours, _ = decode_colour_masks(scail_colour_video(truth))
    assert torch.equal(decoded.masks, from_colours.masks)


def test_sam3_masks_are_resized_from_the_square_working_size_to_orig_size():
    truth = people_masks(2, h=32, w=48)
    work = torch.nn.functional.interpolate(truth.flatten(0, 1)[:, None].float(), size=(64, 64), mode="nearest")
    data = sam3_track_data(work[:, 0].view(2, T, 64, 64).bool(), orig_size=(32, 48))
    decoded = decode_sam3_track_data(data)
    assert decoded.size == (32, 48)
    assert all(iou(decoded.masks[k], truth[k]) > 0.9 for k in range(2))


def test_sam3_has_no_six_object_cap_and_sort_options_follow_scail():
    truth = people_masks(8)
    data = sam3_track_data(truth[torch.randperm(8, generator=torch.Generator().manual_seed(0))])
    decoded = decode_sam3_track_data(data)
    assert decoded.ids == list(range(8)) and torch.equal(decoded.masks, truth)
    assert torch.equal(decoded.colours[:6], torch.tensor(SCAIL2_PALETTE))
    assert len({tuple(c) for c in decoded.colours.tolist()}) == 8
    big_first = people_masks(3).clone()
    big_first[1, :, 5:60, 30:60] = True  # person 1 is the largest
    by_area = decode_sam3_track_data(sam3_track_data(big_first), "area")
    assert torch.equal(by_area.masks[0], big_first[1])
    assert torch.equal(decode_sam3_track_data(sam3_track_data(big_first), "none").masks, big_first)


def test_sam3_without_objects_and_bad_data_are_clear():
    empty = decode_sam3_track_data({"packed_masks": None, "n_frames": 4, "scores": [], "orig_size": (8, 16)})
    assert empty.num_identities == 0 and empty.size == (8, 16)
    with pytest.raises(AnyCrowdError, match="SAM3 Video Track"):
        decode_sam3_track_data({"packed_masks": torch.zeros(2, 1, 4, 2)})
    with pytest.raises(AnyCrowdError, match="sort_by"):
        decode_sam3_track_data(sam3_track_data(people_masks(1)), "random")


def test_colour_binding_names_reference_identities_missing_from_the_video():
    truth = people_masks(3)
    drv, ref = decode_colour_masks(scail_colour_video(truth[:2]), reference=scail_colour_video(truth[:, :1]))
    with pytest.raises(AnyCrowdError, match=r"C \(green, number 2\)"):
        colour_binding(ref, drv)


# --- the node ---------------------------------------------------------------------------------

pack = load_pack()
node_module = pack.nodes.node_identity_masks


def run(**kwargs):
    return node_module.AnyCrowdIdentityMasks().read(**kwargs)


def test_node_outputs_reference_masks_tracks_binding_track_masks_and_preview():
    truth = people_masks(3)
    video = scail_colour_video(truth)
    driving_video = torch.rand(T, H, W, 3)
    ref, tracks, binding, track_masks, mask_video, preview = run(mask_video=video, reference_frame=2,
                                                                 driving_video=driving_video)
    assert torch.equal(ref, truth[:, 2].float())
    assert isinstance(tracks, PoseTracks) and tracks.track_ids == [0, 1, 2] and (tracks.height, tracks.width) == (H, W)
    assert torch.equal(tracks.boxes, mask_boxes(truth)) and not tracks.keypoints.any()
    assert binding == "A=0, B=1, C=2"
    assert torch.equal(track_masks, truth.flatten(0, 1).float())  # IILR Encode's track_masks layout
    assert torch.equal(mask_video, video)
    assert preview.shape[0] == 1 and preview.shape[1] == H and preview.shape[2] > 2 * W


def test_node_binding_override_recasts_and_leaves_tracks_out():
    truth = people_masks(3)
    ref, tracks, binding, track_masks, _, _ = run(mask_video=scail_colour_video(truth),
                                                  reference_mask=scail_colour_video(truth[:2, :1], "white"),
                                                  binding="A=2, B=0")
    assert ref.shape == (2, H, W) and binding == "A=2, B=0"
    assert tracks.track_ids == [2, 0]  # only the bound tracks, in binding order: IILR Encode redraws nothing
    assert torch.equal(track_masks, truth[[2, 0]].flatten(0, 1).float())


def test_node_default_binding_leaves_out_tracks_with_no_reference_identity():
    truth = people_masks(4)
    _, tracks, binding, _, _, _ = run(mask_video=scail_colour_video(truth),
                                      reference_mask=scail_colour_video(truth[[1, 3], :1], colours=[SCAIL2_PALETTE[1], SCAIL2_PALETTE[3]]))
    assert binding == "A=1, B=3" and tracks.track_ids == [1, 3]


def test_node_reads_sam3_track_data_for_both_sides():
    truth = people_masks(7)
    ref, tracks, binding, *_ = run(driving_track_data=sam3_track_data(truth),
                                   reference_track_data=sam3_track_data(truth[[0, 1, 2], :1]))
    assert binding == "A=0, B=1, C=2" and ref.shape == (3, H, W)
    assert tracks.num_frames == T


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(mask_video=None), "No driving masks"),
    (dict(mask_video=torch.zeros(T, H, W, 3)), "No identities found in the driving masks"),
    (dict(binding="A=0, B=0@+0.3w"), "@offset"),
    (dict(binding="A=7"), "track 7 does not exist"),
    (dict(driving_video=torch.zeros(T - 1, H, W, 3)), "8"),
    (dict(driving_video=torch.zeros(T, H, H, 3)), "another shape"),
    (dict(reference_frame=T), "outside the mask video"),
    (dict(driving_track_data={"packed_masks": None, "n_frames": T, "orig_size": (H, W)}), "Both mask_video and driving_track_data"),
    (dict(mask_video=torch.full((T, H, W, 3), float("nan"))), "mask_video"),
    (dict(reference_mask=torch.zeros(1, H, W, 1)), "reference_mask"),
    (dict(tolerance=float("nan")), "tolerance"),
    (dict(mask_video=None, driving_track_data=[1, 2]), "SAM3 Video Track"),
])
def test_node_refuses_bad_inputs_in_words(kwargs, fragment):
    args = dict(mask_video=scail_colour_video(people_masks(2)))
    args.update(kwargs)
    with pytest.raises(AnyCrowdError, match=fragment):
        run(**args)


def test_node_validates_the_binding_syntax_before_running():
    cls = node_module.AnyCrowdIdentityMasks
    assert cls.VALIDATE_INPUTS(binding="") is True and cls.VALIDATE_INPUTS(binding="A=1, B=0") is True
    assert "syntax" in cls.VALIDATE_INPUTS(binding="A==1")


def test_mask_only_tracks_drive_the_decoupler_and_iilr_encode():
    """The TRACKS consumers take mask-only tracks: Instance Decoupler takes the reference masks, IILR
    Encode binds the tracks with the node's binding and builds the layout from their boxes."""
    truth = people_masks(2)
    video = scail_colour_video(truth)
    ref, tracks, binding, _, mask_video, _ = run(mask_video=video, binding="A=1, B=0")
    image = torch.rand(1, H, W, 3)
    instances = pack.nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(image, ref)[0]
    cond = [[torch.zeros(1, 4, 32), {"pooled_output": None}]]
    encode = pack.nodes.node_iilr_encode.AnyCrowdIILREncode()
    pos, neg, latent, trim, layout = encode.encode(cond, cond, TestVAE(), instances, mask_video, W, H, T, 1, 1.0,
                                                   boxes="", binding=binding, tracks=tracks)
    assert trim == 3 and layout.num_identities == 2
    boxes, identities, redrawn = pack.nodes.track_inputs.pose_track_boxes(tracks, "", None, binding, instances, T, (H, W),
                                                                         (H, W))
    assert identities == [0, 1] and redrawn is None  # the control video is used as connected
    assert torch.equal(torch.isnan(boxes[..., 0]), ~truth[[1, 0]].flatten(2).any(-1))


def test_mask_only_tracks_drive_the_long_video_sampler_inputs():
    truth = people_masks(3)
    ref, tracks, binding, _, mask_video, _ = run(mask_video=scail_colour_video(truth), binding="A=2, B=0, C=1")
    instances = pack.nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(torch.rand(1, H, W, 3), ref)[0]
    inputs = pack.nodes.node_long_video.resolve_inputs(instances, mask_video, W, H, "", binding, tracks, None,
                                                       1.0, 0.5, True)
    assert list(inputs.binding) == [0, 1, 2]
    assert torch.equal(torch.isnan(inputs.boxes[..., 0]), ~truth[[2, 0, 1]].flatten(2).any(-1))


def test_every_reference_identity_must_be_bound():
    with pytest.raises(AnyCrowdError, match="Identity C is not bound"):
        run(mask_video=scail_colour_video(people_masks(3)), binding="A=2, B=0")


def test_preview_paints_each_identity_in_its_colour_and_labels_it():
    truth = people_masks(2)
    _, _, _, _, _, preview = run(mask_video=scail_colour_video(truth), reference_frame=0)
    left, right = preview[0, :, :W], preview[0, :, -W:]  # reference frame 0 | driving frame 0 (all present)
    for panel in (left, right):
        blue, red = panel[truth[0, 0]].mean(0), panel[truth[1, 0]].mean(0)
        assert blue[2] > 0.5 > blue[0] and red[0] > 0.5 > red[2]
        white = (panel > 0.95).all(-1)
        assert white.any() and bool(white[truth[:, 0].any(0)].any())  # the white label text sits on the masks


def test_a_driving_video_of_another_size_but_the_same_shape_is_accepted():
    truth = people_masks(2)
    big = torch.rand(T, 2 * H, 2 * W, 3)
    ref, tracks, *_, preview = run(mask_video=scail_colour_video(truth), driving_video=big, reference_frame=1)
    assert (tracks.height, tracks.width) == (H, W)  # tracks stay in pixels of the masks
    assert preview.shape[1] == H and torch.equal(ref, truth[:, 1].float())
