"""AnyCrowd Mini Loader without ComfyUI: its sockets, the missing / wrong weights errors (before
any ComfyUI work), how it wires the files into ComfyUI's loader (ComfyUI calls faked), the VAE
over MiniCodec (ComfyUI's VAE API, exact against the codec and the headless IILR), and the
shipped CPU workflow. Weights are random files in the shipped formats (tests/mini_weights.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from anycrowd_core.attention import GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import comfy_vace_inputs, encode_iilr
from anycrowd_core.mini import MINI_CONFIG, MINI_SAMPLING, MiniCodec, mini_text_embedding
from anycrowd_core.mini.model import BASE_FILE, GATES_FILE, LORA_FILE
from anycrowd_core.scenes import make_scene
from anycrowd_core.wan import WanVaceConfig, random_wan_vace, save_wan_vace
from mini_weights import write_random_mini_weights
from node_inputs import boxes_text
from pack import REPO, load_pack

pack = load_pack()
loader_mod = pack.nodes.node_mini_loader
Loader = loader_mod.AnyCrowdMiniLoader
CodecVAE = pack.nodes.codec_vae.CodecVAE
ANYCROWD, BASE = loader_mod.ANYCROWD, loader_mod.BASE
KEY = "AnyCrowdMiniLoader"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return write_random_mini_weights(tmp_path_factory.mktemp("mini_weights"))


@pytest.fixture
def weights(random_weights, monkeypatch):
    """The loader's package folder pointed at the random weights."""
    monkeypatch.setattr(loader_mod, "WEIGHTS_DIR", random_weights)
    return random_weights


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The loader's package folder pointed at an empty temporary folder."""
    monkeypatch.setattr(loader_mod, "WEIGHTS_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def copy_weights(folder, random_weights):
    """copy_weights({name: source}): the loader's (empty) folder given a copy of the random weight
    file `source` under each `name`; returns the folder."""

    def copy(names: dict) -> Path:
        for name, source in names.items():
            (folder / name).write_bytes((random_weights / source).read_bytes())
        return folder

    return copy


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=9, height=128, width=192, seed=0, scenario="crossing")


class FakeComfy:
    """Stands in for the ComfyUI calls of the loader and records them."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(loader_mod, "load_diffusion_model", lambda path, what: self.record("load", path) or "model")
        monkeypatch.setattr(loader_mod, "check_wan_vace", lambda model: None)
        monkeypatch.setattr(loader_mod, "apply_lora",
                            lambda model, lora, strength: self.record("lora", sorted(lora), strength) or model + "+lora")
        monkeypatch.setattr(loader_mod, "apply_shift", lambda model, shift: self.record("shift", shift) or model + "+shift")

    def record(self, *call):
        self.calls.append(call)


def assert_refused_before_comfyui_work(monkeypatch, variant: str, match: str) -> None:
    """Loading `variant` raises an AnyCrowdError matching `match` before any ComfyUI call."""
    fake = FakeComfy(monkeypatch)
    with pytest.raises(AnyCrowdError, match=match):
        Loader().load(variant)
    assert fake.calls == []


# --- declaration ---------------------------------------------------------------------------

def test_registered_as_a_loader_with_model_gates_vae_conditioning_and_info():
    spec = {s.key: s for s in pack.nodes.NODE_SPECS}[KEY]
    assert pack.NODE_CLASS_MAPPINGS[KEY] is Loader
    assert spec.category == Loader.CATEGORY == "AnyCrowd/loaders"
    assert Loader.RETURN_TYPES == ("MODEL", "ANYCROWD_GATES", "VAE", "CONDITIONING", "STRING")
    assert Loader.RETURN_NAMES == ("model", "gates", "vae", "conditioning", "info")


def test_the_only_input_is_the_variant_combo_defaulting_to_anycrowd():
    types = Loader.INPUT_TYPES()
    assert list(types) == ["required"] and list(types["required"]) == ["variant"]
    choices, opts = types["required"]["variant"]
    assert choices == ["anycrowd (base + LoRA + gates)", "base (stock-VACE stand-in)"]
    assert opts["default"] == ANYCROWD


def test_weights_come_from_the_package_folder():
    assert loader_mod.WEIGHTS_DIR == REPO / "anycrowd_core" / "mini" / "weights"
    files = loader_mod.weight_files(ANYCROWD)
    assert {k: p.name for k, p in files.items()} == {"base": BASE_FILE, "lora": LORA_FILE, "gates": GATES_FILE}
    assert list(loader_mod.weight_files(BASE)) == ["base"]


# --- missing or wrong weights --------------------------------------------------------------

def test_missing_weights_are_named_with_the_fix_at_validation_and_at_run(folder):
    message = Loader.VALIDATE_INPUTS(ANYCROWD)
    assert isinstance(message, str)
    for name in (BASE_FILE, LORA_FILE, GATES_FILE, str(folder), "git checkout -- anycrowd_core/mini/weights",
                 "docs/mini.md"):
        assert name in message
    with pytest.raises(AnyCrowdError) as err:
        Loader().load(ANYCROWD)
    assert str(err.value) == message
    assert LORA_FILE not in Loader.VALIDATE_INPUTS(BASE)


def test_without_the_adapter_files_the_base_variant_still_loads_and_is_suggested(copy_weights):
    copy_weights({BASE_FILE: BASE_FILE})
    assert Loader.VALIDATE_INPUTS(BASE) is True
    message = Loader.VALIDATE_INPUTS(ANYCROWD)
    missing = message.split(" not in ")[0]
    assert LORA_FILE in missing and GATES_FILE in missing and BASE_FILE not in missing
    assert f"'{BASE}' needs only {BASE_FILE}" in message


def test_an_unknown_variant_is_refused_with_the_choices():
    message = Loader.VALIDATE_INPUTS("large")
    assert "'large'" in message and ANYCROWD in message and BASE in message


def test_a_base_file_of_another_size_is_refused_before_comfyui_work(copy_weights, monkeypatch):
    folder = copy_weights({LORA_FILE: LORA_FILE, GATES_FILE: GATES_FILE})
    other = WanVaceConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, vace_layers=1, text_dim=4096, freq_dim=256)
    save_wan_vace(random_wan_vace(other), folder / BASE_FILE)
    assert_refused_before_comfyui_work(monkeypatch, BASE, "another size.*git checkout")


def test_swapped_adapter_files_are_refused_before_comfyui_work(copy_weights, monkeypatch):
    copy_weights({BASE_FILE: BASE_FILE, LORA_FILE: GATES_FILE, GATES_FILE: LORA_FILE})
    assert_refused_before_comfyui_work(monkeypatch, ANYCROWD, "not an AnyCrowd LoRA file")


def test_is_changed_follows_the_files(copy_weights, random_weights):
    folder = copy_weights({name: name for name in (BASE_FILE, LORA_FILE, GATES_FILE)})
    before = Loader.IS_CHANGED(ANYCROWD)
    assert Loader.IS_CHANGED(ANYCROWD) == before
    (folder / GATES_FILE).write_bytes((random_weights / GATES_FILE).read_bytes() + b" ")
    assert Loader.IS_CHANGED(ANYCROWD) != before
    assert Loader.IS_CHANGED(BASE) != Loader.IS_CHANGED(ANYCROWD)


# --- what the node does with the files (ComfyUI calls faked) --------------------------------

def test_anycrowd_variant_loads_the_base_applies_the_lora_at_strength_1_and_returns_the_gates(weights, monkeypatch):
    from safetensors.torch import load_file

    fake = FakeComfy(monkeypatch)
    model, gates, vae, conditioning, info = Loader().load(ANYCROWD)
    lora_keys = sorted(load_file(str(weights / LORA_FILE)))
    assert fake.calls == [("load", weights / BASE_FILE), ("lora", lora_keys, 1.0), ("shift", MINI_SAMPLING["shift"])]
    assert model == "model+lora+shift"
    assert isinstance(gates, GateBank)
    saved = load_file(str(weights / GATES_FILE))
    assert all(torch.equal(v, saved[k]) for k, v in gates.state_dict().items())
    assert "tsda" in info and LORA_FILE in info and "not photorealism" in info


def test_base_variant_applies_no_lora_and_returns_no_gates(weights, monkeypatch):
    fake = FakeComfy(monkeypatch)
    model, gates, _vae, _cond, info = Loader().load(BASE)
    assert fake.calls == [("load", weights / BASE_FILE), ("shift", MINI_SAMPLING["shift"])]
    assert gates is None and "masked" in info and LORA_FILE not in info


def test_conditioning_is_the_miniatures_empty_prompt_and_the_vae_runs_mini_codec(weights, monkeypatch):
    FakeComfy(monkeypatch)
    _model, _gates, vae, conditioning, _info = Loader().load(BASE)
    assert len(conditioning) == 1 and conditioning[0][1] == {}
    assert torch.equal(conditioning[0][0], mini_text_embedding(MINI_CONFIG.text_dim))
    assert conditioning[0][0].shape == (1, 1, 4096)
    assert isinstance(vae, CodecVAE) and isinstance(vae.codec, MiniCodec)


def test_without_comfyui_the_node_says_it_needs_comfyui(weights):
    if importlib.util.find_spec("comfy") is not None:
        pytest.skip("ComfyUI is importable in this process")
    with pytest.raises(AnyCrowdError, match="needs ComfyUI"):
        Loader().load(BASE)


# --- the VAE over MiniCodec ------------------------------------------------------------------

def test_vae_encode_and_decode_have_comfyuis_wan_vae_shapes_and_equal_mini_codec(scene):
    vae, codec = CodecVAE(MiniCodec()), MiniCodec()
    z = vae.encode(scene.video)
    assert z.shape == (1, 16, 3, 16, 24) and z.dtype == torch.float32
    assert torch.equal(z[0], codec.encode(scene.video))
    frames = vae.decode(z)
    assert frames.shape == (1, 9, 128, 192, 3)
    assert torch.equal(frames[0], codec.decode(z[0]))
    assert torch.equal(vae.decode_tiled(z, 8, 8, 2), frames) and torch.equal(vae.encode_tiled(scene.video, 64, 64, 8), z)


def test_vae_encodes_and_decodes_batches_of_videos(scene):
    vae = CodecVAE(MiniCodec())
    two = torch.stack([scene.video, scene.pose_video])
    z = vae.encode(two)
    assert z.shape == (2, 16, 3, 16, 24)
    assert torch.equal(z[1:], vae.encode(scene.pose_video))
    assert vae.decode(z).shape == (2, 9, 128, 192, 3)


def test_vae_crops_like_comfyuis_wan_vae(scene):
    """Sides centre-cropped to multiples of 8 (vae_encode_crop_pixels), frames cut to 4n+1."""
    vae = CodecVAE(MiniCodec())
    padded = torch.nn.functional.pad(scene.video.movedim(-1, 1), (2, 3, 1, 2), value=0.3).movedim(1, -1)
    longer = torch.cat([padded, padded[:3]])  # 12 frames, 197x131: offsets (2, 1) drop the padding
    assert torch.equal(vae.encode(longer), vae.encode(scene.video))
    assert vae.encode(scene.video[:1]).shape == (1, 16, 1, 16, 24)  # a single image


def test_vae_reports_wans_compression_like_comfy_sd_vae():
    vae = CodecVAE(MiniCodec())
    assert (vae.spacial_compression_encode(), vae.spacial_compression_decode(), vae.temporal_compression_decode()) == (8, 8, 4)
    assert vae.latent_channels == 16 and vae.latent_dim == 3 and vae.output_channels == 3
    assert vae.downscale_ratio[0](81) == 21 and vae.upscale_ratio[0](21) == 81 and vae.downscale_ratio[1:] == (8, 8)
    vae.throw_exception_if_invalid()


def test_vae_refuses_latents_of_other_shapes_and_has_no_weights_to_save():
    vae = CodecVAE(MiniCodec(), name="AnyCrowd-Mini codec")
    with pytest.raises(AnyCrowdError, match=r"AnyCrowd-Mini codec decodes Wan 2.1 video latents"):
        vae.decode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(AnyCrowdError, match="no|without"):
        vae.get_sd()


def test_iilr_encode_with_the_mini_vae_gives_the_headless_iilr_conditioning(scene):
    """The node path through the VAE socket equals encode_iilr on MiniCodec (what the headless
    pipeline and the binding benchmark run)."""
    from anycrowd_core.decoupler import decouple_instances

    nodes = pack.nodes
    cond = [[mini_text_embedding(4096), {}]]
    instances = nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float())[0]
    positive, negative, latent, trim, _layout = nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        cond, cond, CodecVAE(MiniCodec()), instances, scene.pose_video, 192, 128, 9, 1, 1.0, boxes=boxes_text(scene.track_boxes))
    headless = comfy_vace_inputs(encode_iilr(MiniCodec(), decouple_instances(scene.reference_image, scene.reference_masks),
                                             scene.pose_video))
    assert trim == headless.trim_latent == 3
    assert torch.equal(positive[0][1]["vace_frames"][0], headless.vace_frames)
    assert torch.equal(positive[0][1]["vace_mask"][0], headless.vace_mask)
    assert positive[0][1]["vace_frames"][0] is negative[0][1]["vace_frames"][0]
    assert latent["samples"].shape == (1, *headless.latent.shape[1:])


# --- the shipped CPU workflow ----------------------------------------------------------------

def test_the_cpu_workflow_samples_with_the_miniatures_settings():
    prompt = json.loads((REPO / "workflows" / "anycrowd_mini_cpu_api.json").read_text())
    by_type = {e["class_type"]: (nid, e["inputs"]) for nid, e in prompt.items()}
    loader_id, loader = by_type[KEY]
    _, sampler = by_type["AnyCrowdSampler"]
    _, encode = by_type["AnyCrowdIILREncode"]
    assert loader == {"variant": ANYCROWD}
    assert (sampler["attention_mode"], sampler["agf_mode"], sampler["gates"]) == ("tsda", "gated", [loader_id, 1])
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"], sampler["shift"]) == (
        MINI_SAMPLING["steps"], MINI_SAMPLING["cfg"], MINI_SAMPLING["sampler"], "simple", MINI_SAMPLING["shift"])
    assert sampler["model"] == [loader_id, 0]
    assert (encode["width"], encode["height"], encode["length"]) == (192, 128, 9)
    assert encode["positive"] == encode["negative"] == [loader_id, 3] and encode["vae"] == [loader_id, 2]
    assert by_type["VAEDecode"][1]["vae"] == [loader_id, 2]
    assert not {"UNETLoader", "CLIPLoader", "VAELoader", "CLIPTextEncode"} & set(by_type)
