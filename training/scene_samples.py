"""`data.source: scenes` — training samples rendered in memory from `anycrowd_core.scenes`
and encoded with the miniature's codec (no files, no cache): the data of AnyCrowd-Mini.

Each sample is a procedural multi-character clip encoded by the same `encode_clip` that
`training.prepare` uses for a real one (Instance Decoupler, IILR, pose control, token
layout with AGF soft labels from the track masks). `cross_driven` is the chance that a
sample's identities are moved to random non-overlapping positions (the paper's stochastic
reassignment); 0 keeps the reference arrangement (self-driven, how a stock base model is
trained).
Item i is always the same sample; scene seeds stay below the evaluation seed range.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch.utils.data import Dataset

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.mini.codec import MiniCodec
from anycrowd_core.mini.seeds import TRAIN_SEED_BASE, TRAIN_SEED_LIMIT
from anycrowd_core.mini.text import mini_text_embedding
from anycrowd_core.scenes import make_scene

from .clip_encoding import ClipTensors, encode_clip
from .dataset import TrainingSample


@dataclass(frozen=True)
class SceneSpec:
    """make_scene arguments of one sample plus whether its reference is reassigned."""

    characters: int
    frames: int
    width: int
    height: int
    scenario: str
    seed: int
    cross_driven: bool


def scene_specs(count: int, *, seed: int, frames, widths, height: int, min_characters: int, max_characters: int,
                scenarios, cross_driven: float) -> list[SceneSpec]:
    """The `count` sample specs of a run (a pure function of its arguments)."""
    rng = np.random.default_rng(1_000_003 * seed + 17)
    base = TRAIN_SEED_BASE + 100_000 * seed
    if base + count > TRAIN_SEED_LIMIT:
        raise AnyCrowdError(
            f"train.seed {seed} with {count} samples would reach evaluation scene seeds; use a train.seed below "
            f"{(TRAIN_SEED_LIMIT - count) // 100_000} or fewer samples."
        )
    specs = []
    for i in range(count):
        specs.append(SceneSpec(
            characters=int(rng.integers(min_characters, max_characters + 1)),
            frames=int(rng.choice(frames)), width=int(rng.choice(widths)), height=height,
            scenario=str(rng.choice(scenarios)), seed=base + i, cross_driven=bool(rng.random() < cross_driven),
        ))
    return specs


def encode_scene_sample(spec: SceneSpec, text_dim: int, codec=None) -> TrainingSample:
    """Render and encode one sample (identity k is bound to track k)."""
    codec = codec or MiniCodec()
    scene = make_scene(num_characters=spec.characters, num_frames=spec.frames, height=spec.height, width=spec.width,
                       seed=spec.seed, scenario=spec.scenario)
    clip = ClipTensors(reference_image=scene.reference_image, reference_masks=scene.reference_masks,
                       video=scene.video, pose_video=scene.pose_video, track_boxes=scene.track_boxes,
                       track_masks=scene.track_masks)
    enc = encode_clip(codec, clip, reassign=spec.cross_driven, seed=spec.seed, background=True)
    meta = {"scene": spec.__dict__, "codec_id": codec.name}
    return TrainingSample(latents=enc.latents, vace_context=enc.conditioning.vace_context, layout=enc.layout,
                          text_embedding=mini_text_embedding(text_dim), trim=enc.conditioning.trim,
                          vace_strength=enc.conditioning.vace_strength, meta=meta)


class SceneSamples(Dataset):
    """`SceneSamples(specs, text_dim)[i] -> TrainingSample`, rendered on first use and kept."""

    def __init__(self, specs: list[SceneSpec], text_dim: int):
        self.specs, self.text_dim = list(specs), int(text_dim)
        self.codec = MiniCodec()
        self._get = lru_cache(maxsize=None)(self._build)

    def __len__(self) -> int:
        return len(self.specs)

    def _build(self, i: int) -> TrainingSample:
        return encode_scene_sample(self.specs[i], self.text_dim, self.codec)

    def __getitem__(self, i: int) -> TrainingSample:
        return self._get(int(i))


__all__ = ["SceneSamples", "SceneSpec", "encode_scene_sample", "scene_specs"]
