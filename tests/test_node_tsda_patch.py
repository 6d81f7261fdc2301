"""AnyCrowd TSDA Patch node and the model patch, without ComfyUI: node declaration, input
validation, readable errors, and the patched layer's fallback on a stand-in attention module.
Behaviour on ComfyUI's real Wan VACE model: tests/test_comfy_patch_host.py."""

import importlib
import inspect
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from anycrowd_core.attention import AGF_MODES, MODES, AnyCrowdAttention
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from pack import load_pack

pack = load_pack()
node_mod = importlib.import_module(f"{pack.__name__}.nodes.node_tsda_patch")
patch_mod = importlib.import_module(f"{pack.__name__}.nodes.comfy_patch")
node_types = importlib.import_module(f"{pack.__name__}.nodes.node_types")
Node = node_mod.AnyCrowdTSDAPatch


def small_layout(height=64, width=64, frames=5):
    ref = torch.zeros(2, height, width, dtype=torch.bool)
    ref[0, :, : width // 2] = True
    ref[1, :, width // 2 :] = True
    boxes = torch.tensor([[[0, 0, 40, height]] * frames, [[24, 0, width, height]] * frames], dtype=torch.float32)
    return build_token_layout(ref, boxes, [0, 1])


def all_inputs():
    spec = Node.INPUT_TYPES()
    return {**spec["required"], **spec.get("optional", {})}


def test_node_is_registered_under_its_class_key():
    assert pack.NODE_CLASS_MAPPINGS["AnyCrowdTSDAPatch"] is Node
    assert "AnyCrowdTSDAPatch" in pack.NODE_DISPLAY_NAME_MAPPINGS


def test_declaration_is_consistent():
    assert Node.CATEGORY == "AnyCrowd/sampling"
    assert Node.RETURN_TYPES == ("MODEL",)
    assert len(Node.RETURN_NAMES) == len(Node.RETURN_TYPES) == len(Node.OUTPUT_TOOLTIPS)
    assert Node.DESCRIPTION.strip()
    params = inspect.signature(getattr(Node, Node.FUNCTION)).parameters
    spec = Node.INPUT_TYPES()
    assert list(params)[1:] == [*spec["required"], *spec["optional"]]
    for name in spec["optional"]:
        assert params[name].default is None


def test_every_input_has_a_tooltip_and_valid_default():
    for name, (kind, opts) in all_inputs().items():
        assert opts.get("tooltip", "").strip(), name
        if isinstance(kind, list):
            assert opts["default"] in kind, name


def test_inputs_use_the_shared_type_names_and_the_core_modes():
    inputs = all_inputs()
    assert inputs["layout"][0] == node_types.LAYOUT == "ANYCROWD_LAYOUT"
    assert inputs["gates"][0] == node_types.GATES == "ANYCROWD_GATES"
    assert inputs["model"][0] == "MODEL"
    assert set(inputs["attention_mode"][0]) == set(MODES)
    assert inputs["attention_mode"][1]["default"] == "masked"
    assert "tsda" in inputs["attention_mode"][1]["tooltip"] and "trained" in inputs["attention_mode"][1]["tooltip"]
    assert set(inputs["agf_mode"][0]) == set(AGF_MODES)
    assert inputs["branches"][0] == ["both", "dit", "vace"]


def test_validate_inputs_accepts_every_offered_combination():
    inputs = all_inputs()
    for mode in inputs["attention_mode"][0]:
        for agf in inputs["agf_mode"][0]:
            for branches in inputs["branches"][0]:
                assert Node.VALIDATE_INPUTS(attention_mode=mode, agf_mode=agf, branches=branches) is True


@pytest.mark.parametrize("bad", ["attention_mode", "agf_mode", "branches"])
def test_validate_inputs_names_the_bad_value_and_the_choices(bad):
    values = dict(attention_mode="masked", agf_mode="gated", branches="both")
    values[bad] = "sparse"
    msg = Node.VALIDATE_INPUTS(**values)
    assert isinstance(msg, str) and bad in msg and "'sparse'" in msg and "choose one of" in msg


def test_validate_inputs_only_names_widget_inputs():
    # ComfyUI passes linked inputs (model, layout) as None at validation time
    names = list(inspect.signature(Node.VALIDATE_INPUTS).parameters)
    assert names == ["attention_mode", "agf_mode", "branches"]


class Flux(nn.Module):  # stands in for ComfyUI's model_base.Flux
    def __init__(self):
        super().__init__()
        self.diffusion_model = nn.Module()


class WAN21(nn.Module):  # a plain Wan 2.1 (no vace_blocks)
    def __init__(self):
        super().__init__()
        self.diffusion_model = nn.Module()
        self.diffusion_model.blocks = nn.ModuleList()


@pytest.mark.parametrize(
    "model,named",
    [
        (SimpleNamespace(model=WAN21()), "a plain Wan 2.1 model"),
        (SimpleNamespace(model=Flux()), "a Flux model"),
        ("not a model", "a str (not a ComfyUI MODEL)"),
    ],
)
def test_non_vace_model_error_names_what_it_got_and_the_fix(model, named):
    with pytest.raises(AnyCrowdError) as err:
        Node().patch(model, small_layout(), "masked", "gated", "both")
    msg = str(err.value)
    assert named in msg and "Wan 2.1 VACE" in msg
    assert "wan2.1_vace_1.3B_fp16.safetensors" in msg and "Load Diffusion Model" in msg


def test_latent_check_accepts_the_layout_latent_and_rejects_another_resolution():
    layout = small_layout()
    frames = layout.num_ref_frames + layout.video_frames
    patch_mod.check_latent_matches_layout(torch.zeros(1, 16, frames, 8, 8), layout)
    with pytest.raises(AnyCrowdError, match=r"built for 64x64 px.*latent is 96x64 px with 5 latent frames"):
        patch_mod.check_latent_matches_layout(torch.zeros(1, 16, frames, 8, 12), layout)
    with pytest.raises(AnyCrowdError, match="same width, height, length and characters"):
        patch_mod.check_latent_matches_layout(torch.zeros(1, 16, frames + 1, 8, 8), layout)


class StandInSelfAttention(nn.Module):
    """Same submodule names and forward signature as ComfyUI's WanSelfAttention."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(dim), nn.RMSNorm(dim)

    def forward(self, x, freqs, transformer_options={}):
        q, k, v = self.norm_q(self.q(x)), self.norm_k(self.k(x)), self.v(x)
        return self.o(torch.softmax(q @ k.transpose(1, 2) * freqs, -1) @ v)


def test_forward_patch_keeps_the_layer_and_unwraps_an_earlier_anycrowd_patch():
    torch.manual_seed(0)
    orig = StandInSelfAttention()
    patch = patch_mod.AnyCrowdSelfAttentionForward(orig, orig.forward, "vace", 1)
    assert (patch.branch, patch.index, patch.module) == ("vace", 1, orig)
    # re-patching falls back to what was there before AnyCrowd, with one AnyCrowd level
    again = patch_mod.AnyCrowdSelfAttentionForward(orig, patch, "vace", 1)
    assert again.fallback == orig.forward


def test_forward_patch_calls_an_earlier_packs_patch_when_it_falls_back():
    orig = StandInSelfAttention()
    calls = []

    def other_pack_forward(x, freqs, transformer_options={}):
        calls.append(x.shape)
        return orig.forward(x, freqs, transformer_options=transformer_options)

    patch = patch_mod.AnyCrowdSelfAttentionForward(orig, other_pack_forward, "dit", 0)
    patch(torch.randn(1, 5, 8), torch.tensor(0.5), transformer_options={})
    assert calls == [(1, 5, 8)]


def test_patched_layer_falls_back_bit_exactly_without_hook_in_global_mode_and_other_branches():
    torch.manual_seed(0)
    orig = StandInSelfAttention()
    patched = patch_mod.AnyCrowdSelfAttentionForward(orig, orig.forward, "vace", 0)
    x, freqs = torch.randn(2, 5, 8), torch.tensor(0.7)
    expected = orig(x, freqs)
    layout = small_layout()
    for options in (
        {},
        {"anycrowd": AnyCrowdAttention(layout, mode="global")},
        {"anycrowd": AnyCrowdAttention(layout, mode="masked", branches=("dit",))},
    ):
        assert torch.equal(patched(x, freqs, transformer_options=options), expected)


def test_validate_inputs_accepts_widgets_converted_to_links():
    # ComfyUI passes None for an input that is linked instead of set as a widget
    assert Node.VALIDATE_INPUTS(attention_mode=None, agf_mode="gated", branches=None) is True
