"""Specification of anycrowd_core.video_io: MP4/PNG files and the preview contact sheet."""

import av
import cv2
import numpy as np
import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.video_io import preview_sheet, read_video, write_mp4, write_png

# Flat colours survive lossy coding nearly unchanged, so the round trip can check them.
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)]


def colour_video(h=32, w=48, colours=COLOURS):
    return torch.tensor(colours, dtype=torch.float32)[:, None, None, :].expand(len(colours), h, w, 3).contiguous()


@pytest.mark.parametrize("codec,decoded_as", [(None, None), ("mpeg4", "mpeg4")])
def test_mp4_round_trip_keeps_frame_count_size_fps_and_colours(tmp_path, codec, decoded_as):
    video = colour_video()
    path = write_mp4(video, tmp_path / "sub" / "out.mp4", fps=16, codec=codec)
    if decoded_as is None:  # default: H.264 whenever this av build can encode it
        decoded_as = "h264" if "libx264" in av.codec.codecs_available else "mpeg4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.codec_context.name == decoded_as
    back = read_video(path)
    assert back.shape == (5, 32, 48, 3) and back.dtype == torch.float32
    # yuv420p + lossy coding: flat colours come back within a few levels
    assert (back - video).abs().mean(dim=(1, 2)).max().item() < 0.03


def test_mp4_pads_odd_sizes_to_even(tmp_path):
    video = colour_video(h=17, w=23, colours=COLOURS[:3])
    back = read_video(write_mp4(video, tmp_path / "odd.mp4"))
    assert back.shape == (3, 18, 24, 3)
    # the padding replicates the edge, so the extra column keeps the frame's colour
    assert torch.allclose(back[:, :, -1], back[:, :, 0], atol=0.05)


def test_mp4_accepts_numpy_uint8(tmp_path):
    frames = np.full((4, 16, 16, 3), 200, dtype=np.uint8)
    back = read_video(write_mp4(frames, tmp_path / "u8.mp4"))
    assert back.shape == (4, 16, 16, 3)
    assert abs(back.mean().item() - 200 / 255) < 0.02


def test_mp4_rejects_wrong_layout(tmp_path):
    with pytest.raises(AnyCrowdError, match=r"\[T, H, W, 3\]"):
        write_mp4(torch.zeros(4, 3, 16, 16), tmp_path / "bad.mp4")


def test_read_video_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(AnyCrowdError, match="does not exist"):
        read_video(tmp_path / "nope.mp4")


def test_read_video_undecodable_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(AnyCrowdError, match="could not decode"):
        read_video(bad)


def test_write_png_stores_rgb_in_bgr_order(tmp_path):
    image = torch.zeros(6, 10, 3)
    image[..., 0] = 1.0  # pure red
    path = write_png(image, tmp_path / "red.png")
    bgr = cv2.imread(str(path))
    assert bgr.shape == (6, 10, 3)
    assert (bgr[..., 2] == 255).all() and (bgr[..., :2] == 0).all()


def test_preview_sheet_shape_with_labels_and_even_sampling():
    t = torch.linspace(0, 1, 17)  # frame i has brightness i/16
    video = t[:, None, None, None].expand(17, 16, 24, 3).contiguous()
    image = torch.full((16, 24, 3), 0.25)
    sheet = preview_sheet([video, image], labels=["generated", "reference"], num_columns=5, label_height=20)
    assert sheet.shape == (2 * (20 + 16), 5 * 24, 3)
    assert sheet.dtype == torch.float32 and 0.0 <= sheet.min() and sheet.max() <= 1.0
    # columns show frames 0, 4, 8, 12, 16 of the 17-frame video
    centres = sheet[20 + 8, 12::24, 0]
    assert torch.allclose(centres, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), atol=1 / 255)
    # the label strip contains drawn (white) text pixels
    assert sheet[:20].max().item() > 0.5
    # an image row fills one column, the rest stays background
    assert sheet[36 + 20 + 8, 12, 0].item() == pytest.approx(0.25, abs=1 / 255)
    assert sheet[36 + 20 + 8, 24 + 12, 0].item() == pytest.approx(32 / 255, abs=1e-6)


def test_preview_sheet_without_labels_and_mixed_sizes():
    big = torch.ones(3, 32, 32, 3)
    small = torch.ones(2, 8, 16, 3)
    sheet = preview_sheet([big, small], num_columns=4, tile_size=(16, 16))
    assert sheet.shape == (32, 64, 3)
    # the 8x16 row keeps its aspect ratio: letterboxed to 8 rows of 16 inside a 16x16 tile
    assert sheet[16 + 8, 8, 0].item() == 1.0 and sheet[16 + 1, 8, 0].item() == pytest.approx(32 / 255)


def test_preview_sheet_draws_long_and_non_ascii_labels_without_error():
    sheet = preview_sheet([torch.zeros(2, 8, 8, 3)], labels=["x" * 200 + " überlang 人"], num_columns=2)
    assert sheet.shape == (20 + 8, 16, 3)


def test_preview_sheet_label_count_must_match_rows():
    with pytest.raises(AnyCrowdError, match="one label per row"):
        preview_sheet([torch.zeros(2, 8, 8, 3)], labels=["a", "b"])
