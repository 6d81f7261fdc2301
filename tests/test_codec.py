"""Specification of the codec interface, Wan frame geometry and the deterministic TestCodec."""

import pytest
import torch

from anycrowd_core.codec import (
    TestCodec,
    VideoCodec,
    check_frame_size,
    latent_frames,
    nearest_valid_frame_counts,
    pixel_frames,
)
from anycrowd_core.errors import AnyCrowdError


def _block_video(t_lat: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Pixel video constant per 8x8 block and per causal temporal group."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(t_lat, h, w, 3, generator=g)
    reps = torch.tensor([1] + [4] * (t_lat - 1))
    return lat.repeat_interleave(reps, 0).repeat_interleave(8, 1).repeat_interleave(8, 2)


def test_latent_frame_geometry():
    assert [latent_frames(t) for t in (1, 5, 17, 81)] == [1, 2, 5, 21]
    assert [pixel_frames(n) for n in (1, 2, 5, 21)] == [1, 5, 17, 81]
    assert nearest_valid_frame_counts(80) == (77, 81)
    assert nearest_valid_frame_counts(81) == (81, 81)
    with pytest.raises(AnyCrowdError, match=r"77 or 81"):
        latent_frames(80)
    with pytest.raises(AnyCrowdError, match=r"width 200 \(use 192 or 208\)"):
        check_frame_size(128, 200)


def test_test_codec_satisfies_the_protocol_with_wan_shapes():
    codec = TestCodec()
    assert isinstance(codec, VideoCodec)
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (16, 8, 4)
    z = codec.encode(torch.rand(17, 64, 96, 3))
    assert z.shape == (16, 5, 8, 12) and z.dtype == torch.float32
    assert codec.decode(z).shape == (17, 64, 96, 3)
    assert codec.encode(torch.rand(1, 16, 16, 3)).shape == (16, 1, 2, 2)


def test_round_trip_is_exact_for_block_and_group_constant_video():
    codec = TestCodec(seed=3)
    video = _block_video(5, 6, 10)
    assert video.shape == (17, 48, 80, 3)
    assert torch.allclose(codec.decode(codec.encode(video)), video, atol=1e-6)


def test_temporal_grouping_is_causal():
    codec = TestCodec()
    values = torch.arange(9, dtype=torch.float32) / 10  # frame f is uniformly f/10
    video = values.view(9, 1, 1, 1).expand(9, 16, 16, 3).contiguous()
    z = codec.encode(video)
    expected_means = torch.tensor([0.0, 0.25, 0.65])  # frame 0; mean(1..4)/10; mean(5..8)/10
    rgb = (2 * expected_means - 1)[:, None].expand(3, 3)  # [T_lat, 3], gray per frame
    lat = torch.einsum("cr,tr->ct", codec.matrix.float(), rgb)
    assert torch.allclose(z[:, :, 0, 0], lat, atol=1e-6)
    assert torch.allclose(z, z[:, :, :1, :1].expand_as(z))


def test_gray_encodes_to_zero_raw_latent():
    z = TestCodec().encode(torch.full((5, 16, 32, 3), 0.5))
    assert z.abs().max() < 1e-7


def test_spatial_pooling_is_8x8_average():
    codec = TestCodec()
    img = torch.zeros(1, 16, 16, 3)
    img[0, 0, 0] = 1.0  # one bright pixel in block (0, 0)
    z = codec.encode(img)
    x = 2 * (torch.ones(3) / 64) - 1  # block mean in ComfyUI's -1..1 range
    assert torch.allclose(z[:, 0, 0, 0], codec.matrix.float() @ x, atol=1e-6)
    assert torch.allclose(z[:, 0, 1, 1], codec.matrix.float() @ -torch.ones(3), atol=1e-6)


def test_codec_validates_its_inputs():
    codec = TestCodec()
    with pytest.raises(AnyCrowdError, match=r"13 or 17"):
        codec.encode(torch.rand(16, 16, 16, 3))
    with pytest.raises(AnyCrowdError, match=r"multiples of 8"):
        codec.encode(torch.rand(1, 20, 16, 3))
    with pytest.raises(AnyCrowdError, match=r"\[T, H, W, 3\]"):
        codec.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(AnyCrowdError, match=r"\[16, L, h, w\]"):
        codec.decode(torch.rand(1, 16, 2, 2, 2))
