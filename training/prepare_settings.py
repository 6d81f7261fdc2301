"""What every cached training sample is made of (`PrepareSettings`, the `training.prepare`
flags) and the per-sample seed that makes each cache entry reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from anycrowd_core.codec import check_frame_count, check_frame_size
from anycrowd_core.errors import AnyCrowdError

# The paper trains with one fixed prompt for every clip (appendix D) but does not print it.
DEFAULT_PROMPT = "A group of people dancing together, full body, high quality video."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def sample_seed(seed: int, sample_id: str, variant: int) -> int:
    """Per-sample seed (63 bits) from the run seed, the sample id and the variant."""
    return int(hashlib.sha256(f"{seed}|{sample_id}|{variant}".encode()).hexdigest()[:15], 16)
