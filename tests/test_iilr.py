"""Specification of IILR encoding (AnyCrowd §3.2) in ComfyUI's WanVaceToVideo conventions."""

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.decoupler import DecoupledInstances, decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import (
    comfy_vace_inputs,
    encode_control_stream,
    encode_iilr,
    latent_frames,
    raw_vace_streams,
    vace_mask_channels,
)
from anycrowd_core.latent_format import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, process_in, process_out
from anycrowd_core.scenes import make_scene

MEAN = torch.tensor(WAN21_LATENTS_MEAN).view(16, 1, 1, 1)
STD = torch.tensor(WAN21_LATENTS_STD).view(16, 1, 1, 1)


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=3, num_frames=9, height=64, width=96, seed=0)


@pytest.fixture(scope="module")
def decoupled(scene):
    return decouple_instances(scene.reference_image, scene.reference_masks)


def single_identity(image: torch.Tensor) -> DecoupledInstances:
    h, w = image.shape[:2]
    return DecoupledInstances(
        identity_images=image[None],
        background=torch.full_like(image, 0.5),
        masks=torch.ones(1, h, w, dtype=torch.bool),
        boxes=torch.tensor([[0.0, 0.0, w, h]]),
        offsets=torch.zeros(1, 2),
        scales=torch.ones(1),
    )


def test_shapes_and_trim(scene, decoupled):
    cond = encode_iilr(TestCodec(), decoupled, scene.pose_video)
    assert cond.reference_latents.shape == (16, 4, 8, 12)  # R_1..R_3, R_bg
    assert cond.vace_context.shape == (96, 4 + 3, 8, 12)
    assert cond.noise_latent_shape == (16, 7, 8, 12)
    assert (cond.trim, cond.num_video_frames, cond.height, cond.width) == (4, 9, 64, 96)
    assert cond.num_latent_frames == latent_frames(9) == 3
    no_bg = encode_iilr(TestCodec(), decoupled, scene.pose_video, background=False)
    assert no_bg.trim == 3 and no_bg.vace_context.shape == (96, 6, 8, 12)
    assert torch.equal(no_bg.reference_latents, cond.reference_latents[:, :3])


def test_each_reference_frame_depends_only_on_its_own_image(scene, decoupled):
    codec = TestCodec()
    base = encode_iilr(codec, decoupled, scene.pose_video)
    changed_images = decoupled.identity_images.clone()
    changed_images[1] = torch.rand(changed_images[1].shape, generator=torch.Generator().manual_seed(1))
    changed = DecoupledInstances(
        changed_images, decoupled.background, decoupled.masks, decoupled.boxes, decoupled.offsets, decoupled.scales
    )
    cond = encode_iilr(codec, changed, scene.pose_video)
    differs = [not torch.equal(cond.reference_latents[:, i], base.reference_latents[:, i]) for i in range(4)]
    assert differs == [False, True, False, False]
    assert torch.equal(cond.vace_context[:, [0, 2, 3, 4, 5, 6]], base.vace_context[:, [0, 2, 3, 4, 5, 6]])


def test_reference_frames_are_identity_order_then_background(scene, decoupled):
    codec = TestCodec()
    cond = encode_iilr(codec, decoupled, scene.pose_video)
    for i in range(3):
        alone = process_in(codec.encode(decoupled.identity_images[i][None]))
        assert torch.equal(cond.reference_latents[:, i : i + 1], alone)
    bg = process_in(codec.encode(decoupled.background[None]))
    assert torch.equal(cond.reference_latents[:, 3:4], bg)


def test_vace_context_channel_layout(scene, decoupled):
    codec = TestCodec()
    mask = torch.zeros(9, 64, 96)
    mask[:, :, 48:] = 1.0  # regenerate the right half only
    cond = encode_iilr(codec, decoupled, scene.pose_video, mask)
    ctx, r = cond.vace_context, cond.trim
    v = scene.pose_video - 0.5
    inactive = process_in(codec.encode(v * (1 - mask[..., None]) + 0.5))
    reactive = process_in(codec.encode(v * mask[..., None] + 0.5))
    assert torch.equal(ctx[0:16, r:], inactive)
    assert torch.equal(ctx[16:32, r:], reactive)
    assert torch.equal(ctx[0:16, :r], cond.reference_latents)
    assert (ctx[16:32, :r] == 0).all() and (ctx[32:, :r] == 0).all()  # reference: zeros + zero mask
    assert (ctx[32:, r:, :, 6:] == 1).all() and (ctx[32:, r:, :, :6] == 0).all()


def test_mask_space_to_depth_channel_is_dy_times_8_plus_dx():
    mask = torch.zeros(5, 16, 16)
    mask[:, 8 + 3, 0 + 5] = 1.0  # pixel (y=11, x=5): block (1, 0), offset dy=3, dx=5
    m64 = vace_mask_channels(mask, 2)
    assert m64.shape == (64, 2, 2, 2)
    nz = torch.nonzero(m64).tolist()
    assert nz == [[3 * 8 + 5, 0, 1, 0], [3 * 8 + 5, 1, 1, 0]]


def test_mask_time_resize_is_nearest_exact():
    mask = (torch.arange(17, dtype=torch.float32) / 16).view(17, 1, 1).expand(17, 16, 16).contiguous()
    m64 = vace_mask_channels(mask, 5)
    # nearest-exact picks pixel frame floor((j + 0.5) * 17 / 5) for latent frame j
    assert m64[0, :, 0, 0].tolist() == [f / 16 for f in (1, 5, 8, 11, 15)]


def test_hand_derived_single_identity_numbers():
    codec = TestCodec(seed=1)
    colour = torch.tensor([0.9, 0.2, 0.4])
    ref = colour.expand(16, 32, 3).contiguous()
    video = torch.full((5, 16, 32, 3), 0.5)  # neutral control: both halves encode to raw 0
    cond = encode_iilr(codec, single_identity(ref), video, background=False, strength=0.7)
    raw_ref = codec.matrix.float() @ (2 * colour - 1)  # [16]
    expected_ref = (raw_ref.view(16, 1, 1, 1) - MEAN) / STD
    assert torch.allclose(cond.reference_latents, expected_ref.expand(16, 1, 2, 4), atol=1e-5)
    assert torch.allclose(cond.vace_context[0:16, 1:], (-MEAN / STD).expand(16, 2, 2, 4), atol=1e-6)
    assert torch.allclose(cond.vace_context[16:32, 1:], (-MEAN / STD).expand(16, 2, 2, 4), atol=1e-6)
    assert (cond.vace_context[32:, 1:] == 1).all()
    assert cond.vace_strength == 0.7 and cond.trim == 1 and cond.noise_latent_shape == (16, 3, 2, 4)


def test_comfy_vace_inputs_map_back_exactly(scene, decoupled):
    cond = encode_iilr(TestCodec(), decoupled, scene.pose_video)
    c = comfy_vace_inputs(cond)
    assert c.vace_frames.shape == (1, 32, 7, 8, 12) and c.vace_mask.shape == (1, 64, 7, 8, 12)
    assert c.trim_latent == 4 and c.latent.shape == (1, 16, 7, 8, 12) and not c.latent.any()
    # reference zero half is ComfyUI's process_out(zeros), i.e. the latent mean
    assert torch.allclose(c.vace_frames[0, 16:32, :4], MEAN.expand(16, 4, 8, 12))
    back = torch.cat([process_in(c.vace_frames[0, :16]), process_in(c.vace_frames[0, 16:]), c.vace_mask[0]])
    assert torch.allclose(back, cond.vace_context, atol=1e-5)


def test_latent_normalisation_matches_comfyui_wan21():
    z = torch.randn(16, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(process_out(process_in(z)), z, atol=1e-6)
    assert torch.allclose(process_in(MEAN.expand(16, 1, 2, 2)), torch.zeros(16, 1, 2, 2))
    assert process_in(torch.zeros(16, 1, 1, 1))[0].item() == pytest.approx(0.7571 / 2.8184)
    assert process_out(torch.ones(1, 16, 1, 1, 1))[0, 15].item() == pytest.approx(1.9160 - 0.2921)
    with pytest.raises(AnyCrowdError, match="16 channels"):
        process_in(torch.zeros(32, 1, 2, 2))


def test_geometry_errors_name_the_fix(scene, decoupled):
    codec = TestCodec()
    with pytest.raises(AnyCrowdError, match=r"5 or 9"):
        encode_iilr(codec, decoupled, scene.pose_video[:8])
    big = make_scene(num_frames=5)
    with pytest.raises(AnyCrowdError, match=r"control video is 96x64 \(WxH\) but the reference image is 192x128"):
        encode_iilr(codec, decouple_instances(big.reference_image, big.reference_masks), scene.pose_video)
    odd = torch.rand(5, 72, 96, 3)
    with pytest.raises(AnyCrowdError, match=r"height 72 \(use 64 or 80\)"):
        encode_iilr(codec, decoupled, odd)
    with pytest.raises(AnyCrowdError, match=r"control mask"):
        encode_iilr(codec, decoupled, scene.pose_video, torch.ones(5, 64, 96))


def test_iilr_is_the_control_stream_with_the_references_in_its_reference_slots(scene, decoupled):
    mask = torch.rand(scene.num_frames, 64, 96, generator=torch.Generator().manual_seed(0))
    cond = encode_iilr(TestCodec(), decoupled, scene.pose_video, mask)
    stream = encode_control_stream(TestCodec(), scene.pose_video, mask, num_ref_frames=cond.trim)
    r = cond.trim
    assert torch.equal(cond.vace_context[:, r:], stream[:, r:])  # the control part, bit for bit
    assert torch.equal(cond.vace_context[:16, :r], cond.reference_latents)
    assert torch.equal(cond.vace_context[16:, :r], stream[16:, :r]) and not stream[16:, :r].any()


def test_raw_vace_streams_is_the_conversion_comfy_vace_inputs_makes(scene, decoupled):
    cond = encode_iilr(TestCodec(), decoupled, scene.pose_video, strength=0.5)
    frames, mask = raw_vace_streams(cond.vace_context)
    c = comfy_vace_inputs(cond)
    assert torch.equal(frames, c.vace_frames) and torch.equal(mask, c.vace_mask)
    assert frames.shape == (1, 32, *cond.vace_context.shape[1:]) and mask.shape == (1, 64, *cond.vace_context.shape[1:])

