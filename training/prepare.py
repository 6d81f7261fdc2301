"""`python -m training.prepare`: a JSONL manifest of multi-character clips -> one cached
training sample per clip (latents, IILR VACE context, layout inputs, AGF soft labels).

Formats: docs/training_data.md. Bad clips are skipped and reported, never fatal; valid
cache entries (same fingerprint) are reused, so re-running only builds what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.codec import VideoCodec, check_frame_count, check_frame_size
from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.files import ensure_output_dir, write_text_atomic
from anycrowd_core.iilr import encode_iilr
from anycrowd_core.latent_format import process_in
from anycrowd_core.layout import build_token_layout

from . import cache_format as cf

# The paper trains with one fixed prompt for every clip (appendix D) but does not print it.
DEFAULT_PROMPT = "A group of people dancing together, full body, high quality video."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ARRAY_EXTS = (".npy", ".npz", ".safetensors")
REFERENCE_TRIES = 32  # random reference frames tried before a sample is skipped
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,120}$")


class SkipSample(AnyCrowdError):
    """A clip that cannot become a training sample; reported, never fatal."""


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class CropResize:
    """Resize so the source covers the target, then center-crop: source (H0, W0) px ->
    target (H, W) px. A source pixel coordinate x maps to x * scale_x - left."""

    src: tuple[int, int]
    dst: tuple[int, int]

    @property
    def resized(self) -> tuple[int, int]:
        (h0, w0), (h, w) = self.src, self.dst
        s = max(h / h0, w / w0)
        return max(h, round(h0 * s)), max(w, round(w0 * s))

    @property
    def offset(self) -> tuple[int, int]:
        (rh, rw), (h, w) = self.resized, self.dst
        return (rh - h) // 2, (rw - w) // 2

    def _resize(self, a: np.ndarray) -> np.ndarray:
        rh, rw = self.resized
        if (rh, rw) == a.shape[:2]:
            return a
        shrink = rh < a.shape[0] or rw < a.shape[1]
        return cv2.resize(a, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def image(self, img: np.ndarray) -> np.ndarray:
        """uint8 or float `[H0, W0, C]` -> same dtype `[H, W, C]`."""
        top, left = self.offset
        h, w = self.dst
        out = self._resize(img)
        if out.ndim == 2:
            out = out[:, :, None]
        return out[top : top + h, left : left + w]

    def mask(self, m: np.ndarray) -> np.ndarray:
        """bool `[H0, W0]` -> bool `[H, W]` (area-averaged occupancy >= 0.5 when shrinking)."""
        return self.image(m.astype(np.float32))[..., 0] >= 0.5

    def points(self, xy: np.ndarray) -> np.ndarray:
        """`[..., 2]` x, y px in the source -> px in the target."""
        (h0, w0), (rh, rw) = self.src, self.resized
        top, left = self.offset
        out = np.asarray(xy, dtype=np.float64).copy()
        out[..., 0] = out[..., 0] * (rw / w0) - left
        out[..., 1] = out[..., 1] * (rh / h0) - top
        return out

    def boxes(self, b: np.ndarray) -> np.ndarray:
        """xyxy `[..., 4]` (NaN = absent) -> target px, clipped; boxes left outside become NaN."""
        h, w = self.dst
        p = self.points(np.asarray(b, dtype=np.float64).reshape(*np.shape(b)[:-1], 2, 2))
        p[..., 0] = p[..., 0].clip(0, w)
        p[..., 1] = p[..., 1].clip(0, h)
        out = p.reshape(*np.shape(b)[:-1], 4)
        empty = ~((out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1]))
        out[empty] = np.nan
        return out.astype(np.float32)


# ----------------------------------------------------------------------------- readers


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


# ----------------------------------------------------------------------------- pose


def render_keypoints(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenPose-style skeleton video float `[F, H, W, 3]` from keypoints `[M, F, K, 3]`
    (target px, confidence 0 = missing; K = 18 body points or the 128-point layout of
    `anycrowd_core.pose`), drawn by the project's one renderer (`anycrowd_core.pose.render`),
    which also draws the procedural scenes' pose videos."""
    from anycrowd_core.pose.render import draw_people

    kps = np.asarray(keypoints, dtype=np.float32)
    out = np.zeros((kps.shape[1], height, width, 3), dtype=np.uint8)
    for f in range(kps.shape[1]):
        draw_people(out[f], kps[:, f])
    return out.astype(np.float32) / 255.0


def extract_pose_video(frames: np.ndarray, pose_models: Path) -> np.ndarray:
    """Pose video float `[F, H, W, 3]` for uint8 frames `[F, H, W, 3]`, from DWPose
    (`yolox_l.onnx` + `dw-ll_ucoco_384.onnx` found under `pose_models`).

    The control video carries no identities, so per-frame detections are rendered as they
    are (no tracking needed); identities come from the tracking masks."""
    from anycrowd_core.pose.dwpose import DWPoseEstimator
    from anycrowd_core.pose.render import render_pose_sequence

    estimator = DWPoseEstimator.from_folders([pose_models])
    return render_pose_sequence(estimator.estimate_video(frames)).numpy()


# ----------------------------------------------------------------------------- manifest


@dataclass
class ManifestSample:
    """One manifest line with paths resolved against the manifest's folder."""

    line: int
    id: str
    clip: Path
    masks: Path
    reference_frame: int | None = None
    reference_image: Path | None = None
    reference_masks: Path | None = None
    tracks: Path | None = None
    pose_video: Path | None = None
    keypoints: Path | None = None
    frames: tuple[int, int | None] | None = None
    prompt: str | None = None
    raw: dict = field(default_factory=dict)

    def input_files(self) -> list[Path]:
        return [p for p in (self.clip, self.masks, self.reference_image, self.reference_masks,
                            self.tracks, self.pose_video, self.keypoints) if p is not None]


MANIFEST_KEYS = {"id", "clip", "masks", "reference_frame", "reference_image", "reference_masks",
                 "tracks", "pose_video", "keypoints", "frames", "prompt"}


def parse_manifest_line(text: str, line: int, root: Path) -> ManifestSample:
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise SkipSample(f"manifest line {line} is not JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise SkipSample(f"manifest line {line} must be a JSON object")
    unknown = set(d) - MANIFEST_KEYS
    if unknown:
        raise SkipSample(f"unknown keys {sorted(unknown)}; allowed: {sorted(MANIFEST_KEYS)}")
    for key in ("clip", "masks"):
        if not isinstance(d.get(key), str):
            raise SkipSample(f"'{key}' (a path) is required")
    sid = str(d.get("id") or f"{line:06d}")
    if not _ID_RE.match(sid):
        raise SkipSample(f"id {sid!r} may only use letters, digits, '.', '_' and '-'")

    def path(key):
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise SkipSample(f"'{key}' must be a path string or null")
        return (root / v) if not Path(v).is_absolute() else Path(v)

    ref_frame = d.get("reference_frame")
    if ref_frame is not None and (not isinstance(ref_frame, int) or isinstance(ref_frame, bool)):
        raise SkipSample("'reference_frame' must be an integer frame index")
    if ref_frame is not None and d.get("reference_image") is not None:
        raise SkipSample("give either 'reference_frame' or 'reference_image', not both")
    if (d.get("reference_image") is None) != (d.get("reference_masks") is None):
        raise SkipSample("'reference_image' needs 'reference_masks' (one mask per identity) and vice versa")
    frames = d.get("frames")
    if frames is not None:
        ok = isinstance(frames, list) and len(frames) == 2 and isinstance(frames[0], int) and frames[0] >= 0 \
            and (frames[1] is None or (isinstance(frames[1], int) and frames[1] > 0))
        if not ok:
            raise SkipSample("'frames' must be [start, count] (count may be null = to the end)")
        frames = (frames[0], frames[1])
    prompt = d.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise SkipSample("'prompt' must be a string")
    return ManifestSample(
        line=line, id=sid, clip=path("clip"), masks=path("masks"), reference_frame=ref_frame,
        reference_image=path("reference_image"), reference_masks=path("reference_masks"),
        tracks=path("tracks"), pose_video=path("pose_video"), keypoints=path("keypoints"),
        frames=frames, prompt=prompt, raw=d,
    )


# ----------------------------------------------------------------------------- settings


@dataclass
class PrepareSettings:
    """What every cached sample is made of. Changing any field rebuilds the cache entries.

    width, height: px, multiples of 16; frames: clip window length, 4n+1; stride: take
    every stride-th clip frame; seed: base of the per-sample seeds (window, reference frame,
    reassignment); reassign: the Instance Decoupler's stochastic spatial reassignment;
    background: IILR background reference frame; variants: cache entries per manifest line
    (different windows / references / reassignments); dtype: storage dtype of latents;
    codec_id: identifies the codec (a changed VAE file invalidates latents); prompt: the
    fixed prompt for samples without their own; pose_models: DWPose folder (optional).
    """

    width: int = 832
    height: int = 480
    frames: int = 49
    stride: int = 1
    seed: int = 0
    reassign: bool = True
    background: bool = True
    variants: int = 1
    dtype: str = "float32"
    codec_id: str = "test:seed=0"
    prompt: str = DEFAULT_PROMPT
    pose_models: str | None = None

    def validate(self) -> None:
        check_frame_size(self.height, self.width, what="training resolution (--width/--height)")
        check_frame_count(self.frames, "training window (--frames)")
        if self.stride < 1 or self.variants < 1:
            raise AnyCrowdError("--stride and --variants must be at least 1.")
        if self.dtype not in DTYPES:
            raise AnyCrowdError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")

    def fingerprint_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("width", "height", "frames", "stride", "seed", "reassign",
                                               "background", "dtype", "codec_id", "pose_models")}


def prompt_key(prompt: str) -> str:
    return "prompt_" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def sample_seed(seed: int, sample_id: str, variant: int) -> int:
    """Per-sample seed (63 bits) from the run seed, the sample id and the variant."""
    return int(hashlib.sha256(f"{seed}|{sample_id}|{variant}".encode()).hexdigest()[:15], 16)


# ----------------------------------------------------------------------------- text


@dataclass
class TextSource:
    """Where the prompt embeddings come from: kind "file" (precomputed safetensors with one
    `[L, D]` / `[1, L, D]` tensor for the default prompt), "encoder" (ComfyUI's umT5 file) or
    "random" (seeded Gaussian `[1, length, dim]`: tiny/test runs only)."""

    kind: str
    path: str | None = None
    dim: int = 0
    length: int = 32

    def signature(self) -> dict:
        sig = {"kind": self.kind, "dim": self.dim, "length": self.length}
        if self.path:
            sig["file"] = cf.file_signature(Path(self.path))
        return sig


RANDOM_TEXT_WARNING = (
    "RANDOM TEXT EMBEDDING: seeded Gaussian noise stands in for the umT5 prompt embedding. "
    "Fine for tiny/test runs; a model trained on it will not follow text. Use --text-encoder "
    "or --text-embedding for real training."
)


def prepare_text_embeddings(out_dir: Path, source: TextSource, prompts: list[str], seed: int,
                            default_prompt: str, log=print) -> tuple[dict, set[str]]:
    """Create (or reuse) TEXT_EMBEDDING_FILE for `prompts`; returns (header, prompts that
    cannot be embedded, i.e. custom prompts with a precomputed single embedding)."""
    sig = json.dumps({"source": source.signature(), "prompts": sorted(prompts), "seed": seed,
                      "default": default_prompt}, sort_keys=True, default=str)
    fp = hashlib.sha256(sig.encode()).hexdigest()
    path = out_dir / cf.TEXT_EMBEDDING_FILE
    missing: set[str] = set()
    if source.kind == "file":
        missing = {p for p in prompts if p != default_prompt}
    if path.is_file() and cf.read_header(path).get("fingerprint") == fp:
        header = cf.read_header(path)
    else:
        embeddings: dict[str, Tensor] = {}
        header: dict = {"fingerprint": fp, "prompts": {prompt_key(p): p for p in prompts}}
        if source.kind == "random":
            for p in prompts:
                gen = torch.Generator().manual_seed(sample_seed(seed, prompt_key(p), 0) % 2**63)
                embeddings[prompt_key(p)] = torch.randn(1, source.length, source.dim, generator=gen)
            header.update(source="random", warning=RANDOM_TEXT_WARNING)
        elif source.kind == "file":
            file = Path(source.path)
            try:
                from safetensors.torch import load_file

                tensors = load_file(str(file))
            except Exception as exc:
                raise AnyCrowdError(f"cannot read --text-embedding {str(file)!r}: {exc}. It must be a safetensors file.") from exc
            if len(tensors) != 1:
                raise AnyCrowdError(
                    f"--text-embedding {str(file)!r} holds {len(tensors)} tensors {sorted(tensors)}; "
                    "it must hold exactly one [L, D] or [1, L, D] embedding of the prompt."
                )
            emb = next(iter(tensors.values())).float()
            if emb.ndim == 2:
                emb = emb[None]
            if emb.ndim != 3 or emb.shape[0] != 1:
                raise AnyCrowdError(f"--text-embedding tensor has shape {tuple(emb.shape)}; expected [L, D] or [1, L, D].")
            if default_prompt in prompts:
                embeddings[prompt_key(default_prompt)] = emb
            header.update(source=f"file:{file.resolve()}")
            header["prompts"] = {prompt_key(default_prompt): default_prompt}
        elif source.kind == "encoder":
            from .codecs import encode_prompts_with_comfy

            encoded = encode_prompts_with_comfy(source.path, prompts)
            embeddings = {prompt_key(p): e for p, e in zip(prompts, encoded)}
            header.update(source=f"comfy-text-encoder:{Path(source.path).resolve()}")
        else:
            raise AnyCrowdError(f"unknown text source {source.kind!r}")
        if not embeddings:
            embeddings[prompt_key(default_prompt)] = torch.zeros(1, 1, 1)  # keep the file well-formed
        cf.write_text_embeddings(out_dir, embeddings, header)
        header = cf.read_header(path)
    if header.get("source") == "random":
        log(f"WARNING: {RANDOM_TEXT_WARNING}")
    return header, missing


# ----------------------------------------------------------------------------- one sample


def _to_float(frames: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def _choose_reference(sample: ManifestSample, masks: TrackMasks, lo: int, hi: int, geo: CropResize,
                      rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(frame index, bool [M, H, W] target-size masks) of the reference frame: the given one,
    or a random frame of [lo, hi) where every identity is visible after cropping."""
    if sample.reference_frame is not None:
        t = sample.reference_frame
        if not 0 <= t < masks.num_frames:
            raise SkipSample(f"reference_frame {t} is outside the clip (0..{masks.num_frames - 1})")
        ref = np.stack([geo.mask(m) for m in masks.frame(t)])
        empty = [k for k in range(len(ref)) if not ref[k].any()]
        if empty:
            raise SkipSample(f"identities {empty} are not visible in reference frame {t} after cropping")
        return t, ref
    candidates = rng.permutation(np.arange(lo, hi))[:REFERENCE_TRIES]
    for t in candidates:
        ref = np.stack([geo.mask(m) for m in masks.frame(int(t))])
        if all(ref[k].any() for k in range(len(ref))):
            return int(t), ref
    raise SkipSample(f"no frame (of {len(candidates)} tried) shows every identity after cropping: give a reference_frame")


def build_sample(sample: ManifestSample, variant: int, settings: PrepareSettings, codec: VideoCodec,
                 text_key: str) -> tuple[dict[str, Tensor], dict]:
    """Everything one cache entry holds: (tensors by cf.SAMPLE_KEYS, header meta dict).
    Raises SkipSample (or another AnyCrowdError) for clips that cannot be used."""
    seed = sample_seed(settings.seed, sample.id, variant)
    rng = np.random.default_rng(seed)
    size = (settings.height, settings.width)

    clip = ClipReader(sample.clip)
    masks = TrackMasks(sample.masks)
    if masks.num_frames != clip.num_frames:
        raise SkipSample(f"mask/frame count mismatch: masks have {masks.num_frames} frames, the clip {clip.num_frames}")
    if tuple(masks.size) != tuple(clip.size):
        raise SkipSample(f"mask size {masks.size[1]}x{masks.size[0]} differs from the clip's {clip.size[1]}x{clip.size[0]} (WxH)")
    if masks.num_tracks == 0:
        raise SkipSample("no people: the masks hold no identity")
    lo, count = (0, None) if sample.frames is None else sample.frames
    hi = clip.num_frames if count is None else min(clip.num_frames, lo + count)
    needed = (settings.frames - 1) * settings.stride + 1
    if hi - lo < needed:
        raise SkipSample(f"too short: {max(hi - lo, 0)} usable frames, the window needs {needed} "
                         f"({settings.frames} frames, stride {settings.stride})")
    start = int(rng.integers(lo, hi - needed + 1))
    window = [start + settings.stride * i for i in range(settings.frames)]
    geo = CropResize(tuple(clip.size), size)

    track = np.stack([np.stack([geo.mask(m) for m in masks.frame(t)]) for t in window], axis=1)  # [M, F, H, W]
    if not track.any():
        raise SkipSample(f"no people visible in the sampled window (frames {window[0]}..{window[-1]})")

    if sample.reference_image is not None:
        ref_raw = read_image(sample.reference_image)
        ref_geo = CropResize(ref_raw.shape[:2], size)
        ref_img = ref_geo.image(ref_raw)
        ref_masks_raw = read_reference_masks(sample.reference_masks)
        if ref_masks_raw.shape[1:] != ref_raw.shape[:2]:
            raise SkipSample("reference masks and reference image differ in size")
        if len(ref_masks_raw) != masks.num_tracks:
            raise SkipSample(f"{len(ref_masks_raw)} reference masks but {masks.num_tracks} mask tracks: "
                             "identity i is bound to track i, give one reference mask per track")
        ref_masks = np.stack([ref_geo.mask(m) for m in ref_masks_raw])
        empty = [k for k in range(len(ref_masks)) if not ref_masks[k].any()]
        if empty:
            raise SkipSample(f"reference masks {empty} are empty after cropping")
        ref_info: dict = {"reference_image": str(sample.reference_image)}
        frames_np = clip.read(window)
    else:
        ref_t, ref_masks = _choose_reference(sample, masks, lo, hi, geo, rng)
        frames_np = clip.read(window + [ref_t])
        ref_img = geo.image(frames_np[ref_t])
        ref_info = {"reference_frame": ref_t}
    frames = _to_float([geo.image(frames_np[t]) for t in window])  # [F, H, W, 3]

    if sample.pose_video is not None:
        pose_reader = ClipReader(sample.pose_video, "pose video")
        if pose_reader.num_frames != clip.num_frames:
            raise SkipSample(f"pose video has {pose_reader.num_frames} frames, the clip {clip.num_frames}")
        pose_geo = CropResize(tuple(pose_reader.size), size)
        pose_np = pose_reader.read(window)
        pose = _to_float([pose_geo.image(pose_np[t]) for t in window])
        pose_source = "pose_video"
    elif sample.keypoints is not None:
        kps = np.asarray(_load_array(sample.keypoints, "keypoints", "keypoints"), dtype=np.float64)
        if kps.ndim != 4 or kps.shape[1] != clip.num_frames or kps.shape[-1] != 3 or kps.shape[2] < 18:
            raise SkipSample(f"keypoints have shape {tuple(kps.shape)}; expected [M, {clip.num_frames}, K>=18, 3]")
        kps = kps[:, window].copy()
        kps[..., :2] = geo.points(kps[..., :2])
        h, w = size
        inside = (kps[..., 0] >= 0) & (kps[..., 0] <= w - 1) & (kps[..., 1] >= 0) & (kps[..., 1] <= h - 1)
        kps[..., 2] = np.where(inside & (kps[..., 2] > 0), kps[..., 2], 0.0)
        pose = torch.from_numpy(render_keypoints(kps, h, w))
        pose_source = "keypoints"
    elif settings.pose_models:
        pose = torch.from_numpy(extract_pose_video(np.stack([geo.image(frames_np[t]) for t in window]),
                                                   Path(settings.pose_models)))
        pose_source = "dwpose"
    else:
        raise SkipSample("no pose source: give pose_video or keypoints, or run with --pose-models DIR")

    if sample.tracks is not None:
        boxes = torch.from_numpy(geo.boxes(read_tracks(sample.tracks, masks.num_tracks, clip.num_frames)[:, window]))
        box_source = "tracks"
    else:
        boxes = boxes_from_masks(torch.from_numpy(track))
        box_source = "masks"

    decoupled = decouple_instances(torch.from_numpy(ref_img.astype(np.float32) / 255.0), torch.from_numpy(ref_masks),
                                   reassign=settings.reassign, seed=seed % 2**32)
    cond = encode_iilr(codec, decoupled, pose, background=settings.background)
    latents = process_in(codec.encode(frames))
    binding = torch.arange(masks.num_tracks, dtype=torch.int64)
    layout = build_token_layout(decoupled.masks, boxes, binding.tolist(), background=settings.background,
                                track_masks=torch.from_numpy(track))

    dtype = DTYPES[settings.dtype]
    tensors = {
        "latents": latents.to(dtype),
        "vace_frames": cond.vace_context[:32].to(dtype),
        "reference_masks": decoupled.masks.to(torch.uint8),
        "track_boxes": boxes.float(),
        "binding": binding,
        "candidates": layout.candidates,
        "soft_labels": layout.soft_labels,
    }
    meta = {
        "clip": str(sample.clip), "line": sample.line, "variant": variant, "window": [window[0], settings.stride,
        settings.frames], **ref_info, "pose_source": pose_source, "box_source": box_source,
        "num_identities": int(masks.num_tracks), "size": [settings.height, settings.width],
        "seed": seed, "reassign": settings.reassign, "codec_id": settings.codec_id,
        "vace_strength": cond.vace_strength,
    }
    header = {"trim": cond.trim, "background": int(settings.background), "prompt_key": text_key,
              "sample_id": sample.id, "meta": meta}
    return tensors, header


# ----------------------------------------------------------------------------- the run


@dataclass
class PrepareReport:
    """Outcome of a prepare run: entry file names built / reused, skipped samples
    ({"line", "id", "clip", "reason"}), and the cache folder."""

    out_dir: Path
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def entries(self) -> list[str]:
        return sorted(self.built + self.reused)

    def summary(self) -> str:
        lines = [f"training.prepare: {len(self.built)} built, {len(self.reused)} reused, "
                 f"{len(self.skipped)} skipped -> {self.out_dir}"]
        if self.skipped:
            width = max(len(str(s["id"])) for s in self.skipped)
            lines.append(f"  {'line':>5}  {'id':<{width}}  reason")
            for s in self.skipped:
                lines.append(f"  {s['line']:>5}  {str(s['id']):<{width}}  {s['reason']}")
            lines.append(f"  (also written to {self.out_dir / cf.SKIPPED_FILE})")
        return "\n".join(lines)


def _progress(items, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc="prepare", unit="sample")
    except ImportError:
        return items


def prepare(manifest: Path, out_dir: Path, settings: PrepareSettings,
            codec: VideoCodec | Callable[[], VideoCodec], text: TextSource, *,
            progress: bool = True, fail_fast: bool = False, log=print) -> PrepareReport:
    """Build the cache for every manifest line (times `settings.variants`).

    codec: a VideoCodec, or a zero-argument factory called only if something must be
    encoded (so a fully cached re-run never loads the VAE). Problems with one sample are
    recorded in the report, `skipped.jsonl` and the printed summary; `fail_fast` re-raises
    errors that are not user-fixable (for debugging).
    """
    settings.validate()
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise AnyCrowdError(f"manifest {str(manifest)!r} does not exist: pass --manifest PATH.jsonl.")
    ensure_output_dir(out_dir, "--out")
    report = PrepareReport(out_dir=out_dir)
    root = manifest.parent

    samples: list[ManifestSample] = []
    for i, text_line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not text_line.strip() or text_line.lstrip().startswith("#"):
            continue
        try:
            samples.append(parse_manifest_line(text_line, i, root))
        except AnyCrowdError as exc:
            report.skipped.append({"line": i, "id": "?", "clip": None, "reason": str(exc)})
    ids = [s.id for s in samples]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise AnyCrowdError(f"manifest ids {sorted(dup)} appear more than once: every sample needs its own id.")

    prompts = sorted({s.prompt or settings.prompt for s in samples} or {settings.prompt})
    text_header, unembeddable = prepare_text_embeddings(out_dir, text, prompts, settings.seed, settings.prompt, log)

    state = {"codec": codec if not callable(codec) or hasattr(codec, "encode") else None}

    def get_codec():
        if state["codec"] is None:
            state["codec"] = codec()
        return state["codec"]

    work = [(s, v) for s in samples for v in range(settings.variants)]
    for s, v in _progress(work, progress):
        name = (s.id if settings.variants == 1 else f"{s.id}_v{v}") + cf.SAMPLE_SUFFIX
        path = out_dir / name
        prompt = s.prompt or settings.prompt

        def skip(reason: str):
            report.skipped.append({"line": s.line, "id": s.id if settings.variants == 1 else f"{s.id}_v{v}",
                                   "clip": str(s.clip), "reason": reason})

        if prompt in unembeddable:
            skip("custom prompt but --text-embedding holds only the default prompt's embedding: "
                 "use --text-encoder, or drop the prompt")
            continue
        try:
            fp = cf.fingerprint(s.input_files(), {**settings.fingerprint_dict(), "variant": v,
                                                  "sample": s.raw, "prompt": prompt})
        except FileNotFoundError as exc:
            skip(f"missing file: {exc.filename}")
            continue
        if cf.is_valid(path, fp):
            report.reused.append(name)
            continue
        try:
            tensors, header = build_sample(s, v, settings, get_codec(), prompt_key(prompt))
            cf.write_sample(path, tensors, {**header, "fingerprint": fp})
            report.built.append(name)
        except AnyCrowdError as exc:
            skip(str(exc))
        except Exception as exc:  # an unreadable file can fail deep inside cv2/av/numpy
            if fail_fast:
                raise
            skip(f"{type(exc).__name__}: {exc}")
            if not progress:
                log(traceback.format_exc())

    _write_reports(out_dir, report, settings, text_header)
    log(report.summary())
    return report


def _write_reports(out_dir: Path, report: PrepareReport, settings: PrepareSettings, text_header: dict) -> None:
    write_text_atomic(out_dir / cf.SKIPPED_FILE, "".join(json.dumps(s) + "\n" for s in report.skipped))
    index = {
        "format_version": cf.FORMAT_VERSION,
        "entries": report.entries,
        "settings": {**settings.fingerprint_dict(), "variants": settings.variants, "prompt": settings.prompt},
        "text_embedding": cf.TEXT_EMBEDDING_FILE,
        "text_source": text_header.get("source"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if text_header.get("warning"):
        index["warning"] = text_header["warning"]
    write_text_atomic(out_dir / cf.INDEX_FILE, json.dumps(index, indent=2) + "\n")


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="JSONL manifest (docs/training_data.md)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--codec", choices=("test", "comfy"), default="comfy",
                   help="comfy: ComfyUI's Wan 2.1 VAE (needs --vae, COMFYUI_PATH); test: the core's test codec")
    p.add_argument("--vae", help="Wan 2.1 VAE file (wan_2.1_vae.safetensors) for --codec comfy")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=49, help="window length, 4n+1 (paper: 49)")
    p.add_argument("--stride", type=int, default=1, help="take every stride-th frame of the clip")
    p.add_argument("--variants", type=int, default=1, help="cache entries per clip (different windows/references/reassignments)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reassign", action="store_true", help="keep characters in place (no stochastic reassignment)")
    p.add_argument("--no-background", action="store_true", help="no IILR background reference frame")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="storage dtype of latents (bfloat16 halves the cache)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the fixed prompt (samples may override with 'prompt')")
    p.add_argument("--pose-models", help="folder with yolox_l.onnx + dw-ll_ucoco_384.onnx for samples without pose")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-embedding", help="precomputed prompt embedding (safetensors, one [L, D] tensor)")
    text.add_argument("--text-encoder", help="umT5 text encoder file, encoded with ComfyUI (COMFYUI_PATH)")
    text.add_argument("--random-text-dim", type=int, help="tiny/test runs: seeded random embedding of this width")
    p.add_argument("--random-text-len", type=int, default=32, help="tokens of the random embedding")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fail-fast", action="store_true", help="re-raise unexpected errors (debugging)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .codecs import make_codec, codec_id_for_file

        if args.codec == "comfy":
            if not args.vae:
                raise AnyCrowdError("--codec comfy needs --vae PATH to the Wan 2.1 VAE (or use --codec test).")
            codec_id = codec_id_for_file("comfy", args.vae)
        else:
            codec_id = "test:seed=0"
        settings = PrepareSettings(
            width=args.width, height=args.height, frames=args.frames, stride=args.stride, seed=args.seed,
            reassign=not args.no_reassign, background=not args.no_background, variants=args.variants,
            dtype=args.dtype, codec_id=codec_id, prompt=args.prompt, pose_models=args.pose_models,
        )
        if args.text_embedding:
            text = TextSource("file", path=args.text_embedding)
        elif args.text_encoder:
            text = TextSource("encoder", path=args.text_encoder)
        else:
            if args.random_text_dim <= 0 or args.random_text_len <= 0:
                raise AnyCrowdError("--random-text-dim and --random-text-len must be positive.")
            text = TextSource("random", dim=args.random_text_dim, length=args.random_text_len)
        report = prepare(Path(args.manifest), Path(args.out), settings,
                         lambda: make_codec(args.codec, args.vae)[0], text,
                         progress=not args.no_progress, fail_fast=args.fail_fast)
    except AnyCrowdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not report.entries:
        print("error: no usable samples: fix the skipped ones (see the table above).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
