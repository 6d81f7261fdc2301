"""Video and image files for the headless path: MP4 writing/reading with PyAV, PNG with
OpenCV, and a labelled contact sheet so a person can judge a demo run from one image.

All pixel data uses the package convention: float `[T, H, W, 3]` (or `[H, W, 3]`) RGB in 0..1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import AnyCrowdError, require_finite
from .files import atomic_output

PathLike = str | os.PathLike
ArrayLike = torch.Tensor | np.ndarray


def _to_uint8(frames: ArrayLike, ndim: int, what: str) -> np.ndarray:
    """float 0..1 (or uint8) torch/numpy RGB -> contiguous uint8 numpy, shape checked."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().to("cpu")
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    frames = np.asarray(frames)
    expected = "[T, H, W, 3]" if ndim == 4 else "[H, W, 3]"
    if frames.ndim != ndim or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise AnyCrowdError(
            f"{what} must be RGB of shape {expected}, got {tuple(frames.shape)}; "
            "pass channels-last RGB (ComfyUI IMAGE layout)."
        )
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    # NaN would turn into black pixels without a word: a failed generation must not look saved
    require_finite(frames, what, "The model or an input produced NaN/inf: check the inputs' values and the "
                   "sampling settings (cfg, shift, strengths); nothing was written.")
    # Round rather than truncate so 0..1 -> 0..255 -> 0..1 round trips are unbiased.
    return np.ascontiguousarray(np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8))


def _pick_codec() -> str:
    import av

    # libx264 gives far better quality per byte; some av wheels ship without it.
    return "libx264" if "libx264" in av.codec.codecs_available else "mpeg4"


def write_mp4(frames: ArrayLike, path: PathLike, fps: int = 16, codec: str | None = None) -> Path:
    """Write `[T, H, W, 3]` RGB frames (float 0..1 or uint8) to an H.264 (else MPEG-4) yuv420p MP4.

    Odd widths/heights are padded by one replicated edge pixel, since yuv420p needs even
    sizes. Wan generates 16 fps, hence the default. `codec` forces "libx264" or "mpeg4"
    (default: libx264 when the installed av has it). Returns the path written.
    """
    import av

    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps >= 1):
        raise AnyCrowdError(f"fps must be a number of at least 1, got {fps!r}; Wan videos use 16.")
    data = _to_uint8(frames, 4, "video frames")
    pad_h, pad_w = data.shape[1] % 2, data.shape[2] % 2
    if pad_h or pad_w:
        data = np.pad(data, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    codec = codec or _pick_codec()
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "medium"}
        else:
            stream.bit_rate = 8_000_000
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed frames
            container.mux(packet)
    return path


def read_video(path: PathLike) -> torch.Tensor:
    """Decode every frame of a video file to float `[T, H, W, 3]` RGB in 0..1."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AnyCrowdError(f"video file {str(path)!r} does not exist; check the path.")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise AnyCrowdError(f"could not decode video {str(path)!r} ({exc}); re-encode it as MP4 (H.264).") from exc
    if not frames:
        raise AnyCrowdError(f"video {str(path)!r} has no frames; check the file.")
    return torch.from_numpy(np.stack(frames)).float().div_(255.0)


def write_png(image: ArrayLike, path: PathLike) -> Path:
    """Write one `[H, W, 3]` RGB image (float 0..1 or uint8) as PNG. Returns the path written."""
    import cv2

    data = _to_uint8(image, 3, "image")
    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(data, cv2.COLOR_RGB2BGR)):
            raise AnyCrowdError(f"could not write PNG {str(path)!r}; check the folder is writable and the name ends in .png.")
    return path


def _fit_tile(frame: np.ndarray, tile_h: int, tile_w: int, background: int) -> np.ndarray:
    """Resize keeping aspect ratio and letterbox into a tile (rows may differ in size)."""
    import cv2

    h, w = frame.shape[:2]
    scale = min(tile_h / h, tile_w / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    if (new_h, new_w) != (h, w):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tile = np.full((tile_h, tile_w, 3), background, dtype=np.uint8)
    top, left = (tile_h - new_h) // 2, (tile_w - new_w) // 2
    tile[top:top + new_h, left:left + new_w] = frame
    return tile


def preview_sheet(
    rows: Sequence[ArrayLike],
    labels: Sequence[str] | None = None,
    num_columns: int = 8,
    tile_size: tuple | None = None,
    label_height: int = 20,
) -> torch.Tensor:
    """Contact sheet: one row per video (`[T, H, W, 3]`) or image (`[H, W, 3]`), showing
    `num_columns` evenly spaced frames (all frames if fewer), each under its text label.

    Tiles are `tile_size = (h, w)` (default: the first row's frame size); other sizes are
    letterboxed. Returns float `[R * (label_height + h), num_columns * w, 3]` in 0..1, where
    the label strip is present only if `labels` is given.
    """
    import cv2

    if not rows:
        raise AnyCrowdError("preview_sheet needs at least one row; pass a list of videos or images.")
    if labels is not None and len(labels) != len(rows):
        raise AnyCrowdError(f"preview_sheet got {len(labels)} labels for {len(rows)} rows; give one label per row.")
    if num_columns < 1:
        raise AnyCrowdError(f"num_columns must be >= 1, got {num_columns}.")
    videos = []
    for i, row in enumerate(rows):
        ndim = row.ndim if hasattr(row, "ndim") else np.asarray(row).ndim
        videos.append(_to_uint8(row, 3, f"row {i}")[None] if ndim == 3 else _to_uint8(row, 4, f"row {i}"))
    tile_h, tile_w = tile_size if tile_size is not None else videos[0].shape[1:3]
    strip = label_height if labels is not None else 0
    background = 32  # dark grey: empty cells and letterboxing stand out from black frames
    sheet = np.full((len(videos) * (strip + tile_h), num_columns * tile_w, 3), background, dtype=np.uint8)
    for r, video in enumerate(videos):
        top = r * (strip + tile_h)
        if strip:
            sheet[top:top + strip] = 0
            scale = max(0.3, (strip - 6) / 22.0)  # Hershey simplex is ~22 px tall at scale 1
            cv2.putText(sheet, str(labels[r]), (4, top + strip - 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)
        t = video.shape[0]
        picks = range(t) if t <= num_columns else np.linspace(0, t - 1, num_columns).round().astype(int)
        for c, idx in enumerate(picks):
            sheet[top + strip:top + strip + tile_h, c * tile_w:(c + 1) * tile_w] = _fit_tile(
                video[idx], tile_h, tile_w, background)
    return torch.from_numpy(sheet).float().div_(255.0)
