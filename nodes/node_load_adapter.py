"""AnyCrowd Load Adapter node: applies a LoRA trained by `python -m training.run` to a native
Wan 2.1 VACE MODEL through ComfyUI's own LoRA loader and returns the trained AGF gates for
the TSDA patch / AnyCrowd Sampler. Files are read and size-checked by `anycrowd_core.adapter_files`;
their recorded base (family, size, expert: `anycrowd_core.adapter_base`) is checked against the `expert`
input and against the adapters already on the model, and recorded on the output MODEL.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from anycrowd_core.adapter_base import EXPERT_CHOICES, EXPERTS, AdapterBase, check_expert, check_same_model, files_base
from anycrowd_core.adapter_files import GATES_FORMAT, LORA_FORMAT, AdapterFiles, load_adapter_files, read_metadata
from anycrowd_core.errors import AnyCrowdError

from .comfy_patch import ADAPTER_KEY, adapter_record, check_wan_vace
from .comfy_runtime import apply_lora
from .input_checks import finite_number
from .node_types import GATES

NONE = "None"
LORA_FOLDER = "loras"  # ComfyUI's own LoRA folder: the LoRA file is a plain ComfyUI LoRA
GATES_FOLDER = "anycrowd_gates"  # models/anycrowd_gates, registered by this module
GATES_EXTENSIONS = {".safetensors"}  # never list pickles: load_adapter_files reads safetensors only


def _folder_paths(import_it: bool = True):
    """ComfyUI's folder_paths module, or None outside ComfyUI. At pack import it is taken
    only if ComfyUI already imported it (import_it=False), so importing the pack never
    imports comfy; nodes call it with import_it=True."""
    module = sys.modules.get("folder_paths")
    if module is None and import_it:
        try:
            import folder_paths as module  # noqa: PLC0415 - ComfyUI's top-level module
        except ImportError:
            return None
    return module


def register_gates_folder(folder_paths=None) -> bool:
    """Register `models/anycrowd_gates` (.safetensors only) with ComfyUI's folder_paths;
    idempotent. Paths a user set for `anycrowd_gates` in extra_model_paths.yaml are kept
    (ours is added after them). Returns False outside ComfyUI."""
    fp = folder_paths or _folder_paths()
    if fp is None:
        return False
    default = os.path.join(fp.models_dir, GATES_FOLDER)
    entry = fp.folder_names_and_paths.get(GATES_FOLDER)
    if entry is None:
        fp.folder_names_and_paths[GATES_FOLDER] = ([default], set(GATES_EXTENSIONS))
    else:
        paths, extensions = entry
        if default not in paths:
            paths.append(default)
        if set(extensions) != GATES_EXTENSIONS:
            # add_model_folder_path (extra_model_paths.yaml) creates the entry with no
            # extension filter, which would list every file
            fp.folder_names_and_paths[GATES_FOLDER] = (paths, set(GATES_EXTENSIONS))
    return True


# Inside ComfyUI folder_paths is already imported when custom nodes load: register now so
# the folder exists for the file list and for other tools (ComfyUI-Manager, model browsers).
register_gates_folder(_folder_paths(import_it=False))


def file_choices(folder: str) -> list[str]:
    """["None", files of a ComfyUI model folder...]; just ["None"] outside ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return [NONE]
    if folder == GATES_FOLDER:
        register_gates_folder(fp)
    return [NONE, *fp.get_filename_list(folder)]


def full_path(folder: str, name: str) -> Path | None:
    """Absolute path of `name` in a ComfyUI model folder (None for "None"); readable error if missing."""
    if name in (None, "", NONE):
        return None
    fp = _folder_paths()
    if fp is None:
        raise AnyCrowdError(f"Loading {name!r} from the {folder} folder needs ComfyUI (folder_paths is not importable).")
    if folder == GATES_FOLDER:
        register_gates_folder(fp)
    path = fp.get_full_path(folder, name)
    if path is None:
        where = ", ".join(fp.get_folder_paths(folder)) if folder in fp.folder_names_and_paths else f"models/{folder}"
        raise AnyCrowdError(f"{name!r} is not in the {folder} folder ({where}); put the file there and press R to refresh.")
    return Path(path)


def _format_problem(path: Path, slot: str) -> str | None:
    """A sentence if the file in `slot` ("lora" / "gates") is not the AnyCrowd file for that slot.
    Reads the safetensors header only (cheap enough for VALIDATE_INPUTS)."""
    meta = read_metadata(path)
    fmt = meta.get("format")
    want = LORA_FORMAT if slot == "lora" else GATES_FORMAT
    if fmt == want:
        return None
    if slot == "lora" and fmt == GATES_FORMAT:
        return (f"{path.name} is an AnyCrowd gates file, not a LoRA: move it to models/{GATES_FOLDER} and pick it "
                "as gates_name; pick the matching *_lora.safetensors as lora_name.")
    if slot == "gates" and fmt == LORA_FORMAT:
        return (f"{path.name} is an AnyCrowd LoRA, not a gates file: move it to models/{LORA_FOLDER} and pick it "
                "as lora_name; pick the matching *_gates.safetensors as gates_name.")
    if slot == "lora":
        return (f"{path.name} is not an AnyCrowd LoRA (no AnyCrowd metadata): load ordinary LoRAs with the "
                "LoraLoaderModelOnly node; this node loads the *_lora.safetensors written by `python -m training.run`.")
    return (f"{path.name} is not an AnyCrowd gates file (no AnyCrowd metadata): pick the *_gates.safetensors "
            "written by `python -m training.run`.")


def model_size(model) -> dict[str, int]:
    """{dim, num_layers, vace_layers} of a ComfyUI Wan 2.1 VACE MODEL (what an adapter must fit)."""
    check_wan_vace(model)
    dm = model.model.diffusion_model
    return {"dim": int(dm.dim), "num_layers": len(dm.blocks), "vace_layers": len(dm.vace_blocks)}


def _describe_file(kind: str, name: str, meta: dict) -> str:
    size = f"dim {meta.get('dim', '?')}, {meta.get('num_layers', '?')} blocks, {meta.get('vace_layers', '?')} VACE blocks"
    parts = [f"{kind}: {name}", f"  base model: {meta.get('base_model', '?')} ({size})"]
    if kind == "LoRA":
        parts.append(f"  rank {meta.get('rank', '?')}, alpha {meta.get('alpha', '?')}, {meta.get('modules', '?')} modules"
                     + (f" ({meta['targets']}; branches {meta['branches']})" if "targets" in meta and "branches" in meta else ""))
    else:
        parts.append(f"  gate hidden width {meta.get('gate_hidden', '?')}, {meta.get('dit_gates', '?')} DiT + "
                     f"{meta.get('vace_gates', '?')} VACE gates")
    base = AdapterBase.from_metadata(meta)
    parts.append(f"  trained on: {base.describe()}" if base is not None else
                 "  trained on: unrecorded (written before adapters recorded their base): only the size is checked")
    parts.append(f"  trained steps: {meta.get('step', 'unknown')}")
    if "attention" in meta:
        parts.append(f"  trained with attention {meta['attention']}, agf {meta.get('agf', '?')}")
    if meta.get("config_hash"):
        parts.append(f"  config hash: {meta['config_hash']}")
    return "\n".join(parts)


def trained_with_shifted_rope(files: AdapterFiles) -> bool:
    """Whether the adapter was trained with shifted RoPE (its metadata). AnyCrowdError when
    the LoRA and the gates disagree: one setting cannot serve both."""
    flags = {kind: meta.get("shifted_rope", "false") == "true"
             for kind, meta in files.metadata.items() if meta is not None}
    if len(set(flags.values())) > 1:
        raise AnyCrowdError(
            f"The LoRA was trained with shifted RoPE {'on' if flags['lora'] else 'off'} but the gates with it "
            f"{'on' if flags['gates'] else 'off'}: they come from different runs; load the two files one run wrote."
        )
    return any(flags.values())


def adapter_info(files: AdapterFiles, lora_name: str | None, gates_name: str | None, strength: float,
                 expert: str = "unknown") -> tuple[str, list[str]]:
    """(INFO text for users, warnings) describing what was loaded; `expert`: what the model
    is taken to be (check_expert)."""
    lora_meta, gates_meta = files.metadata.get("lora"), files.metadata.get("gates")
    lines, warnings = [], []
    if lora_meta is not None:
        lines.append(_describe_file("LoRA", lora_name, lora_meta) + f"\n  applied with strength {strength:g}")
    else:
        lines.append("LoRA: none")
    lines.append(_describe_file("Gates", gates_name, gates_meta) if gates_meta is not None else "Gates: none")
    for meta in (lora_meta, gates_meta):
        if meta and meta.get("attention") == "tsda" and meta.get("agf") == "gated":
            lines.append("Use attention_mode tsda with agf_mode gated in AnyCrowd Sampler / AnyCrowd TSDA Patch "
                         "(connect the gates output there).")
            break
    if expert in ("high_noise", "low_noise"):
        lines.append(f"Model: the Wan 2.2 VACE-Fun A14B {EXPERTS[expert]}. Connect it to AnyCrowd Sampler's "
                     f"{'model' if expert == 'high_noise' else 'low_noise_model'} input; the other expert takes its own "
                     "AnyCrowd Load Adapter.")
    if trained_with_shifted_rope(files):
        lines.append("Trained with shifted RoPE: AnyCrowd Sampler / TSDA Patch / Long Video Sampler apply it to the "
                     "reference frames of this model.")
    if lora_meta and gates_meta and lora_meta.get("config_hash") != gates_meta.get("config_hash"):
        warnings.append("The LoRA and the gates come from different training runs (config hashes differ): "
                        "use the two files written together by one run.")
    if lora_meta and gates_meta and lora_meta.get("step") != gates_meta.get("step"):
        warnings.append(f"The LoRA (step {lora_meta.get('step')}) and the gates (step {gates_meta.get('step')}) "
                        "were saved at different training steps: use files from the same checkpoint.")
    lines += [f"WARNING: {w}" for w in warnings]
    return "\n".join(lines), warnings


class AnyCrowdLoadAdapter:
    DESCRIPTION = (
        "Loads an AnyCrowd adapter trained with `python -m training.run`: applies its LoRA (from models/loras) to the "
        "Wan 2.1 VACE MODEL with ComfyUI's own LoRA mechanism, and outputs its AGF gates (from models/anycrowd_gates) "
        "for AnyCrowd Sampler or AnyCrowd TSDA Patch. Refuses files trained for another model size, family or "
        "Wan 2.2 VACE-Fun expert (one Load Adapter per expert). The input MODEL is left unchanged."
    )
    CATEGORY = "AnyCrowd/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", GATES, "STRING")
    RETURN_NAMES = ("model", "gates", "info")
    OUTPUT_TOOLTIPS = (
        "The model with the AnyCrowd LoRA applied (unchanged if lora_name is None or strength is 0).",
        "The trained AGF gates (None if gates_name is None): connect to the gates input of AnyCrowd Sampler or "
        "AnyCrowd TSDA Patch and use attention_mode tsda with agf_mode gated.",
        "What was loaded: base model, rank, alpha, trained steps, and warnings.",
    )

    def __init__(self):
        self._cache: dict[tuple, AdapterFiles] = {}  # like LoraLoader.loaded_lora: strength changes skip the disk

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Wan 2.1 VACE model from Load Diffusion Model that the adapter was "
                                               "trained on (1.3B or 14B)."}),
                "lora_name": (file_choices(LORA_FOLDER), {
                    "tooltip": "The AnyCrowd LoRA (<name>_lora.safetensors from training) in models/loras. "
                               "None: apply no LoRA."}),
                "gates_name": (file_choices(GATES_FOLDER), {
                    "tooltip": f"The AnyCrowd AGF gates (<name>_gates.safetensors from the same training run) in "
                               f"models/{GATES_FOLDER}. None: output no gates (tsda gated then equals mean)."}),
                "strength_model": ("FLOAT", {
                    "default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                    "tooltip": "How strongly the LoRA modifies the model (as in LoraLoaderModelOnly; 1.0 as trained). "
                               "Does not scale the gates."}),
            },
            "optional": {
                "expert": (EXPERT_CHOICES, {
                    "default": "auto",
                    "tooltip": "Which Wan 2.2 VACE-Fun A14B expert the model is (its weights cannot tell: both experts "
                               "have the Wan 2.1 VACE 14B shapes). high_noise / low_noise refuses an adapter trained "
                               "for the other expert or for Wan 2.1 VACE. auto: as the adapter records. Use one Load "
                               "Adapter per expert."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name=None, gates_name=None, expert=None):
        # Naming these inputs replaces ComfyUI's own list check, so check them here in words.
        if expert is not None and expert not in EXPERT_CHOICES:
            return f"expert {expert!r} is not available: choose one of {', '.join(EXPERT_CHOICES)}."
        fp = _folder_paths()
        headers = {}
        for slot, folder, name in (("lora", LORA_FOLDER, lora_name), ("gates", GATES_FOLDER, gates_name)):
            if name in (None, NONE):
                continue
            if fp is not None and name not in file_choices(folder):
                other_slot, other = ("gates", GATES_FOLDER) if slot == "lora" else ("lora", LORA_FOLDER)
                fix = (f"it is in models/{other}: pick it as {other_slot}_name instead"
                       if name in file_choices(other) else f"put the file in models/{folder} and press R to refresh")
                return f"{slot}_name {name!r} is not in the {folder} folder: {fix}."
            try:
                path = full_path(folder, name)
            except AnyCrowdError as e:
                return str(e)
            problem = _format_problem(path, slot)
            if problem:
                return problem
            headers[slot] = read_metadata(path)
        try:  # the recorded base against the expert input: refused before anything runs
            check_expert(files_base(headers), expert or "auto", lora_name if "lora" in headers else gates_name)
        except AnyCrowdError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, model=None, lora_name=None, gates_name=None, strength_model=None, expert=None):
        # Retraining overwrites <name>_lora.safetensors under the same name: re-run when a file changes.
        stamps = []
        for folder, name in ((LORA_FOLDER, lora_name), (GATES_FOLDER, gates_name)):
            try:
                path = full_path(folder, name)
                stamps.append(None if path is None else (str(path), path.stat().st_mtime_ns, path.stat().st_size))
            except (AnyCrowdError, OSError):
                stamps.append(name)
        return repr(stamps)

    def load(self, model, lora_name, gates_name, strength_model=1.0, expert="auto"):
        size = model_size(model)
        strength_model = finite_number(strength_model, "strength_model",
                                       fix="Use 1.0 (as trained), or 0 to apply no LoRA.")
        if expert not in EXPERT_CHOICES:
            raise AnyCrowdError(f"expert {expert!r} is not available: choose one of {', '.join(EXPERT_CHOICES)}.")
        lora_path, gates_path = full_path(LORA_FOLDER, lora_name), full_path(GATES_FOLDER, gates_name)
        for slot, path in (("lora", lora_path), ("gates", gates_path)):
            problem = path and _format_problem(path, slot)
            if problem:
                raise AnyCrowdError(problem)
        files = self._read(lora_path, gates_path, size)
        base = files_base(files.metadata)
        name = lora_name if lora_path is not None else gates_name
        is_expert = check_expert(base, expert, name)
        family = base.family if base is not None else ("wan2.2-vace-fun" if expert != "auto" else "unknown")
        earlier = adapter_record(model)
        check_same_model(earlier, family, is_expert, name)
        info, warnings = adapter_info(files, lora_name, gates_name, strength_model, is_expert)
        for w in warnings:
            logging.warning("AnyCrowd Load Adapter: %s", w)
        shifted = trained_with_shifted_rope(files)
        if earlier and bool(earlier.get("shifted_rope")) != shifted:
            raise AnyCrowdError(
                f"This model already carries the AnyCrowd adapter {earlier.get('lora')!r}, trained with shifted RoPE "
                f"{'on' if earlier.get('shifted_rope') else 'off'}, but {lora_name!r} was trained with it "
                f"{'on' if shifted else 'off'}: the reference positions cannot be both. Load one adapter, or two "
                "trained with the same model.shifted_rope."
            )
        out = model
        if files.lora is not None and strength_model != 0:
            out = apply_lora(model, files.lora, strength_model)
        if shifted or family != "unknown":  # else the model stays as it is (patch_model's default)
            out = out.clone() if out is model else out
            # shifted_rope is read by patch_model (the reference frames take the positions the adapter
            # was trained with); family / expert by AnyCrowd Sampler and by a second Load Adapter
            out.model_options.setdefault("transformer_options", {})[ADAPTER_KEY] = {
                "shifted_rope": shifted, "lora": lora_name if lora_path else None, "gates": gates_name if gates_path else None,
                "family": family if family != "unknown" else earlier.get("family", "unknown"),
                "expert": is_expert if is_expert != "unknown" else earlier.get("expert", "unknown")}
        return (out, files.gates, info)

    def _read(self, lora_path, gates_path, size) -> AdapterFiles:
        def stamp(p):
            return None if p is None else (str(p), p.stat().st_mtime_ns, p.stat().st_size)

        key = (stamp(lora_path), stamp(gates_path), tuple(sorted(size.items())))
        if key not in self._cache:
            # names both sizes and the base the file was trained for when it does not fit
            files = load_adapter_files(lora_path, gates_path, size)  # also refuses NaN/inf weights
            self._cache = {key: files}
        return self._cache[key]
