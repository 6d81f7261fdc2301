"""Torch Dataset over a cache folder written by `python -m training.prepare`.

Deterministic: item i is always the same tensors. All randomness of training (timesteps,
noise, dropout, data order) belongs to the trainer. The token layout is rebuilt from the
stored inputs and carries the stored AGF soft labels.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout, build_token_layout

from . import cache_format as cf


@dataclass
class TrainingSample:
    """One cached training sample (model-space latents; h, w = H/8, W/8).

    latents: `[16, T_lat, h, w]` ground-truth clip latents (the flow-matching x0).
    vace_context: `[96, R + T_lat, h, w]` IILR references + pose control + mask channels,
        one entry of the model's `vace_context` (add the batch dim).
    layout: TokenLayout of the `[R_1..R_N, R_bg | V_1..V_T_lat]` sequence, `soft_labels`
        set (AGF targets).
    text_embedding: `[1, L, D]` prompt embedding (shared between samples, do not modify).
    trim: R, the reference latent frames in front of the video frames (the noise latent is
        `[16, R + T_lat, h, w]`; `reference_latents` are its clean prefix).
    vace_strength: VACE hint scale used when encoding (1.0).
    meta: provenance (clip, window, reference frame, seeds, codec) from the cache header.
    """

    latents: Tensor
    vace_context: Tensor
    layout: TokenLayout
    text_embedding: Tensor
    trim: int
    vace_strength: float
    meta: dict

    @property
    def reference_latents(self) -> Tensor:
        """`[16, R, h, w]` IILR reference latents (model space): R_1..R_N then R_bg."""
        return self.vace_context[:16, : self.trim]


class CachedSamples(Dataset):
    """`CachedSamples(cache_dir)[i] -> TrainingSample`, in the order of `cache_index.json`.

    dtype: cast latents and VACE context to this dtype (None keeps the stored dtype).
    check_layout: verify that the layout rebuilt without track masks has the stored
    candidate table (it always should; a mismatch means the cache was made by an
    incompatible layout version and must be rebuilt).
    """

    def __init__(self, cache_dir, *, dtype: torch.dtype | None = None, check_layout: bool = True):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / cf.INDEX_FILE
        if not index_path.is_file():
            raise AnyCrowdError(
                f"{str(index_path)!r} is missing: build the cache first with "
                f"`python -m training.prepare --manifest M.jsonl --out {self.cache_dir} ...`."
            )
        self.index = json.loads(index_path.read_text())
        if self.index.get("format_version") != cf.FORMAT_VERSION:
            raise AnyCrowdError(
                f"the cache in {str(self.cache_dir)!r} has format version {self.index.get('format_version')}, "
                f"this code reads {cf.FORMAT_VERSION}: re-run `python -m training.prepare` to rebuild it."
            )
        self.files = [self.cache_dir / name for name in self.index["entries"]]
        if not self.files:
            raise AnyCrowdError(
                f"the cache in {str(self.cache_dir)!r} has no samples: every clip was skipped, see "
                f"{cf.SKIPPED_FILE} there."
            )
        self.text_embeddings, self.text_header = cf.read_text_embeddings(self.cache_dir)
        if self.text_header.get("source") == "random":
            warnings.warn(f"{self.cache_dir}: {self.text_header.get('warning')}", stacklevel=2)
        self.dtype = dtype
        self.check_layout = check_layout

    def __len__(self) -> int:
        return len(self.files)

    @property
    def text_dim(self) -> int:
        return int(next(iter(self.text_embeddings.values())).shape[-1])

    def __getitem__(self, i: int) -> TrainingSample:
        path = self.files[i]
        entry = cf.read_sample(path)
        t, h = entry.tensors, entry.header
        trim = int(h["trim"])
        layout = build_token_layout(
            t["reference_masks"].bool(), t["track_boxes"], t["binding"].tolist(), background=bool(int(h["background"]))
        )
        if self.check_layout and not torch.equal(layout.candidates, t["candidates"]):
            raise AnyCrowdError(
                f"{path.name}: the token layout rebuilt from the cache does not match the stored candidates "
                "(cache made by another layout version): re-run `python -m training.prepare`."
            )
        layout = replace(layout, soft_labels=t["soft_labels"].float())
        key = h.get("prompt_key")
        if key not in self.text_embeddings:
            raise AnyCrowdError(
                f"{path.name} needs prompt embedding {key!r}, absent from {cf.TEXT_EMBEDDING_FILE}: re-run training.prepare."
            )
        latents, vace = t["latents"], cf.vace_context_from_frames(t["vace_frames"], trim)
        if self.dtype is not None:
            latents, vace = latents.to(self.dtype), vace.to(self.dtype)
        meta = dict(h["meta"])
        meta["sample_id"] = h.get("sample_id")
        meta["file"] = path.name
        return TrainingSample(
            latents=latents, vace_context=vace, layout=layout, text_embedding=self.text_embeddings[key],
            trim=trim, vace_strength=float(meta.get("vace_strength", 1.0)), meta=meta,
        )
