"""AnyCrowd Mini Loader node: the miniature Wan 2.1 VACE shipped with the package (AnyCrowd-Mini,
docs/mini.md) as native ComfyUI objects, so the whole graph runs on a CPU in seconds before any
Wan weights are downloaded: MODEL (ComfyUI's WAN21_Vace, LoRA applied by ComfyUI), GATES, a VAE
over the miniature's codec and the empty CONDITIONING it was trained with.
"""

from __future__ import annotations

from pathlib import Path

from anycrowd_core.adapter_files import NonFiniteAdapter, load_adapter_files, read_metadata
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.mini import MINI_CONFIG, MINI_SAMPLING, MiniCodec, mini_text_embedding
from anycrowd_core.mini import model as mini_model
from anycrowd_core.wan import inspect_wan_vace

from .codec_vae import CodecVAE
from .comfy_patch import ADAPTER_KEY, check_wan_vace
from .comfy_runtime import apply_lora, apply_shift, load_diffusion_model
from .node_types import GATES

ANYCROWD = "anycrowd (base + LoRA + gates)"
BASE = "base (stock-VACE stand-in)"
VARIANTS = [ANYCROWD, BASE]
# Weights come from the package folder only (no file picker: the files are part of the
# package). A module attribute so tests can point it at temporary weights.
WEIGHTS_DIR = mini_model.WEIGHTS_DIR
BASE_FILE, LORA_FILE, GATES_FILE = mini_model.BASE_FILE, mini_model.LORA_FILE, mini_model.GATES_FILE


def weight_files(variant: str) -> dict[str, Path]:
    """{"base", "lora", "gates"} paths a variant loads (base only for the base variant)."""
    if variant not in VARIANTS:
        raise AnyCrowdError(f"variant {variant!r} is not available: choose one of {', '.join(VARIANTS)}.")
    folder = Path(WEIGHTS_DIR)
    files = {"base": folder / BASE_FILE}
    if variant == ANYCROWD:
        files.update(lora=folder / LORA_FILE, gates=folder / GATES_FILE)
    return files


def missing_weights_message(variant: str) -> str | None:
    """A sentence naming each missing file of `variant` and the fix, or None if all are there."""
    missing = [p for p in weight_files(variant).values() if not p.is_file()]
    if not missing:
        return None
    names = ", ".join(p.name for p in missing)
    fix = ("" if variant == BASE or weight_files(BASE)["base"] in missing
           else f" The variant '{BASE}' needs only {BASE_FILE}.")
    return (
        f"AnyCrowd-Mini weights missing: {names} not in {missing[0].parent}. They ship with the AnyCrowd "
        "package: restore them (git checkout -- anycrowd_core/mini/weights in the AnyCrowd folder, or reinstall "
        f"the package), or retrain them with the commands in docs/mini.md.{fix}"
    )


SIZE_FIELDS = ("dim", "ffn_dim", "num_layers", "vace_layers", "text_dim")


def check_base_file(path: Path) -> None:
    """Raise unless `path` holds a Wan 2.1 VACE model of the miniature's size (header only)."""
    try:
        cfg = inspect_wan_vace(path, num_heads=MINI_CONFIG.num_heads)
    except AnyCrowdError as e:
        raise AnyCrowdError(f"{path.name} is not the AnyCrowd-Mini base model ({e}) Restore it from the package.") from e
    have = {f: getattr(cfg, f) for f in SIZE_FIELDS}
    want = {f: getattr(MINI_CONFIG, f) for f in SIZE_FIELDS}
    if have != want:
        raise AnyCrowdError(
            f"{path.name} holds a Wan 2.1 VACE model of another size ({have}) than AnyCrowd-Mini ({want}): "
            "restore the file shipped with the package (git checkout -- anycrowd_core/mini/weights)."
        )


def _stamp(path: Path):
    try:
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(path), None)


def mini_info(variant: str, files: dict[str, Path]) -> str:
    """What the node loaded and how to sample it (the INFO output)."""
    c, s = MINI_CONFIG, MINI_SAMPLING
    mode = "tsda (agf_mode gated, connect gates)" if variant == ANYCROWD else "masked (training-free) or global"
    lines = [
        f"AnyCrowd-Mini, variant {variant}: a miniature Wan 2.1 VACE (dim {c.dim}, {c.num_layers} DiT + "
        f"{c.vace_layers} VACE blocks) trained on procedural stick-figure scenes. It shows the mechanism "
        "(which character follows which motion), not photorealism.",
        f"  base: {files['base'].name}",
    ]
    if "lora" in files:
        lora, gates = read_metadata(files["lora"]), read_metadata(files["gates"])
        lines.append(f"  LoRA: {files['lora'].name} (rank {lora.get('rank', '?')}, alpha {lora.get('alpha', '?')}, "
                     f"trained steps {lora.get('step', 'unknown')}), applied by ComfyUI's LoRA loader")
        lines.append(f"  gates: {files['gates'].name} (hidden width {gates.get('gate_hidden', '?')})")
    lines += [
        f"Sample with attention_mode {mode}, {s['sampler']} / simple, {s['steps']} steps, cfg {s['cfg']:g}, "
        f"shift {s['shift']:g} (this MODEL already samples with shift {s['shift']:g}); 192x128, 9 frames as trained.",
        "Connect the conditioning output to both positive and negative (the miniature has no text encoder).",
    ]
    return "\n".join(lines)


class AnyCrowdMiniLoader:
    DESCRIPTION = (
        "Loads AnyCrowd-Mini, the miniature Wan 2.1 VACE shipped with AnyCrowd (trained on procedural scenes), as "
        "a native MODEL, VAE and CONDITIONING, so the AnyCrowd graph runs on a CPU in seconds before you download "
        "any Wan weights. It shows the mechanism (binding characters to motions), not photorealism. Weights come "
        "from the package folder anycrowd_core/mini/weights."
    )
    CATEGORY = "AnyCrowd/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", GATES, "VAE", "CONDITIONING", "STRING")
    RETURN_NAMES = ("model", "gates", "vae", "conditioning", "info")
    OUTPUT_TOOLTIPS = (
        "The miniature as ComfyUI's own Wan 2.1 VACE model (float32), with the AnyCrowd LoRA applied by ComfyUI's "
        "LoRA mechanism for the anycrowd variant, sampling with the miniature's shift 3.0.",
        "The miniature's AGF gates (anycrowd variant; None for base): connect to AnyCrowd Sampler's gates and use "
        "attention_mode tsda, agf_mode gated.",
        "A VAE for the miniature's codec (MiniCodec; not the Wan 2.1 VAE): use it for IILR Encode and VAE Decode.",
        "The empty prompt the miniature was trained with (zeros [1, 1, 4096]): connect to positive and negative.",
        "What was loaded and the sampling settings the miniature was trained for.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "variant": (VARIANTS, {
                    "default": ANYCROWD,
                    "tooltip": "anycrowd: the base with the AnyCrowd LoRA and AGF gates trained with TSDA (use "
                               "attention_mode tsda). base: the model trained with plain global attention, standing in "
                               "for a stock Wan 2.1 VACE checkpoint (use masked, the training-free mode, or global)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, variant=None):
        if variant is None:
            return True
        try:
            return missing_weights_message(variant) or True
        except AnyCrowdError as e:
            return str(e)

    @classmethod
    def IS_CHANGED(cls, variant=None):
        # Retraining overwrites the files under the same names: re-run when one changes.
        try:
            return repr([_stamp(p) for p in weight_files(variant).values()])
        except AnyCrowdError:
            return repr(variant)

    def load(self, variant):
        files = weight_files(variant)
        problem = missing_weights_message(variant)
        if problem:
            raise AnyCrowdError(problem)
        check_base_file(files["base"])
        # the adapter files are read (format, version and size checked) before any model is built
        try:
            adapter = load_adapter_files(files.get("lora"), files.get("gates"), MINI_CONFIG)
        except NonFiniteAdapter as e:
            raise AnyCrowdError(
                f"variant {variant}: {str(e).split(': the training run')[0]}. Restore the shipped weights (git checkout "
                f"-- anycrowd_core/mini/weights in the AnyCrowd folder, or reinstall the package), retrain them "
                f"(docs/mini.md), or use the variant '{BASE}'."
            ) from None
        model = load_diffusion_model(files["base"], "AnyCrowd Mini Loader")
        check_wan_vace(model)
        if adapter.lora is not None:
            model = apply_lora(model, adapter.lora, 1.0)
        model = apply_shift(model, float(MINI_SAMPLING["shift"]))
        if adapter.metadata.get("lora", {}).get("shifted_rope") == "true":  # a miniature retrained with it
            model.model_options["transformer_options"][ADAPTER_KEY] = {"shifted_rope": True, "lora": LORA_FILE}
        vae = CodecVAE(MiniCodec(), name="AnyCrowd-Mini codec")
        conditioning = [[mini_text_embedding(MINI_CONFIG.text_dim), {}]]
        return (model, adapter.gates, vae, conditioning, mini_info(variant, files))
