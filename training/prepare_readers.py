"""Readers of a training clip's files (formats: docs/training_data.md): frames from a video
or an image folder, per-identity tracking masks, reference masks, track boxes and keypoints.
Everything is read at source resolution; an unusable file raises SkipSample, which
`training.prepare` reports for that clip without stopping the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from anycrowd_core.errors import AnyCrowdError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ARRAY_EXTS = (".npy", ".npz", ".safetensors")


class SkipSample(AnyCrowdError):
    """A clip that cannot become a training sample; reported, never fatal."""


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def _image_files(folder: Path, exts=IMAGE_EXTS) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts), key=_natural_key)


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` of an image file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SkipSample(f"cannot read image {str(path)!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask_image(path: Path) -> np.ndarray:
    """bool `[H, W]` of a mask image: a pixel is inside when its brightest channel is above
    half of the range (255/2 for 8-bit PNG), so 0/255, 0/1-as-255 and colour masks work."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SkipSample(f"cannot read mask image {str(path)!r}")
    if img.ndim == 3:
        img = img[..., :3].max(axis=-1)
    top = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else 1.0
    return img > top / 2


class ClipReader:
    """Frames of a video file (PyAV) or of a folder of image files (natural sort order),
    decoded only as far as needed and only for the requested indices."""

    def __init__(self, path: Path, what: str = "clip"):
        self.path, self.what = Path(path), what
        if not self.path.exists():
            raise SkipSample(f"{what} {str(self.path)!r} does not exist")
        if self.path.is_dir():
            self.files = _image_files(self.path)
            if not self.files:
                raise SkipSample(f"{what} folder {str(self.path)!r} has no image files ({', '.join(IMAGE_EXTS)})")
            first = read_image(self.files[0])
            self.num_frames, self.size = len(self.files), first.shape[:2]
        else:
            self.files = None
            self.num_frames, self.size = self._probe()

    def _probe(self) -> tuple[int, tuple[int, int]]:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                size = (int(stream.codec_context.height), int(stream.codec_context.width))
                count = int(stream.frames or 0)
                if count <= 0:  # no frame count in the container: count packets
                    count = sum(1 for p in container.demux(stream) if p.size)
        except (av.error.FFmpegError, IndexError) as exc:
            raise SkipSample(f"cannot read {self.what} {str(self.path)!r}: {exc}") from exc
        if count <= 0 or min(size) <= 0:
            raise SkipSample(f"{self.what} {str(self.path)!r} has no video frames")
        return count, size

    def read(self, indices) -> dict[int, np.ndarray]:
        """{index: uint8 RGB [H0, W0, 3]} for the requested frame indices."""
        wanted = sorted(set(int(i) for i in indices))
        if self.files is not None:
            return {i: read_image(self.files[i]) for i in wanted}
        import av

        out: dict[int, np.ndarray] = {}
        last = wanted[-1]
        try:
            with av.open(str(self.path)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except av.error.FFmpegError as exc:
            raise SkipSample(f"cannot decode {self.what} {str(self.path)!r}: {exc}") from exc
        if len(out) != len(wanted):
            raise SkipSample(f"{self.what} {str(self.path)!r} decoded fewer frames than it declares ({self.num_frames})")
        return out


def _load_array(path: Path, key: str, what: str):
    """An array from .npy (memory-mapped), .npz or .safetensors (key `key` or the only entry);
    never unpickles."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(str(path), mmap_mode="r", allow_pickle=False)
        if suffix == ".npz":
            with np.load(str(path), allow_pickle=False) as z:
                names = list(z.files)
                name = key if key in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise SkipSample(f"{what} {str(path)!r} has arrays {names}; name the array {key!r}")
                return z[name]
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                name = key if key in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise SkipSample(f"{what} {str(path)!r} has tensors {names}; name the tensor {key!r}")
                t = f.get_tensor(name)
                return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    except SkipSample:
        raise
    except Exception as exc:
        raise SkipSample(f"cannot read {what} {str(path)!r}: {exc}") from exc
    raise SkipSample(f"{what} {str(path)!r}: unsupported file type; use a folder of PNGs or {', '.join(ARRAY_EXTS)}")


class TrackMasks:
    """Per-identity tracking masks of a clip, `[M, T, H0, W0]`, from either
    - a folder `<masks>/<identity>/<frame>.png` (identity folders and frame files in natural
      sort order; the k-th file is frame k; every identity has one file per clip frame), or
    - one array file (.npy / .npz / .safetensors, array name `masks`), uint8 or bool
      `[M, T, H0, W0]`, nonzero = inside."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise SkipSample(f"masks {str(self.path)!r} do not exist")
        if self.path.is_dir():
            folders = sorted((p for p in self.path.iterdir() if p.is_dir()), key=_natural_key)
            if not folders:
                raise SkipSample(f"mask folder {str(self.path)!r} has no identity sub-folders (<masks>/<identity>/<frame>.png)")
            self.files = [_image_files(f, (".png", ".bmp", ".tif", ".tiff")) for f in folders]
            counts = {len(f) for f in self.files}
            if len(counts) != 1:
                detail = ", ".join(f"{f.name}: {len(x)}" for f, x in zip(folders, self.files))
                raise SkipSample(f"mask/frame count mismatch between identities ({detail})")
            self.array = None
            self.num_tracks, self.num_frames = len(folders), counts.pop()
            if self.num_frames == 0:
                raise SkipSample(f"mask folder {str(self.path)!r} has no PNG masks")
            self.size = read_mask_image(self.files[0][0]).shape
        else:
            self.files = None
            self.array = _load_array(self.path, "masks", "masks")
            if self.array.ndim != 4:
                raise SkipSample(f"masks array {str(self.path)!r} has shape {tuple(self.array.shape)}; expected [M, T, H, W]")
            self.num_tracks, self.num_frames = int(self.array.shape[0]), int(self.array.shape[1])
            self.size = tuple(int(s) for s in self.array.shape[2:])

    def frame(self, t: int) -> np.ndarray:
        """bool `[M, H0, W0]` at clip frame t."""
        if self.array is not None:
            return np.asarray(self.array[:, t]) > 0
        return np.stack([read_mask_image(files[t]) for files in self.files])


def read_reference_masks(path: Path) -> np.ndarray:
    """bool `[N, H, W]` from a folder of `<identity>.png` (natural sort) or an array file
    (array name `masks`)."""
    path = Path(path)
    if not path.exists():
        raise SkipSample(f"reference masks {str(path)!r} do not exist")
    if path.is_dir():
        files = _image_files(path, (".png", ".bmp", ".tif", ".tiff"))
        if not files:
            raise SkipSample(f"reference mask folder {str(path)!r} has no PNG files (<identity>.png)")
        masks = [read_mask_image(f) for f in files]
        if len({m.shape for m in masks}) != 1:
            raise SkipSample(f"reference masks in {str(path)!r} differ in size")
        return np.stack(masks)
    arr = np.asarray(_load_array(path, "masks", "reference masks"))
    if arr.ndim != 3:
        raise SkipSample(f"reference masks {str(path)!r} have shape {tuple(arr.shape)}; expected [N, H, W]")
    return arr > 0


def read_tracks(path: Path, num_tracks: int, num_frames: int) -> np.ndarray:
    """float `[M, T, 4]` xyxy px from JSON `[M][T]` of `[x0, y0, x1, y1]` or null (absent)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SkipSample(f"cannot read tracks {str(path)!r}: {exc}") from exc
    if not isinstance(data, list) or len(data) != num_tracks:
        raise SkipSample(f"tracks {str(path)!r} must list {num_tracks} tracks (one per mask identity)")
    out = np.full((num_tracks, num_frames, 4), np.nan)
    for m, track in enumerate(data):
        if not isinstance(track, list) or len(track) != num_frames:
            raise SkipSample(f"track {m} in {str(path)!r} must have {num_frames} entries (one per clip frame)")
        for t, box in enumerate(track):
            if box is not None:
                if len(box) != 4:
                    raise SkipSample(f"track {m} frame {t} in {str(path)!r}: a box is [x0, y0, x1, y1] or null")
                out[m, t] = box
    return out


def read_keypoints(path: Path, num_frames: int) -> np.ndarray:
    """float64 `[M, T, K, 3]` keypoints (x, y px in the source, confidence; K >= 18) from an
    array file (array name `keypoints`) with one entry per clip frame."""
    kps = np.asarray(_load_array(path, "keypoints", "keypoints"), dtype=np.float64)
    if kps.ndim != 4 or kps.shape[1] != num_frames or kps.shape[-1] != 3 or kps.shape[2] < 18:
        raise SkipSample(f"keypoints have shape {tuple(kps.shape)}; expected [M, {num_frames}, K>=18, 3]")
    return kps
