"""AnyCrowd-Mini: a miniature AnyCrowd trained here in Wan 2.1 VACE's own architecture on
procedural scenes — the demo's default model and the binding benchmark's yardstick.
It shows the mechanism (identity-pose binding), not photorealism. See docs/mini.md."""

from .codec import MiniCodec, fit_latent_normalisation
from .model import MINI_CONFIG, MINI_SAMPLING, MiniModel, load_mini
from .seeds import EVAL_SEED_BASE, TRAIN_SEED_LIMIT
from .text import mini_text_embedding

__all__ = [
    "EVAL_SEED_BASE", "MINI_CONFIG", "MINI_SAMPLING", "MiniCodec", "MiniModel", "TRAIN_SEED_LIMIT",
    "fit_latent_normalisation", "load_mini", "mini_text_embedding",
]
