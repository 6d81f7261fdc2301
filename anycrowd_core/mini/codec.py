"""The miniature's codec: the test codec with a latent normalisation fitted to its data.

Wan's latent normalisation (`latent_format.py`) is fitted to the real Wan 2.1 VAE. Applied
to the test codec it leaves latents with a variance of about 0.03, so a model trained on
them paints faint, blocky frames. `MiniCodec` returns raw latents that Wan's own
`process_in` maps to zero mean and unit variance per channel on procedural scenes, so every
caller (the headless pipeline, the trainer, ComfyUI's Wan21 latent format) stays unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..codec import LATENT_CHANNELS, TestCodec
from ..latent_format import process_in, process_out

# Per-channel mean / std of TestCodec(seed=0) latents of procedural scenes, from
# `fit_latent_normalisation()` (tests/test_mini.py re-fits and compares).
MINI_LATENT_MEAN = (
    -0.1361, -0.0590, -0.1101, 0.1576, 0.0017, -0.0162, -0.0624, -0.0293,
    -0.0142, 0.0033, -0.0456, -0.0434, -0.0156, 0.0561, 0.0057, -0.0213,
)
MINI_LATENT_STD = (
    0.7125, 0.3024, 0.5275, 0.7372, 0.1961, 0.0886, 0.3851, 0.1288,
    0.1491, 0.2912, 0.2763, 0.1973, 0.3128, 0.3275, 0.2727, 0.2250,
)


def fit_latent_normalisation(num_scenes: int = 24, seed: int = 7_000_000) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, std) `[16]` of TestCodec(0) latents over procedural scenes of
    1-4 characters in every scenario (seeds outside the training and evaluation ranges)."""
    from ..scenes import SCENARIOS, make_scene

    codec = TestCodec(seed=0)
    latents = []
    for i in range(num_scenes):
        scene = make_scene(num_characters=1 + i % 4, num_frames=9, seed=seed + i, scenario=SCENARIOS[i % len(SCENARIOS)])
        latents.append(codec.encode(scene.video).flatten(1))
    z = torch.cat(latents, dim=1).double()
    return z.mean(1).float(), z.std(1).float()


class MiniCodec(TestCodec):
    """`VideoCodec` of the miniature: TestCodec(0) pooling and colour mixing, then a fitted
    per-channel affine map chosen so that Wan's `process_in` of its output is standardised.

    encode(frames) = process_out((TestCodec.encode(frames) - mean) / std)
    decode(raw)    = TestCodec.decode(process_in(raw) * std + mean)
    """

    __test__ = False
    name = "anycrowd-mini-codec"

    def __init__(self):
        super().__init__(seed=0)
        self.mean = torch.tensor(MINI_LATENT_MEAN).view(LATENT_CHANNELS, 1, 1, 1)
        self.std = torch.tensor(MINI_LATENT_STD).view(LATENT_CHANNELS, 1, 1, 1)

    def encode(self, frames: Tensor) -> Tensor:
        z = super().encode(frames)
        return process_out((z - self.mean) / self.std)

    def decode(self, latent: Tensor) -> Tensor:
        latent = torch.as_tensor(latent).float()
        if latent.ndim == 4 and latent.shape[0] == LATENT_CHANNELS:
            latent = process_in(latent) * self.std + self.mean
        return super().decode(latent)  # (its own shape error for anything else)
