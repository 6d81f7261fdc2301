"""Run configuration of `python -m training.run`: a dataclass tree read from YAML plus
`key=value` overrides, validated (unknown keys, types, files, base checkpoint) before any
model is built. docs/training.md holds the YAML reference; the defaults here are the truth.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anycrowd_core.errors import AnyCrowdError

RANDOM_BASES = ("random-tiny", "random-1.3b", "random-14b")
LORA_TARGETS = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)


@dataclass
class RandomModelConfig:
    """Size of the random base model for `model.base: random-tiny` (test / demo only)."""

    dim: int = 64
    ffn_dim: int = 128
    num_heads: int = 4
    num_layers: int = 4
    vace_layers: int = 2
    text_dim: int = 32
    freq_dim: int = 32
    seed: int = 0


@dataclass
class ModelConfig:
    """base: a Wan 2.1 VACE `.safetensors` file, or `random-tiny` / `random-1.3b` / `random-14b`
    (seeded random weights: tests and benchmarks only, nothing useful is learned).
    dtype: storage dtype of the frozen base weights (fp32 | bf16 | fp16); LoRA and gates stay fp32.
    attention: tsda (paper) | masked | global; agf: gated | mean | max (gates train only for gated tsda).
    shifted_rope: RealisDance-DiT shifted RoPE for the reference frames (off: ComfyUI's Wan
    model does not do it, so an adapter trained with it needs an inference path that does).
    training: lora (LoRA + gates on a frozen base, the AnyCrowd fine-tune) | full (every
    base weight trains, e.g. a miniature base from scratch; no LoRA; exports the model).
    family: wan2.1-vace | wan2.2-vace-fun; expert: none (Wan 2.1 VACE) | high_noise | low_noise
    (which Wan 2.2 VACE-Fun A14B expert `base` is). Both are written into the adapter's metadata
    (anycrowd_core.adapter_base), so AnyCrowd Load Adapter can refuse it on another base: an A14B
    expert has the 14B shapes, so its family and expert cannot be read from the file.
    """

    base: str = "random-tiny"
    family: str = "wan2.1-vace"
    expert: str = "none"
    training: str = "lora"
    num_heads: int | None = None
    dtype: str = "fp32"
    attention: str = "tsda"
    agf: str = "gated"
    gate_hidden: int = 128
    vace_strength: float = 1.0
    shifted_rope: bool = False
    gradient_checkpointing: bool = False
    random: RandomModelConfig = field(default_factory=RandomModelConfig)


@dataclass
class LoraConfig:
    """LoRA through peft on `targets` (module paths inside a block) of the `branches` (dit, vace)."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    branches: list[str] = field(default_factory=lambda: ["dit", "vace"])
    init_seed: int | None = None


@dataclass
class SceneDataConfig:
    """`data.source: scenes` (training/scene_samples.py): procedural scenes rendered in memory
    with the miniature's codec. Per sample: characters in [min_characters, max_characters],
    frames / width from the lists, a scenario from `scenarios`, and a reassigned
    (cross-driven) reference with probability `cross_driven` (AnyCrowd's stochastic
    reassignment; 0.9 by default: without it binding collapses, docs/claims.md)."""

    frames: list[int] = field(default_factory=lambda: [9])
    height: int = 128
    widths: list[int] = field(default_factory=lambda: [192])
    min_characters: int = 1
    max_characters: int = 4
    scenarios: list[str] = field(default_factory=lambda: ["crossing", "exit_reenter", "static", "swap",
                                                          "group_crossing", "occlusion"])
    cross_driven: float = 0.9


@dataclass
class DataConfig:
    """source: cache (the folder `python -m training.prepare` wrote) | procedural (generated
    on the fly, see training/procedural_dataset.py) | scenes (in memory, see `scenes`).
    val_samples are held out of training; procedural_samples sizes procedural and scenes."""

    source: str = "cache"
    scenes: SceneDataConfig = field(default_factory=SceneDataConfig)
    cache_dir: str | None = None
    procedural_samples: int = 8
    procedural_frames: int = 9
    procedural_height: int = 64
    procedural_width: int = 96
    procedural_characters: int = 2
    max_samples: int | None = None
    val_samples: int = 0
    num_workers: int = 0


TIMESTEP_DISTRIBUTIONS = ("uniform", "logit_normal", "shifted")


@dataclass
class TimestepConfig:
    """distribution: uniform | logit_normal | shifted (uniform then sigma' = s*sigma/(1+(s-1)*sigma)).
    warmup_steps (tau) > 0 enables RealisDance-DiT's low-noise warmup with strength warmup_alpha
    in (0, 1]; a negative warmup_alpha mirrors it into a high-noise warmup (the control
    experiment of docs/claims.md)."""

    distribution: str = "uniform"
    shift: float = 5.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    warmup_steps: int = 0
    warmup_alpha: float = 1.0


@dataclass
class ConditioningConfig:
    """Dropout for guidance and token-replace training (probabilities per sample)."""

    text_dropout: float = 0.05
    reference_dropout: float = 0.05
    token_replace_prob: float = 0.0
    token_replace_frames: int = 1


@dataclass
class LossConfig:
    agf_weight: float = 1.0


@dataclass
class OptimConfig:
    """AdamW; scheduler constant | cosine, both after a linear warmup of warmup_steps."""

    lr: float = 1e-4
    gate_lr: float | None = None
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    scheduler: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0


@dataclass
class TrainConfig:
    """One micro-batch is one sample (samples differ in identities and token layout);
    the effective batch is gradient_accumulation x number of processes."""

    max_steps: int = 1000
    gradient_accumulation: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    val_every: int = 0
    val_sigmas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool = True


@dataclass
class OutputConfig:
    dir: str = "runs/anycrowd"
    name: str = "anycrowd"


@dataclass
class RunConfig:
    """Everything one training run needs (see docs/training.md for the YAML reference)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short sha256 of the settings that shape the weights. Output paths, logging and
        train.max_steps are excluded, so a finished run can be resumed to train longer."""
        d = self.to_dict()
        d.pop("output")
        for k in ("family", "expert"):  # labels of the base that model.base already names
            d["model"].pop(k)
        for k in ("max_steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints", "progress", "tensorboard"):
            d["train"].pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading and typed parsing


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), *, check_files: bool = True) -> RunConfig:
    """Read a YAML file (or the defaults) and apply `key=value` overrides (dotted keys,
    values parsed by the field's type); then `validate`. Raises AnyCrowdError."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AnyCrowdError(f"Config file {str(path)!r} does not exist; check the --config path.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, ValueError, RecursionError) as e:
            raise AnyCrowdError(f"{path} is not valid YAML: {str(e)[:300]}") from None
        if not isinstance(data, dict):
            raise AnyCrowdError(f"{path} must hold a mapping of sections (model:, lora:, train:, ...).")
    cfg = from_dict(RunConfig, data, "")
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg, check_files=check_files)
    return cfg


def from_dict(cls, data: Mapping, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise AnyCrowdError(f"'{where or 'config'}' must be a mapping of keys, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise AnyCrowdError(_unknown_key_message(dotted, key, names, where))
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def apply_override(cfg: RunConfig, item: str) -> None:
    """Apply one `section.key=value` override in place."""
    if "=" not in item:
        raise AnyCrowdError(f"Override {item!r} must look like section.key=value (e.g. optim.lr=2e-4).")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    node, where = cfg, ""
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            raise AnyCrowdError(_unknown_key_message(dotted, part, names, where))
        where = f"{where}.{part}" if where else part
        hint = typing.get_type_hints(type(node))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(_strip_optional(hint)):
                raise AnyCrowdError(f"{dotted!r} is a section; override one of its keys, e.g. {dotted}.<key>=value.")
            raw = raw.strip()
            # a string field takes the text as typed (YAML would turn `no` into False)
            value = raw if _strip_optional(hint) is str and raw.lower() not in ("null", "none", "~") else _parse_scalar(raw)
            setattr(node, part, _coerce(hint, value, where))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise AnyCrowdError(f"{where!r} is a value, not a section: write {where}=value.")


def _parse_scalar(raw: str):
    """Command-line text -> YAML value (so lists `[a,b]`, `null`, `true` work); typed later."""
    import yaml

    try:
        return yaml.safe_load(raw) if raw else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        # not YAML, a 4300+ digit integer or absurd nesting: the raw text, refused by its type
        return raw


def _all_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        hint = _strip_optional(typing.get_type_hints(cls)[f.name])
        name = prefix + f.name
        out.append(name)
        if dataclasses.is_dataclass(hint):
            out += _all_keys(hint, name + ".")
    return out


# names other trainers use for our keys: a did-you-mean by spelling alone would miss them
SYNONYMS = {
    "learning_rate": "optim.lr", "lr_scheduler": "optim.scheduler", "lr_warmup_steps": "optim.warmup_steps",
    "warmup": "optim.warmup_steps", "grad_clip": "optim.max_grad_norm", "max_grad_norm": "optim.max_grad_norm",
    "clip_grad_norm": "optim.max_grad_norm", "adam_beta1": "optim.betas", "adam_beta2": "optim.betas",
    "adam_epsilon": "optim.eps", "gradient_accumulation_steps": "train.gradient_accumulation",
    "grad_accum": "train.gradient_accumulation", "steps": "train.max_steps", "max_train_steps": "train.max_steps",
    "num_steps": "train.max_steps", "save_steps": "train.checkpoint_every", "checkpointing_steps": "train.checkpoint_every",
    "output_dir": "output.dir", "lora_rank": "lora.rank", "rank": "lora.rank", "network_dim": "lora.rank",
    "lora_alpha": "lora.alpha", "network_alpha": "lora.alpha", "pretrained_model": "model.base",
    "pretrained_model_name_or_path": "model.base", "checkpoint": "model.base", "precision": "train.mixed_precision",
}


def _unknown_key_message(dotted: str, key: str, names: Sequence[str], where: str) -> str:
    leaf = str(key)
    if leaf in SYNONYMS:
        hint = f" Did you mean '{SYNONYMS[leaf]}'?"
        section = f"section '{where}'" if where else "the top level"
        return f"Unknown config key '{dotted}'.{hint} Valid keys in {section}: {', '.join(names)}."
    elsewhere = [k for k in _all_keys() if k.rsplit(".", 1)[-1] == leaf]  # right key, wrong section
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if elsewhere:
        hint = f" Did you mean '{elsewhere[0]}'?"
    elif close:
        hint = f" Did you mean '{(where + '.') if where else ''}{close[0]}'?"
    else:
        near = difflib.get_close_matches(str(dotted), _all_keys(), n=1, cutoff=0.6)
        hint = f" Did you mean '{near[0]}'?" if near else ""
    section = f"section '{where}'" if where else "the top level"
    return f"Unknown config key '{dotted}'.{hint} Valid keys in {section}: {', '.join(names)}."


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _coerce(hint, value, where: str):
    """Check / convert `value` to the annotated type; AnyCrowdError naming the key otherwise."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = _strip_optional(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and base is not str):
        if optional:
            return None
        raise AnyCrowdError(f"'{where}' may not be empty; give a {_type_name(base)}.")
    if dataclasses.is_dataclass(base):
        return from_dict(base, value, where)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if isinstance(value, str):  # a=x,y,z on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise AnyCrowdError(f"'{where}' must be a list of {_type_name(item)}, got {_show(value)}.")
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN passes every range check; inf is never meant
                raise AnyCrowdError(f"'{where}' is {_show(value)}; it must be a finite number.")
            return number
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - every annotation above is handled
        return value
    hint = ""
    if base is str and isinstance(value, bool):
        hint = " YAML reads unquoted yes/no/on/off as booleans: quote the value (e.g. \"no\")."
    raise AnyCrowdError(f"'{where}' must be of type {_type_name(base)}, got {_show(value)} ({type(value).__name__}).{hint}")


def _show(value) -> str:
    """repr of a user's value, shortened: a pasted 5000-digit number must not flood the error."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-10:]} ({len(text)} characters)"


def _type_name(t) -> str:
    return {bool: "boolean (true/false)", int: "integer", float: "number", str: "string"}.get(t, str(t))


# ---------------------------------------------------------------- validation


def _choice(value, allowed: Sequence[str], where: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise AnyCrowdError(f"'{where}' is {_show(value)}; choose one of {', '.join(allowed)}.{hint}")


def _range(value, lo, hi, where: str, lo_open: bool = False) -> None:
    if value is None:
        return
    if (value <= lo if lo_open else value < lo) or (hi is not None and value > hi):
        span = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise AnyCrowdError(f"'{where}' is {value}; it must lie in {span}.")


def validate(cfg: RunConfig, *, check_files: bool = True) -> None:
    """Check values, files and the base checkpoint's header (cheap: no tensor is read)."""
    m, lo, d, ts, c, o, t = cfg.model, cfg.lora, cfg.data, cfg.timesteps, cfg.conditioning, cfg.optim, cfg.train
    _choice(m.dtype, ("fp32", "bf16", "fp16"), "model.dtype")
    _choice(m.attention, ("tsda", "masked", "global"), "model.attention")
    _choice(m.training, ("lora", "full"), "model.training")
    if m.training == "full" and m.dtype != "fp32":
        raise AnyCrowdError("model.training=full trains every base weight: use model.dtype=fp32 "
                            "(train.mixed_precision=bf16 for speed on a GPU).")
    _choice(m.agf, ("gated", "mean", "max"), "model.agf")
    _check_family(m)
    _range(m.gate_hidden, 1, None, "model.gate_hidden")
    _range(m.vace_strength, 0, None, "model.vace_strength")
    _range(lo.rank, 1, None, "lora.rank")
    _range(lo.alpha, 0, None, "lora.alpha", lo_open=True)
    _range(lo.dropout, 0, 1, "lora.dropout")
    for i, target in enumerate(lo.targets):
        _choice(target, LORA_TARGETS, f"lora.targets[{i}]")
    for i, branch in enumerate(lo.branches):
        _choice(branch, ("dit", "vace"), f"lora.branches[{i}]")
    if not lo.targets or not lo.branches:
        raise AnyCrowdError("'lora.targets' and 'lora.branches' must not be empty: LoRA needs modules to adapt.")
    _choice(d.source, ("cache", "procedural", "scenes"), "data.source")
    _check_scene_data(d.scenes)
    _range(d.val_samples, 0, None, "data.val_samples")
    _range(d.num_workers, 0, None, "data.num_workers")
    _range(d.procedural_samples, 1, None, "data.procedural_samples")
    _choice(ts.distribution, TIMESTEP_DISTRIBUTIONS, "timesteps.distribution")
    _range(ts.shift, 0, None, "timesteps.shift", lo_open=True)
    _range(ts.logit_std, 0, None, "timesteps.logit_std", lo_open=True)
    _range(ts.warmup_steps, 0, None, "timesteps.warmup_steps")
    _range(ts.warmup_alpha, -1, 1, "timesteps.warmup_alpha")
    for name in ("text_dropout", "reference_dropout", "token_replace_prob"):
        _range(getattr(c, name), 0, 1, f"conditioning.{name}")
    _range(c.token_replace_frames, 1, None, "conditioning.token_replace_frames")
    _range(cfg.loss.agf_weight, 0, None, "loss.agf_weight")
    _range(o.lr, 0, None, "optim.lr", lo_open=True)
    _range(o.gate_lr, 0, None, "optim.gate_lr", lo_open=True)
    _range(o.weight_decay, 0, None, "optim.weight_decay")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise AnyCrowdError(f"'optim.betas' is {o.betas}; give two numbers in [0, 1), e.g. [0.9, 0.999].")
    _range(o.max_grad_norm, 0, None, "optim.max_grad_norm", lo_open=True)
    _choice(o.scheduler, ("constant", "cosine"), "optim.scheduler")
    _range(o.warmup_steps, 0, None, "optim.warmup_steps")
    _range(o.min_lr_ratio, 0, 1, "optim.min_lr_ratio")
    _range(t.max_steps, 1, None, "train.max_steps")
    _range(t.gradient_accumulation, 1, None, "train.gradient_accumulation")
    _choice(t.mixed_precision, ("no", "bf16", "fp16"), "train.mixed_precision")
    for name in ("log_every", "val_every", "checkpoint_every"):
        _range(getattr(t, name), 0, None, f"train.{name}")
    _range(t.keep_checkpoints, 1, None, "train.keep_checkpoints")
    for i, s in enumerate(t.val_sigmas):
        _range(s, 0, 1, f"train.val_sigmas[{i}]")
    if t.val_every and not d.val_samples:
        raise AnyCrowdError("'train.val_every' is set but 'data.val_samples' is 0: hold out samples for validation.")
    if not cfg.output.name.strip():
        raise AnyCrowdError("'output.name' must not be empty.")
    if check_files:
        from anycrowd_core.adapter_base import size_label

        shapes = check_base(m)
        if m.family == "wan2.2-vace-fun" and m.base not in RANDOM_BASES and size_label(shapes) != "14B":
            raise AnyCrowdError(
                f"'model.family' is wan2.2-vace-fun, but model.base {m.base!r} has dim {shapes.dim} with "
                f"{shapes.num_layers} blocks and {shapes.vace_layers} VACE blocks: Wan 2.2 VACE-Fun A14B experts have "
                "the 14B shapes (dim 5120, 40 blocks). Give the high- or low-noise expert file, or model.family=wan2.1-vace."
            )
        if d.source == "cache":
            if not d.cache_dir:
                raise AnyCrowdError(
                    "'data.cache_dir' is not set: run `python -m training.prepare` and pass its output folder "
                    "(data.cache_dir=PATH), or use data.source=procedural."
                )
            if not Path(d.cache_dir).is_dir():
                raise AnyCrowdError(
                    f"'data.cache_dir' {d.cache_dir!r} does not exist: run `python -m training.prepare` first "
                    "or fix the path."
                )


def _check_scene_data(sc: SceneDataConfig) -> None:
    from anycrowd_core.codec import check_frame_count, check_frame_size
    from anycrowd_core.scenes import SCENARIOS

    if not sc.frames or not sc.widths or not sc.scenarios:
        raise AnyCrowdError("'data.scenes.frames', 'widths' and 'scenarios' must not be empty.")
    for f in sc.frames:
        check_frame_count(f, "data.scenes.frames entry")
    for w in sc.widths:
        check_frame_size(sc.height, w, what="data.scenes size (height x widths entry)")
    for i, name in enumerate(sc.scenarios):
        _choice(name, SCENARIOS, f"data.scenes.scenarios[{i}]")
    _range(sc.min_characters, 1, None, "data.scenes.min_characters")
    _range(sc.max_characters, sc.min_characters, None, "data.scenes.max_characters")
    _range(sc.cross_driven, 0, 1, "data.scenes.cross_driven")


def _check_family(m: ModelConfig) -> None:
    from anycrowd_core.adapter_base import EXPERTS, FAMILIES

    _choice(m.family, tuple(FAMILIES), "model.family")
    _choice(m.expert, tuple(EXPERTS), "model.expert")
    if m.family == "wan2.2-vace-fun" and m.expert == "none":
        raise AnyCrowdError("'model.family' is wan2.2-vace-fun: set 'model.expert' to high_noise or low_noise (the "
                            "A14B expert file that model.base is); each expert trains its own adapter.")
    if m.family == "wan2.1-vace" and m.expert != "none":
        raise AnyCrowdError(f"'model.expert' is {m.expert}, but Wan 2.1 VACE has no experts: set "
                            "'model.family=wan2.2-vace-fun' for a Wan 2.2 VACE-Fun A14B expert, or 'model.expert=none'.")


def check_base(m: ModelConfig):
    """The base model's WanVaceConfig from its safetensors header (no tensor is read).
    AnyCrowdError for a missing file, a non-VACE Wan model, or mismatched keys / shapes."""
    from anycrowd_core.wan import WanVaceConfig

    if m.base in RANDOM_BASES:
        if m.base == "random-tiny":
            r = m.random
            return WanVaceConfig(
                dim=r.dim, ffn_dim=r.ffn_dim, num_heads=r.num_heads, num_layers=r.num_layers,
                vace_layers=r.vace_layers, text_dim=r.text_dim, freq_dim=r.freq_dim,
            )
        return WanVaceConfig.preset(m.base.removeprefix("random-"))
    path = Path(m.base)
    if path.suffix.lower() != ".safetensors" and not path.exists():
        raise AnyCrowdError(
            f"'model.base' is {m.base!r}: give the path of a Wan 2.1 VACE .safetensors checkpoint or one of "
            f"{', '.join(RANDOM_BASES)}."
        )
    from anycrowd_core.wan import inspect_wan_vace

    # the core loader's own checks on the file header, without reading tensors
    return inspect_wan_vace(path, m.num_heads)
