"""ComfyUI's VAE API around the deterministic TestCodec, for node tests with and without a
ComfyUI host (a real Wan 2.1 VAE is 127M parameters: far too slow on a CPU test run).

`encode([T,H,W,C]) -> [1,16,T',h,w]`, `decode([B,16,L,h,w]) -> [B,T,H,W,3]`, like
`comfy.sd.VAE`. Import in tests as `from comfy_vae_stand_in import TestVAE`.
"""

from __future__ import annotations

import torch

from anycrowd_core.codec import TestCodec


class TestVAE:
    __test__ = False  # a helper, not a test class

    def __init__(self, seed: int = 0):
        self.codec = TestCodec(seed)
        self.encoded: list[int] = []  # frame count of every encode call

    @property
    def encode_calls(self) -> int:
        return len(self.encoded)

    def encode(self, pixels):
        self.encoded.append(int(pixels.shape[0]))
        return self.codec.encode(pixels[..., :3].float())[None]

    def decode(self, latent):
        return torch.stack([self.codec.decode(z.float()) for z in latent])
