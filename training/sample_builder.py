"""One cache entry from one manifest line: pick the window and the reference, read and fit
the clip's files to the training size, make the pose control, encode (`encode_clip`) and
collect the tensors and provenance that `training.prepare` writes (`cache_format`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.codec import VideoCodec

from .clip_encoding import ClipTensors, encode_clip
from .crop_resize import CropResize
from .manifest import ManifestSample
from .prepare_readers import (
    ClipReader,
    SkipSample,
    TrackMasks,
    read_image,
    read_keypoints,
    read_reference_masks,
    read_tracks,
)
from .prepare_settings import DTYPES, PrepareSettings, sample_seed

REFERENCE_TRIES = 32  # random reference frames tried before a sample is skipped


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


def _to_float(frames: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


@dataclass(frozen=True)
class ClipWindow:
    """The clip frames one sample uses: `indices` (F clip frame numbers, every stride-th)
    inside the usable range `[lo, hi)` that the manifest's `frames` allows."""

    lo: int
    hi: int
    indices: list[int]


def _open_clip(sample: ManifestSample) -> tuple[ClipReader, TrackMasks]:
    """The clip and its tracking masks, checked to agree in frame count and size."""
    clip = ClipReader(sample.clip)
    masks = TrackMasks(sample.masks)
    if masks.num_frames != clip.num_frames:
        raise SkipSample(f"mask/frame count mismatch: masks have {masks.num_frames} frames, the clip {clip.num_frames}")
    if tuple(masks.size) != tuple(clip.size):
        raise SkipSample(f"mask size {masks.size[1]}x{masks.size[0]} differs from the clip's {clip.size[1]}x{clip.size[0]} (WxH)")
    if masks.num_tracks == 0:
        raise SkipSample("no people: the masks hold no identity")
    return clip, masks


def _choose_window(sample: ManifestSample, settings: PrepareSettings, num_frames: int,
                   rng: np.random.Generator) -> ClipWindow:
    """A random window of `settings.frames` frames (stride `settings.stride`) in the usable range."""
    lo, count = (0, None) if sample.frames is None else sample.frames
    hi = num_frames if count is None else min(num_frames, lo + count)
    needed = (settings.frames - 1) * settings.stride + 1
    if hi - lo < needed:
        raise SkipSample(f"too short: {max(hi - lo, 0)} usable frames, the window needs {needed} "
                         f"({settings.frames} frames, stride {settings.stride})")
    start = int(rng.integers(lo, hi - needed + 1))
    return ClipWindow(lo, hi, [start + settings.stride * i for i in range(settings.frames)])


def _choose_reference(sample: ManifestSample, masks: TrackMasks, window: ClipWindow, geo: CropResize,
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
    candidates = rng.permutation(np.arange(window.lo, window.hi))[:REFERENCE_TRIES]
    for t in candidates:
        ref = np.stack([geo.mask(m) for m in masks.frame(int(t))])
        if all(ref[k].any() for k in range(len(ref))):
            return int(t), ref
    raise SkipSample(f"no frame (of {len(candidates)} tried) shows every identity after cropping: give a reference_frame")


def _read_reference_image(sample: ManifestSample, num_tracks: int,
                          size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 `[H, W, 3]` image, bool `[M, H, W]` masks) of a separate reference image, fitted
    to the training size; one mask per track, none empty after cropping."""
    ref_raw = read_image(sample.reference_image)
    ref_geo = CropResize(ref_raw.shape[:2], size)
    ref_img = ref_geo.image(ref_raw)
    ref_masks_raw = read_reference_masks(sample.reference_masks)
    if ref_masks_raw.shape[1:] != ref_raw.shape[:2]:
        raise SkipSample("reference masks and reference image differ in size")
    if len(ref_masks_raw) != num_tracks:
        raise SkipSample(f"{len(ref_masks_raw)} reference masks but {num_tracks} mask tracks: "
                         "identity i is bound to track i, give one reference mask per track")
    ref_masks = np.stack([ref_geo.mask(m) for m in ref_masks_raw])
    empty = [k for k in range(len(ref_masks)) if not ref_masks[k].any()]
    if empty:
        raise SkipSample(f"reference masks {empty} are empty after cropping")
    return ref_img, ref_masks


def _pose_control(sample: ManifestSample, settings: PrepareSettings, num_frames: int, window: ClipWindow,
                  geo: CropResize, frames: list[np.ndarray]) -> tuple[Tensor, str]:
    """(float `[F, H, W, 3]` pose video, its source) from the first of: the sample's pose
    video, its keypoints, DWPose (--pose-models) on `frames`, the window's uint8 `[H, W, 3]`
    frames fitted to the training size."""
    size = (settings.height, settings.width)
    if sample.pose_video is not None:
        pose_reader = ClipReader(sample.pose_video, "pose video")
        if pose_reader.num_frames != num_frames:
            raise SkipSample(f"pose video has {pose_reader.num_frames} frames, the clip {num_frames}")
        pose_geo = CropResize(tuple(pose_reader.size), size)
        pose_np = pose_reader.read(window.indices)
        return _to_float([pose_geo.image(pose_np[t]) for t in window.indices]), "pose_video"
    if sample.keypoints is not None:
        kps = read_keypoints(sample.keypoints, num_frames)[:, window.indices].copy()
        kps[..., :2] = geo.points(kps[..., :2])
        h, w = size
        inside = (kps[..., 0] >= 0) & (kps[..., 0] <= w - 1) & (kps[..., 1] >= 0) & (kps[..., 1] <= h - 1)
        kps[..., 2] = np.where(inside & (kps[..., 2] > 0), kps[..., 2], 0.0)
        return torch.from_numpy(render_keypoints(kps, h, w)), "keypoints"
    if settings.pose_models:
        return torch.from_numpy(extract_pose_video(np.stack(frames), Path(settings.pose_models))), "dwpose"
    raise SkipSample("no pose source: give pose_video or keypoints, or run with --pose-models DIR")


def build_sample(sample: ManifestSample, variant: int, settings: PrepareSettings, codec: VideoCodec,
                 text_key: str) -> tuple[dict[str, Tensor], dict]:
    """Everything one cache entry holds: (tensors by cf.SAMPLE_KEYS, header meta dict).
    Raises SkipSample (or another AnyCrowdError) for clips that cannot be used."""
    seed = sample_seed(settings.seed, sample.id, variant)
    rng = np.random.default_rng(seed)
    size = (settings.height, settings.width)

    clip, masks = _open_clip(sample)
    window = _choose_window(sample, settings, clip.num_frames, rng)
    idx = window.indices
    geo = CropResize(tuple(clip.size), size)
    track = np.stack([np.stack([geo.mask(m) for m in masks.frame(t)]) for t in idx], axis=1)  # [M, F, H, W]
    if not track.any():
        raise SkipSample(f"no people visible in the sampled window (frames {idx[0]}..{idx[-1]})")

    if sample.reference_image is not None:
        ref_img, ref_masks = _read_reference_image(sample, masks.num_tracks, size)
        ref_info: dict = {"reference_image": str(sample.reference_image)}
        frames_np = clip.read(idx)
    else:
        ref_t, ref_masks = _choose_reference(sample, masks, window, geo, rng)
        frames_np = clip.read(idx + [ref_t])
        ref_img = geo.image(frames_np[ref_t])
        ref_info = {"reference_frame": ref_t}
    fitted = [geo.image(frames_np[t]) for t in idx]
    pose, pose_source = _pose_control(sample, settings, clip.num_frames, window, geo, fitted)

    if sample.tracks is not None:
        boxes = torch.from_numpy(geo.boxes(read_tracks(sample.tracks, masks.num_tracks, clip.num_frames)[:, idx]))
        box_source = "tracks"
    else:
        boxes = boxes_from_masks(torch.from_numpy(track))
        box_source = "masks"

    tensors_in = ClipTensors(reference_image=torch.from_numpy(ref_img.astype(np.float32) / 255.0),
                             reference_masks=torch.from_numpy(ref_masks), video=_to_float(fitted), pose_video=pose,
                             track_boxes=boxes, track_masks=torch.from_numpy(track))
    enc = encode_clip(codec, tensors_in, reassign=settings.reassign, seed=seed % 2**32, background=settings.background)

    dtype = DTYPES[settings.dtype]
    tensors = {
        "latents": enc.latents.to(dtype),
        "vace_frames": enc.conditioning.vace_context[:32].to(dtype),
        "reference_masks": enc.reference_masks.to(torch.uint8),
        "track_boxes": boxes.float(),
        "binding": enc.binding,
        "candidates": enc.layout.candidates,
        "soft_labels": enc.layout.soft_labels,
    }
    meta = {
        "clip": str(sample.clip), "line": sample.line, "variant": variant, "window": [idx[0], settings.stride,
        settings.frames], **ref_info, "pose_source": pose_source, "box_source": box_source,
        "num_identities": int(masks.num_tracks), "size": [settings.height, settings.width],
        "seed": seed, "reassign": settings.reassign, "codec_id": settings.codec_id,
        "vace_strength": enc.conditioning.vace_strength,
    }
    header = {"trim": enc.conditioning.trim, "background": int(settings.background), "prompt_key": text_key,
              "sample_id": sample.id, "meta": meta}
    return tensors, header
