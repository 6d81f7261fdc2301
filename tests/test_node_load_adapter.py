"""AnyCrowd Load Adapter without ComfyUI: declared sockets, the anycrowd_gates folder, early
(VALIDATE_INPUTS) and run-time errors, size checks and the INFO text, on files written by
training.export for tiny configs. A stand-in folder_paths plays ComfyUI's folder registry;
the real one, the LoRA patching and the gates in sampling: tests/test_load_adapter_host.py.
"""

import inspect
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from anycrowd_core.attention import GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan import PRESETS
from pack import load_pack
from random_adapters import random_gates
from tiny_wan import tiny_config
from training.export import save_gates, save_lora
from training.lora import LoraWeights

pack = load_pack()
nodes = pack.nodes
node_mod = nodes.node_load_adapter
Node = node_mod.AnyCrowdLoadAdapter
KEY = "AnyCrowdLoadAdapter"


class FakeFolderPaths(types.ModuleType):
    """The part of ComfyUI's folder_paths the node uses, over real directories."""

    def __init__(self, models_dir: Path):
        super().__init__("folder_paths")
        self.models_dir = str(models_dir)
        self.folder_names_and_paths = {"loras": ([str(models_dir / "loras")], {".safetensors", ".pt"})}

    def get_folder_paths(self, name):
        return list(self.folder_names_and_paths[name][0])

    def get_filename_list(self, name):
        paths, exts = self.folder_names_and_paths[name]
        return sorted(f for p in paths if os.path.isdir(p) for f in os.listdir(p)
                      if not exts or os.path.splitext(f)[1] in exts)

    def get_full_path(self, name, filename):
        for p in self.folder_names_and_paths.get(name, ([], None))[0]:
            if os.path.isfile(os.path.join(p, filename)):
                return os.path.join(p, filename)
        return None


@pytest.fixture
def fp(tmp_path, monkeypatch):
    fake = FakeFolderPaths(tmp_path / "models")
    for sub in ("loras", "anycrowd_gates"):
        (tmp_path / "models" / sub).mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return fake


class FakePatcher(SimpleNamespace):
    """What the node uses of a ComfyUI MODEL (ModelPatcher): model.diffusion_model with dim,
    blocks, vace_blocks; model_options; clone() copying the options as ComfyUI does."""

    def clone(self):
        import copy

        return FakePatcher(model=self.model, model_options=copy.deepcopy(self.model_options))


def fake_model(dim=64, num_layers=4, vace_layers=2):
    dm = SimpleNamespace(dim=dim, blocks=[None] * num_layers, vace_blocks=[None] * vace_layers)
    return FakePatcher(model=SimpleNamespace(diffusion_model=dm), model_options={"transformer_options": {}})


def tiny_lora(cfg, rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"{branch}.{i}.self_attn.q": LoraWeights(A=torch.randn(rank, cfg.dim, generator=g),
                                                     B=torch.randn(cfg.dim, rank, generator=g), alpha=float(rank))
            for branch, n in (("blocks", cfg.num_layers), ("vace_blocks", cfg.vace_layers)) for i in range(n)}


def tiny_gates(cfg, seed=0):
    return random_gates(cfg.dim, cfg.num_layers, cfg.vace_layers, hidden=8, seed=seed)


EXTRA = {"step": "120", "attention": "tsda", "agf": "gated", "targets": "self_attn.q", "branches": "dit,vace",
         "shifted_rope": "false"}


def write_adapter(root: Path, cfg, name="run", extra=EXTRA, config_hash="h1"):
    lora = save_lora(root / "loras" / f"{name}_lora.safetensors", tiny_lora(cfg), cfg, rank=2, alpha=2.0,
                     config_hash=config_hash, extra=extra)
    gates = tiny_gates(cfg)
    path = save_gates(root / "anycrowd_gates" / f"{name}_gates.safetensors", gates, cfg, config_hash=config_hash,
                      extra=extra)
    return lora, path, gates


# --- declaration ------------------------------------------------------------------------

def test_node_is_registered_through_the_pack_with_its_sockets():
    cls = pack.NODE_CLASS_MAPPINGS[KEY]
    spec = {s.key: s for s in nodes.NODE_SPECS}[KEY]
    assert cls is Node and not hasattr(cls, "MISSING_DEPENDENCY")
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[KEY] == spec.display
    assert cls.CATEGORY == spec.category == "AnyCrowd/loaders"
    assert tuple(cls.RETURN_TYPES) == spec.return_types == ("MODEL", "ANYCROWD_GATES", "STRING")
    assert tuple(cls.RETURN_NAMES) == spec.return_names and len(cls.OUTPUT_TOOLTIPS) == 3
    assert len(cls.DESCRIPTION) > 40


def test_every_input_has_a_tooltip_and_matches_the_function():
    types_ = Node.INPUT_TYPES()
    assert set(types_) == {"required", "optional"} and set(types_["optional"]) == {"expert"}
    declared = {**types_["required"], **types_["optional"]}
    params = inspect.signature(Node.load).parameters
    assert set(declared) == {p for p in params if p != "self"}
    assert params["expert"].default == types_["optional"]["expert"][1]["default"] == "auto"
    for name, decl in declared.items():
        assert decl[1]["tooltip"], name
    assert set(inspect.signature(Node.VALIDATE_INPUTS).parameters) <= set(declared)
    assert types_["required"]["strength_model"][1]["default"] == 1.0


def test_file_lists_are_just_none_without_comfyui(monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", None)  # unimportable, also when the run has ComfyUI
    req = Node.INPUT_TYPES()["required"]
    assert req["lora_name"][0] == ["None"] and req["gates_name"][0] == ["None"]


# --- the anycrowd_gates folder ----------------------------------------------------------------

def test_gates_folder_is_registered_with_safetensors_only(fp, tmp_path):
    assert node_mod.register_gates_folder()
    assert fp.folder_names_and_paths["anycrowd_gates"] == ([str(tmp_path / "models" / "anycrowd_gates")], {".safetensors"})
    node_mod.register_gates_folder()  # idempotent
    assert fp.folder_names_and_paths["anycrowd_gates"][0] == [str(tmp_path / "models" / "anycrowd_gates")]


def test_gates_folder_keeps_user_paths_and_filters_extensions(fp, tmp_path):
    # extra_model_paths.yaml entries come without an extension filter (every file would be listed)
    fp.folder_names_and_paths["anycrowd_gates"] = (["/data/gates"], set())
    node_mod.register_gates_folder()
    paths, exts = fp.folder_names_and_paths["anycrowd_gates"]
    assert paths == ["/data/gates", str(tmp_path / "models" / "anycrowd_gates")] and exts == {".safetensors"}


def test_file_lists_come_from_the_loras_and_gates_folders(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())
    (tmp_path / "models" / "anycrowd_gates" / "notes.txt").write_text("x")
    req = Node.INPUT_TYPES()["required"]
    assert req["lora_name"][0] == ["None", "run_lora.safetensors"]
    assert req["gates_name"][0] == ["None", "run_gates.safetensors"]


# --- VALIDATE_INPUTS ----------------------------------------------------------------------

def test_validate_accepts_the_files_of_a_run_and_none(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())
    assert Node.VALIDATE_INPUTS("run_lora.safetensors", "run_gates.safetensors") is True
    assert Node.VALIDATE_INPUTS("None", "None") is True


def test_validate_names_a_file_missing_from_the_folder(fp):
    assert "not in the loras folder" in Node.VALIDATE_INPUTS("gone.safetensors", "None")


def test_validate_says_how_to_fix_swapped_files(fp, tmp_path):
    lora, gates, _ = write_adapter(tmp_path / "models", tiny_config())
    # the gates file copied into loras by mistake
    (tmp_path / "models" / "loras" / "g.safetensors").write_bytes(gates.read_bytes())
    msg = Node.VALIDATE_INPUTS("g.safetensors", "None")
    assert "is an AnyCrowd gates file" in msg and "models/anycrowd_gates" in msg


def test_validate_sends_ordinary_loras_to_the_native_loader(fp, tmp_path):
    save_file({"x.lora_A.weight": torch.zeros(1, 2)}, str(tmp_path / "models" / "loras" / "style.safetensors"))
    assert "LoraLoaderModelOnly" in Node.VALIDATE_INPUTS("style.safetensors", "None")


# --- loading ------------------------------------------------------------------------------

def test_gates_come_back_equal_to_the_saved_ones_and_the_model_is_untouched(fp, tmp_path):
    cfg = tiny_config()
    _, _, saved = write_adapter(tmp_path / "models", cfg)
    model = fake_model()
    out, gates, info = Node().load(model, "None", "run_gates.safetensors", 1.0)
    assert out is model and isinstance(gates, GateBank)
    assert gates.state_dict().keys() == saved.state_dict().keys()
    assert all(torch.equal(gates.state_dict()[k], v) for k, v in saved.state_dict().items())
    assert "LoRA: none" in info and "Gates: run_gates.safetensors" in info


def test_info_shows_base_model_rank_alpha_and_trained_steps(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())
    # strength 0 leaves the model as it is (like LoraLoaderModelOnly) but still reads and checks the file
    model = fake_model()
    out, gates, info = Node().load(model, "run_lora.safetensors", "None", 0.0)
    assert out is model and gates is None
    for fragment in ("LoRA: run_lora.safetensors", "base model: custom (dim 64, 4 blocks, 2 VACE blocks)",
                     "rank 2, alpha 2.0, 6 modules", "trained steps: 120", "attention tsda, agf gated",
                     "config hash: h1", "strength 0", "Gates: none"):
        assert fragment in info, fragment
    assert "WARNING" not in info


def test_info_warns_about_files_from_different_runs(fp, tmp_path):
    cfg = tiny_config()
    write_adapter(tmp_path / "models", cfg, name="a", config_hash="h1")
    write_adapter(tmp_path / "models", cfg, name="b", config_hash="h2", extra={**EXTRA, "step": "7"})
    info = Node().load(fake_model(), "a_lora.safetensors", "b_gates.safetensors", 0.0)[2]
    assert "different training runs" in info and "different training steps" in info


def test_an_adapter_trained_with_shifted_rope_turns_it_on_for_the_patch(fp, tmp_path):
    ADAPTER_KEY, adapter_shifted_rope = nodes.comfy_patch.ADAPTER_KEY, nodes.comfy_patch.adapter_shifted_rope

    cfg = tiny_config()
    write_adapter(tmp_path / "models", cfg, name="rope", extra={**EXTRA, "shifted_rope": "true"})
    write_adapter(tmp_path / "models", cfg, name="plain")
    model = fake_model()
    out, _, info = Node().load(model, "None", "rope_gates.safetensors", 1.0)
    assert adapter_shifted_rope(out) and "shifted RoPE" in info
    assert not adapter_shifted_rope(model) and ADAPTER_KEY not in model.model_options["transformer_options"]
    plain = Node().load(model, "None", "plain_gates.safetensors", 1.0)[0]
    assert plain is model and not adapter_shifted_rope(plain)
    with pytest.raises(AnyCrowdError, match="shifted RoPE on.*off"):
        Node().load(out, "None", "plain_gates.safetensors", 1.0)  # a second adapter with the other setting


def test_lora_and_gates_trained_with_different_shifted_rope_are_refused(fp, tmp_path):
    cfg = tiny_config()
    write_adapter(tmp_path / "models", cfg, name="a")
    write_adapter(tmp_path / "models", cfg, name="b", extra={**EXTRA, "shifted_rope": "true"})
    with pytest.raises(AnyCrowdError, match="LoRA was trained with shifted RoPE off but the gates with it on"):
        Node().load(fake_model(), "a_lora.safetensors", "b_gates.safetensors", 0.0)


def test_a_lora_for_another_model_size_is_refused_naming_both_sizes(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())
    with pytest.raises(AnyCrowdError, match=r"trained for .*\(dim 64, 4 blocks, 2 VACE blocks\).*\(dim 128, 4 blocks, 2 VACE blocks\)"):
        Node().load(fake_model(dim=128), "run_lora.safetensors", "None", 1.0)
    with pytest.raises(AnyCrowdError, match=r"gates run_gates.safetensors was trained for .*6 blocks"):
        Node().load(fake_model(num_layers=6), "None", "run_gates.safetensors", 1.0)


def test_the_error_names_the_base_a_released_size_was_trained_for(fp, tmp_path):
    cfg = PRESETS["1.3b"]
    g = torch.Generator().manual_seed(0)
    one = {"blocks.0.self_attn.q": LoraWeights(A=torch.randn(1, cfg.dim, generator=g), B=torch.zeros(cfg.dim, 1), alpha=1.0)}
    save_lora(tmp_path / "models" / "loras" / "big_lora.safetensors", one, cfg, rank=1, alpha=1.0)
    with pytest.raises(AnyCrowdError) as err:
        Node().load(fake_model(5120, 40, 8), "big_lora.safetensors", "None", 1.0)
    assert "trained for wan2.1-vace-1.3b (dim 1536, 30 blocks, 15 VACE blocks)" in str(err.value)
    assert "dim 5120, 40 blocks, 8 VACE blocks" in str(err.value)


def test_a_model_without_vace_blocks_is_refused(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())
    plain = SimpleNamespace(model=SimpleNamespace(diffusion_model=SimpleNamespace(dim=64, blocks=[None] * 4)))
    with pytest.raises(AnyCrowdError, match="needs a Wan 2.1 VACE model"):
        Node().load(plain, "run_lora.safetensors", "None", 1.0)


def test_swapped_files_are_refused_at_run_time_too(fp, tmp_path):
    _, gates, _ = write_adapter(tmp_path / "models", tiny_config())
    (tmp_path / "models" / "loras" / "g.safetensors").write_bytes(gates.read_bytes())
    with pytest.raises(AnyCrowdError, match="is an AnyCrowd gates file"):
        Node().load(fake_model(), "g.safetensors", "None", 1.0)


def test_applying_a_lora_needs_comfyui_and_says_so(fp, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy.sd", None)
    write_adapter(tmp_path / "models", tiny_config())
    with pytest.raises(AnyCrowdError, match="needs ComfyUI"):
        Node().load(fake_model(), "run_lora.safetensors", "None", 1.0)


def test_rewriting_a_file_under_the_same_name_reruns_the_node(fp, tmp_path):
    cfg = tiny_config()
    write_adapter(tmp_path / "models", cfg)
    before = Node.IS_CHANGED(None, "run_lora.safetensors", "run_gates.safetensors", 1.0)
    assert Node.IS_CHANGED(None, "run_lora.safetensors", "run_gates.safetensors", 1.0) == before
    path = save_gates(tmp_path / "models" / "anycrowd_gates" / "run_gates.safetensors", tiny_gates(cfg, seed=1), cfg)
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-clock file systems
    assert Node.IS_CHANGED(None, "run_lora.safetensors", "run_gates.safetensors", 1.0) != before


def test_a_rewritten_gates_file_is_read_again(fp, tmp_path):
    cfg = tiny_config()
    write_adapter(tmp_path / "models", cfg)
    node = Node()
    first = node.load(fake_model(), "None", "run_gates.safetensors", 1.0)[1]
    assert node.load(fake_model(), "None", "run_gates.safetensors", 1.0)[1] is first  # cached
    path = save_gates(tmp_path / "models" / "anycrowd_gates" / "run_gates.safetensors", tiny_gates(cfg, seed=1), cfg)
    os.utime(path, ns=(1, 1))
    second = node.load(fake_model(), "None", "run_gates.safetensors", 1.0)[1]
    assert not torch.equal(second.state_dict()["dit.0.fc1.weight"], first.state_dict()["dit.0.fc1.weight"])


# --- the recorded base: family, size, expert (anycrowd_core.adapter_base) ---------------------------

def write_based(root: Path, name: str, family="wan2.2-vace-fun", expert="high_noise", gates_expert=None):
    """A tiny adapter (LoRA + gates) that records its base, as `python -m training.run` writes it."""
    from anycrowd_core.adapter_base import adapter_base

    cfg = tiny_config()
    save_lora(root / "loras" / f"{name}_lora.safetensors", tiny_lora(cfg), cfg, rank=2, alpha=2.0, extra=EXTRA,
              base=adapter_base(cfg, family, expert, f"{name}_base.safetensors"))
    save_gates(root / "anycrowd_gates" / f"{name}_gates.safetensors", tiny_gates(cfg), cfg, extra=EXTRA,
               base=adapter_base(cfg, family, gates_expert or expert, f"{name}_base.safetensors"))


def record(model) -> dict:
    return model.model_options["transformer_options"].get(nodes.comfy_patch.ADAPTER_KEY) or {}


def test_an_expert_adapter_marks_the_model_as_that_expert_and_says_what_it_was_trained_on(fp, tmp_path):
    write_based(tmp_path / "models", "high")
    model = fake_model()
    out, _, info = Node().load(model, "None", "high_gates.safetensors", 1.0, "auto")
    assert out is not model and record(model) == {}
    assert (record(out)["family"], record(out)["expert"], record(out)["gates"]) == ("wan2.2-vace-fun", "high_noise",
                                                                                   "high_gates.safetensors")
    assert "trained on: Wan 2.2 VACE-Fun custom, high-noise expert (high_base.safetensors)" in info
    assert "the Wan 2.2 VACE-Fun A14B high-noise expert" in info
    assert record(Node().load(model, "None", "high_gates.safetensors", 1.0, "high_noise")[0])["expert"] == "high_noise"


def test_an_adapter_for_the_other_expert_is_refused_early_and_at_run_time(fp, tmp_path):
    write_based(tmp_path / "models", "low", expert="low_noise")
    msg = Node.VALIDATE_INPUTS("low_lora.safetensors", "low_gates.safetensors", "high_noise")
    assert "trained for the low-noise expert" in msg and "this node's expert is high_noise" in msg
    assert "second AnyCrowd Load Adapter" in msg
    with pytest.raises(AnyCrowdError, match="trained for the low-noise expert.*expert is high_noise"):
        Node().load(fake_model(), "None", "low_gates.safetensors", 1.0, "high_noise")
    assert Node.VALIDATE_INPUTS("low_lora.safetensors", "low_gates.safetensors", "low_noise") is True


def test_a_wan21_adapter_is_refused_on_a_declared_wan22_expert(fp, tmp_path):
    write_based(tmp_path / "models", "w21", family="wan2.1-vace", expert="none")
    msg = Node.VALIDATE_INPUTS("None", "w21_gates.safetensors", "low_noise")
    assert "trained on Wan 2.1 VACE custom (w21_base.safetensors), but expert is low_noise" in msg
    with pytest.raises(AnyCrowdError, match="set expert to auto for a Wan 2.1 VACE model"):
        Node().load(fake_model(), "None", "w21_gates.safetensors", 1.0, "low_noise")
    out = Node().load(fake_model(), "None", "w21_gates.safetensors", 1.0, "auto")[0]
    assert (record(out)["family"], record(out)["expert"]) == ("wan2.1-vace", "none")


def test_one_adapter_per_expert_a_second_for_the_other_expert_on_the_same_model_is_refused(fp, tmp_path):
    write_based(tmp_path / "models", "high")
    write_based(tmp_path / "models", "low", expert="low_noise")
    write_based(tmp_path / "models", "w21", family="wan2.1-vace", expert="none")
    high = Node().load(fake_model(), "None", "high_gates.safetensors", 1.0, "auto")[0]
    with pytest.raises(AnyCrowdError, match="already carries 'high_gates.safetensors' for the high-noise expert.*"
                                            "one model is one expert"):
        Node().load(high, "None", "low_gates.safetensors", 1.0, "auto")
    with pytest.raises(AnyCrowdError, match="adapters for different base models cannot be stacked"):
        Node().load(high, "None", "w21_gates.safetensors", 1.0, "auto")
    # the same expert twice (e.g. two LoRAs trained on it) and each expert on its own model are fine
    assert record(Node().load(high, "None", "high_gates.safetensors", 1.0, "auto")[0])["expert"] == "high_noise"
    low = Node().load(fake_model(), "None", "low_gates.safetensors", 1.0, "low_noise")[0]
    assert record(low)["expert"] == "low_noise" and record(high)["expert"] == "high_noise"


def test_lora_and_gates_trained_for_different_experts_are_refused(fp, tmp_path):
    write_based(tmp_path / "models", "mixed", expert="high_noise", gates_expert="low_noise")
    with pytest.raises(AnyCrowdError, match="LoRA was trained on .*high-noise expert.* but the gates on .*low-noise"):
        Node().load(fake_model(), "mixed_lora.safetensors", "mixed_gates.safetensors", 0.0, "auto")
    assert "different runs" in Node.VALIDATE_INPUTS("mixed_lora.safetensors", "mixed_gates.safetensors", "auto")


def test_old_adapters_without_a_recorded_base_still_load_and_say_the_base_is_unrecorded(fp, tmp_path):
    write_adapter(tmp_path / "models", tiny_config())  # written as before bases were recorded
    for expert in ("auto", "high_noise", "low_noise"):
        assert Node.VALIDATE_INPUTS("run_lora.safetensors", "run_gates.safetensors", expert) is True
    model = fake_model()
    out, gates, info = Node().load(model, "None", "run_gates.safetensors", 1.0, "auto")
    assert out is model and gates is not None  # nothing known to record
    assert "trained on: unrecorded (written before adapters recorded their base)" in info
    declared = Node().load(model, "None", "run_gates.safetensors", 1.0, "low_noise")[0]
    assert (record(declared)["family"], record(declared)["expert"]) == ("wan2.2-vace-fun", "low_noise")


def test_an_unknown_expert_choice_is_refused_in_words(fp):
    assert "expert 'medium' is not available" in Node.VALIDATE_INPUTS("None", "None", "medium")
    with pytest.raises(AnyCrowdError, match="choose one of auto, high_noise, low_noise"):
        Node().load(fake_model(), "None", "None", 1.0, "medium")
