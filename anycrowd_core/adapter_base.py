"""What an AnyCrowd adapter was trained on, as its files record it: the model family
(Wan 2.1 VACE or Wan 2.2 VACE-Fun), the size, the expert (Wan 2.2 VACE-Fun A14B has a
high-noise and a low-noise expert) and the base checkpoint's file name.

The size is checked against the loaded model's shapes (adapter_files). The family and
the expert of a 14B-shaped model cannot be read from its weights: a Wan 2.2 VACE-Fun A14B
expert has the shapes of Wan 2.1 VACE 14B. So they are checked against what the user says
(AnyCrowd Load Adapter's `expert` input) and against the other adapters on the same model.
Files written before these keys existed load with the base "unrecorded".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import AnyCrowdError
from .wan import PRESETS, WanVaceConfig

FAMILIES = {"wan2.1-vace": "Wan 2.1 VACE", "wan2.2-vace-fun": "Wan 2.2 VACE-Fun"}
EXPERTS = {"none": "", "high_noise": "high-noise expert", "low_noise": "low-noise expert"}
# AnyCrowd Load Adapter's `expert` input: auto takes the adapter's own record
EXPERT_CHOICES = ["auto", "high_noise", "low_noise"]
METADATA_KEYS = {"family": "base_family", "size": "base_size", "expert": "base_expert", "checkpoint": "base_checkpoint"}


def size_label(cfg: WanVaceConfig, family: str = "wan2.1-vace") -> str:
    """'1.3B' / '14B' for the released Wan 2.1 VACE shapes, 'A14B' for a Wan 2.2 VACE-Fun
    expert (the 14B shapes), 'custom' for anything else (tiny test models, miniatures)."""
    for key, preset in PRESETS.items():
        if all(getattr(cfg, f) == getattr(preset, f) for f in ("dim", "ffn_dim", "num_layers", "vace_layers")):
            return "A14B" if family == "wan2.2-vace-fun" and key == "14b" else key.upper()
    return "custom"


@dataclass(frozen=True)
class AdapterBase:
    """The base an adapter was trained on (metadata keys base_family / base_size /
    base_expert / base_checkpoint).

    family: 'wan2.1-vace' | 'wan2.2-vace-fun'. size: '1.3B' | '14B' | 'A14B' | 'custom'.
    expert: 'none' for a single-model family, 'high_noise' | 'low_noise' for a Wan 2.2
    VACE-Fun A14B expert. checkpoint: the base checkpoint's file name (or 'random-tiny' ...).
    """

    family: str
    size: str
    expert: str
    checkpoint: str

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise AnyCrowdError(f"Unknown model family {self.family!r}: use one of {', '.join(FAMILIES)}.")
        if self.expert not in EXPERTS:
            raise AnyCrowdError(f"Unknown expert {self.expert!r}: use one of {', '.join(EXPERTS)}.")
        if (self.family == "wan2.2-vace-fun") != (self.expert != "none"):
            raise AnyCrowdError(
                f"Family {self.family} with expert {self.expert}: Wan 2.2 VACE-Fun adapters are trained for one "
                "expert (high_noise or low_noise); Wan 2.1 VACE has none (expert none)."
            )

    def metadata(self) -> dict[str, str]:
        return {key: getattr(self, field) for field, key in METADATA_KEYS.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> AdapterBase | None:
        """The recorded base, or None for a file written before bases were recorded."""
        if METADATA_KEYS["family"] not in meta:
            return None
        try:
            return cls(**{field: meta.get(key, "") for field, key in METADATA_KEYS.items()})
        except AnyCrowdError as e:
            raise AnyCrowdError(f"The adapter's base metadata is damaged ({e}); re-export the adapter.") from None

    def describe(self) -> str:
        """e.g. 'Wan 2.2 VACE-Fun A14B, high-noise expert (wan2.2_fun_vace_high_noise_14B_bf16.safetensors)'."""
        text = f"{FAMILIES[self.family]} {self.size}"
        if self.expert != "none":
            text += f", {EXPERTS[self.expert]}"
        return text + (f" ({self.checkpoint})" if self.checkpoint else "")


def adapter_base(cfg: WanVaceConfig, family: str = "wan2.1-vace", expert: str = "none", checkpoint: str = "") -> AdapterBase:
    """The AdapterBase of a run on a model of shapes `cfg` (model.family / model.expert /
    model.base of the trainer config); the checkpoint is recorded by file name only."""
    name = Path(checkpoint).name if checkpoint else ""
    return AdapterBase(family=family, size=size_label(cfg, family), expert=expert, checkpoint=name)


def files_base(metadata: Mapping[str, Mapping | None]) -> AdapterBase | None:
    """The one base of an adapter's files ({'lora': meta, 'gates': meta}); None when no file
    records one. AnyCrowdError when the LoRA and the gates record different bases."""
    bases = {kind: AdapterBase.from_metadata(meta) for kind, meta in metadata.items() if meta is not None}
    recorded = {kind: b for kind, b in bases.items() if b is not None}
    if len({(b.family, b.expert) for b in recorded.values()}) > 1:
        lora, gates = recorded["lora"], recorded["gates"]
        raise AnyCrowdError(
            f"The LoRA was trained on {lora.describe()} but the gates on {gates.describe()}: they come from "
            "different runs; load the two files one run wrote."
        )
    return next(iter(recorded.values()), None)


def check_expert(base: AdapterBase | None, expert: str, name: str) -> str:
    """The expert the model is, given the adapter's base and the node's `expert` choice
    (auto / high_noise / low_noise): 'none', 'high_noise', 'low_noise', or 'unknown' (an
    unrecorded base with expert auto). AnyCrowdError, in words, when they disagree."""
    if expert not in EXPERT_CHOICES:
        raise AnyCrowdError(f"expert {expert!r} is not available: choose one of {', '.join(EXPERT_CHOICES)}.")
    if base is None:
        return "unknown" if expert == "auto" else expert
    if expert == "auto" or base.expert == expert:
        return base.expert
    if base.expert == "none":
        raise AnyCrowdError(
            f"{name} was trained on {base.describe()}, but expert is {expert}: that says the model is the "
            f"{EXPERTS[expert]} of Wan 2.2 VACE-Fun A14B, which has the same shapes but other weights. Load an "
            f"adapter trained for that expert (model.family=wan2.2-vace-fun model.expert={expert}), or set expert "
            "to auto for a Wan 2.1 VACE model."
        )
    return _other_expert(base, expert, name)


def _other_expert(base: AdapterBase, expert: str, name: str) -> str:
    raise AnyCrowdError(
        f"{name} was trained for the {EXPERTS[base.expert]} ({base.describe()}), but this node's expert is "
        f"{expert}: each expert needs its own adapter. Load it with a second AnyCrowd Load Adapter on the "
        f"{EXPERTS[base.expert]} (its own Load Diffusion Model), and load the {EXPERTS[expert]}'s adapter here."
    )


def check_same_model(previous: Mapping, family: str, expert: str, name: str) -> None:
    """Refuse a second adapter on a model that already carries one for another expert or
    family (`previous`: what AnyCrowd Load Adapter recorded on the model: lora, family, expert)."""
    was_family, was_expert = previous.get("family", "unknown"), previous.get("expert", "unknown")
    if "unknown" in (was_expert, expert) or (was_family, was_expert) == (family, expert):
        return
    earlier = previous.get("lora") or previous.get("gates") or "an adapter"
    if was_expert != "none" and expert != "none":
        raise AnyCrowdError(
            f"This model already carries {earlier!r} for the {EXPERTS[was_expert]}, and {name} is for the "
            f"{EXPERTS[expert]}: one model is one expert. Load {name} on the {EXPERTS[expert]} with its own "
            "AnyCrowd Load Adapter (one per expert)."
        )
    raise AnyCrowdError(
        f"This model already carries {earlier!r} ({FAMILIES.get(was_family, was_family)}"
        f"{', ' + EXPERTS[was_expert] if was_expert not in ('none', 'unknown') else ''}), and {name} was trained on "
        f"{FAMILIES.get(family, family)}{', ' + EXPERTS[expert] if expert != 'none' else ''}: adapters for different "
        "base models cannot be stacked. Load adapters trained on the same base."
    )
