"""On-disk format of the training cache written by `python -m training.prepare`.

One safetensors file per sample (tensors + string header), one `text_embedding.safetensors`
for the shared prompt embedding(s) and one `cache_index.json` listing the valid entries.
All writes are atomic (temporary file in the same folder, then `os.replace`). No pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.files import atomic_output

# Bump whenever stored keys, shapes or meanings change: older entries are then rebuilt.
FORMAT_VERSION = 1
TEXT_EMBEDDING_FILE = "text_embedding.safetensors"
INDEX_FILE = "cache_index.json"
SKIPPED_FILE = "skipped.jsonl"
SAMPLE_SUFFIX = ".safetensors"

# Tensor keys of a sample file, with dtype and shape (docs/training_data.md has the meanings).
SAMPLE_KEYS = {
    "latents": "float [16, T_lat, h, w] ground-truth clip latents, model space (Wan21 process_in)",
    "vace_frames": "float [32, R + T_lat, h, w] VACE inactive|reactive latents, model space; "
    "the first R frames are [IILR reference latent, zeros]",
    "reference_masks": "uint8 [N, H, W] identity masks in the decoupled identity images (after reassignment)",
    "track_boxes": "float32 [M, T, 4] xyxy px per track and pixel frame, NaN where absent",
    "binding": "int64 [M] identity index of each track (identity i <- track i)",
    "candidates": "int64 [V, C_max] TokenLayout.candidates built WITH the track masks",
    "soft_labels": "float32 [V, C_max] AGF soft labels aligned with candidates",
}
# String header keys of a sample file.
HEADER_KEYS = ("format_version", "fingerprint", "sample_id", "trim", "background", "prompt_key", "meta")


def _save_file(tensors: Mapping[str, Tensor], path: str, metadata: Mapping[str, str]) -> None:
    """Indirection so tests can simulate a failure in the middle of a write."""
    save_file(dict(tensors), path, metadata=dict(metadata))


def atomic_save_safetensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> Path:
    """Write a safetensors file so that `path` is either absent/old or complete, never partial."""
    with atomic_output(path) as tmp:
        _save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), {k: str(v) for k, v in metadata.items()})
    return Path(path)



def file_signature(path: Path) -> list:
    """[path, size, mtime_ns] of a file, or of every file under a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                for p in sorted(path.rglob("*")) if p.is_file()] + [str(path.resolve())]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def fingerprint(files: Iterable[Path], settings: Mapping) -> str:
    """sha256 over the format version, the input files' paths/sizes/mtimes and the settings.

    Raises FileNotFoundError for a missing input (the caller reports the sample as skipped).
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "files": [file_signature(Path(f)) for f in files],
        "settings": settings,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class CacheEntry:
    """One sample file read back: `tensors` by SAMPLE_KEYS, `header` string metadata
    (HEADER_KEYS; `meta` decoded from JSON into a dict)."""

    tensors: dict[str, Tensor]
    header: dict


def write_sample(path: Path, tensors: Mapping[str, Tensor], header: Mapping) -> Path:
    """Write one sample atomically. `header` needs every HEADER_KEYS entry except
    `format_version` (added here); `meta` may be a dict (stored as JSON)."""
    missing = set(SAMPLE_KEYS) - set(tensors)
    if missing:
        raise AnyCrowdError(f"cache sample is missing tensors {sorted(missing)} (internal error in prepare).")
    meta = dict(header)
    meta["format_version"] = FORMAT_VERSION
    if not isinstance(meta.get("meta", ""), str):
        meta["meta"] = json.dumps(meta["meta"], sort_keys=True)
    return atomic_save_safetensors(path, tensors, {k: str(v) for k, v in meta.items()})


def read_header(path: Path) -> dict:
    """The string header of a sample file without loading its tensors ({} if unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def is_valid(path: Path, expected_fingerprint: str) -> bool:
    """True if `path` is a complete sample file of this FORMAT_VERSION with that fingerprint."""
    header = read_header(path)
    return (
        header.get("format_version") == str(FORMAT_VERSION)
        and header.get("fingerprint") == expected_fingerprint
    )


def read_sample(path: Path) -> CacheEntry:
    """Load one sample file; raises AnyCrowdError for a missing, foreign or outdated file."""
    path = Path(path)
    if not path.is_file():
        raise AnyCrowdError(f"cache file {str(path)!r} does not exist: re-run `python -m training.prepare`.")
    header = read_header(path)
    version = header.get("format_version")
    if version != str(FORMAT_VERSION):
        raise AnyCrowdError(
            f"cache file {str(path)!r} has format version {version!r}, this code reads version "
            f"{FORMAT_VERSION}: re-run `python -m training.prepare` on the same manifest to rebuild it."
        )
    tensors = load_file(str(path))
    missing = set(SAMPLE_KEYS) - set(tensors)
    if missing:
        raise AnyCrowdError(f"cache file {str(path)!r} lacks {sorted(missing)}: re-run training.prepare.")
    header = dict(header)
    header["meta"] = json.loads(header.get("meta") or "{}")
    return CacheEntry(tensors=tensors, header=header)


def vace_context_from_frames(vace_frames: Tensor, trim: int) -> Tensor:
    """Rebuild the 96-channel VACE context `[96, R + T_lat, h, w]` from the stored 32
    latent channels: prepare always uses an all-ones control mask, so the 64 mask channels
    are zeros for the R reference frames and ones for the video frames (anycrowd_core.iilr).
    Storing them would triple the cache size for no information."""
    c, length, h, w = vace_frames.shape
    if c != 32 or not 0 <= trim <= length:
        raise AnyCrowdError(f"vace_frames must be [32, L, h, w] with trim <= L, got {tuple(vace_frames.shape)}, trim {trim}.")
    mask = torch.ones((64, length, h, w), dtype=vace_frames.dtype)
    mask[:, :trim] = 0
    return torch.cat([vace_frames, mask], 0)


def write_text_embeddings(cache_dir: Path, embeddings: Mapping[str, Tensor], header: Mapping) -> Path:
    """Write the prompt embeddings `{prompt_key: [1, L, D]}` to TEXT_EMBEDDING_FILE."""
    meta = {k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in header.items()}
    meta["format_version"] = str(FORMAT_VERSION)
    return atomic_save_safetensors(Path(cache_dir) / TEXT_EMBEDDING_FILE, embeddings, meta)


def read_text_embeddings(cache_dir: Path) -> tuple[dict[str, Tensor], dict]:
    """(embeddings by prompt key `[1, L, D]`, header) from TEXT_EMBEDDING_FILE."""
    path = Path(cache_dir) / TEXT_EMBEDDING_FILE
    if not path.is_file():
        raise AnyCrowdError(
            f"{str(path)!r} is missing: run `python -m training.prepare` with --text-embedding, "
            "--text-encoder or --random-text-dim to create it."
        )
    return load_file(str(path)), read_header(path)
