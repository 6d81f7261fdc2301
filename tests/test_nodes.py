"""AnyCrowd nodes without ComfyUI: registration, declared sockets, and the node functions on
tiny tensors with a test VAE (ComfyUI's VAE API around anycrowd_core.codec.TestCodec)."""

import inspect
import os
from types import SimpleNamespace

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import comfy_vace_inputs, encode_iilr
from anycrowd_core.layout import TokenLayout, build_token_layout
from anycrowd_core.scenes import make_scene
from node_inputs import boxes_text, text_cond
from pack import load_pack, run_fresh_python
from comfy_vae_stand_in import TestVAE

pack = load_pack()
nodes = pack.nodes
# Every class key the issues name (workflows and other packs rely on them), in registration order.
KEYS = (
    "AnyCrowdInstanceDecoupler", "AnyCrowdIILREncode", "AnyCrowdTSDAPatch", "AnyCrowdSampler", "AnyCrowdCumulativeCFG",
    "AnyCrowdPoseExtractor", "AnyCrowdPoseFromKeypoints", "AnyCrowdMasksFromPoses", "AnyCrowdIdentityMasks",
    "AnyCrowdFaceControl", "AnyCrowdLongVideoSampler", "AnyCrowdLoadAdapter", "AnyCrowdMiniLoader",
)




@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=9, height=64, width=96, seed=0, scenario="crossing")


def decouple(scene):
    return nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(scene.reference_image[None], scene.reference_masks.float())


def encode(scene, **overrides):
    instances = decouple(scene)[0]
    args = dict(
        positive=text_cond(1.0), negative=text_cond(-1.0), vae=TestVAE(), instances=instances,
        control_video=scene.pose_video, width=96, height=64, length=9, batch_size=1, strength=0.8,
        boxes=boxes_text(scene.track_boxes), binding="",
    )
    args.update(overrides)
    return nodes.node_iilr_encode.AnyCrowdIILREncode().encode(**args)


# --- registration and declared sockets -------------------------------------------------

def test_pack_registers_every_node_with_display_names():
    assert tuple(pack.NODE_CLASS_MAPPINGS) == KEYS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(KEYS)
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.__name__ == key and not hasattr(cls, "MISSING_DEPENDENCY")


@pytest.mark.parametrize("key", KEYS)
def test_node_declarations_are_consistent(key):
    cls = pack.NODE_CLASS_MAPPINGS[key]
    spec = {s.key: s for s in nodes.NODE_SPECS}[key]
    assert cls.CATEGORY.startswith("AnyCrowd/") and cls.CATEGORY == spec.category
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert tuple(cls.RETURN_TYPES) == spec.return_types
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) and tuple(cls.RETURN_NAMES) == spec.return_names
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}
    function = getattr(cls, cls.FUNCTION)
    params = inspect.signature(function).parameters
    for section in ("required", "optional"):
        for name, decl in types.get(section, {}).items():
            assert name in params, f"{key}.{cls.FUNCTION} does not take input {name}"
            assert isinstance(decl[1].get("tooltip"), str) and decl[1]["tooltip"], f"{key}.{name} has no tooltip"
            if section == "optional":
                assert params[name].default is not inspect.Parameter.empty, f"optional {name} needs a default"
            if isinstance(decl[0], list) and "default" in decl[1]:
                assert decl[1]["default"] in decl[0]
    declared = set(types.get("required", {})) | set(types.get("optional", {}))
    assert {p for p in params if p != "self"} <= declared
    if hasattr(cls, "VALIDATE_INPUTS"):
        assert set(inspect.signature(cls.VALIDATE_INPUTS).parameters) <= declared


def test_custom_socket_names():
    t = nodes.node_types
    assert (t.INSTANCES, t.LAYOUT, t.GATES) == ("ANYCROWD_INSTANCES", "ANYCROWD_LAYOUT", "ANYCROWD_GATES")


def test_a_node_whose_dependency_is_missing_becomes_a_placeholder_naming_the_pip_package(monkeypatch):
    real = nodes.importlib.import_module

    def fake_import(name, package=None):
        if name == ".node_decoupler":
            raise ModuleNotFoundError("No module named 'cv2'", name="cv2")
        return real(name, package)

    monkeypatch.setattr(nodes.importlib, "import_module", fake_import)
    classes, names = nodes.load_nodes()
    assert set(classes) == set(KEYS)
    holder = classes["AnyCrowdInstanceDecoupler"]
    assert holder.RETURN_TYPES == ("ANYCROWD_INSTANCES", "IMAGE") and holder.OUTPUT_NODE
    assert holder.INPUT_TYPES() == {"required": {}}
    with pytest.raises(AnyCrowdError, match="pip install opencv-python-headless"):
        getattr(holder(), holder.FUNCTION)()
    assert classes["AnyCrowdIILREncode"] is pack.NODE_CLASS_MAPPINGS["AnyCrowdIILREncode"]


def test_package_imports_in_a_fresh_python_without_opencv():
    # Every node module reaches cv2 through anycrowd_core; blocking it must not break the import.
    code = (
        "import sys; sys.modules['cv2'] = None; sys.path.insert(0, 'tests')\n"
        "from pack import load_pack\n"
        "p = load_pack('ComfyUI_AnyCrowd_nocv2')\n"
        "print(sorted(k for k, c in p.NODE_CLASS_MAPPINGS.items() if hasattr(c, 'MISSING_DEPENDENCY')))\n"
        "print(p.NODE_CLASS_MAPPINGS['AnyCrowdIILREncode'].MISSING_DEPENDENCY)\n"
    )
    stdout = run_fresh_python(code)
    assert "'AnyCrowdIILREncode'" in stdout and "'AnyCrowdInstanceDecoupler'" in stdout
    assert "pip install opencv-python-headless" in stdout


def test_sampler_lists_fall_back_without_comfyui():
    samplers, schedulers = nodes.comfy_runtime.sampler_names()
    types = nodes.node_sampler.AnyCrowdSampler.INPUT_TYPES()["required"]
    assert types["sampler_name"][0] == samplers and "uni_pc" in samplers and "simple" in schedulers


# --- Instance Decoupler ----------------------------------------------------------------

def test_decoupler_returns_instances_and_a_preview_strip(scene):
    ref, preview = decouple(scene)
    n = scene.num_characters
    assert isinstance(ref, nodes.node_decoupler.DecoupledReference)
    assert ref.num_identities == n and ref.image.shape == (64, 96, 3)
    assert preview.shape == (1, 64, (n + 1) * 96 + 2 * n, 3)
    inside = scene.reference_masks[0]
    assert torch.equal(ref.instances.identity_images[0][inside], scene.reference_image[inside])


def test_decoupler_resizes_lower_resolution_masks_nearest(scene):
    half = scene.reference_masks.float()[:, ::2, ::2]
    ref, _ = nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(scene.reference_image[None], half)
    assert ref.masks.shape == scene.reference_masks.shape
    assert set(ref.masks.unique().tolist()) <= {0.0, 1.0}


def test_decoupler_refuses_masks_of_another_shape(scene):
    with pytest.raises(AnyCrowdError, match="different shape"):
        nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(scene.reference_image[None], torch.ones(2, 64, 64))


def test_decoupler_reassign_is_seeded(scene):
    node = nodes.node_decoupler.AnyCrowdInstanceDecoupler()
    a = node.decouple(scene.reference_image[None], scene.reference_masks.float(), True, 3)[0]
    b = node.decouple(scene.reference_image[None], scene.reference_masks.float(), True, 3)[0]
    assert torch.equal(a.instances.identity_images, b.instances.identity_images)


# --- IILR Encode -----------------------------------------------------------------------

def test_iilr_encode_appends_exactly_the_core_vace_conditioning(scene):
    positive, negative, latent, trim, layout = encode(scene)
    ref = decouple(scene)[0]
    expected = comfy_vace_inputs(encode_iilr(TestCodec(), ref.instances, scene.pose_video, strength=0.8))
    for cond, value in ((positive, 1.0), (negative, -1.0)):
        assert len(cond) == 1 and torch.equal(cond[0][0], torch.full((1, 4, 32), value))
        opts = cond[0][1]
        assert torch.equal(opts["vace_frames"][0], expected.vace_frames)
        assert torch.equal(opts["vace_mask"][0], expected.vace_mask)
        assert opts["vace_strength"] == [0.8] and "pooled_output" in opts
    assert latent["samples"].shape == (1, 16, 3 + 3, 8, 12) and not latent["samples"].any()
    assert trim == 3 == layout.num_ref_frames


def test_iilr_encode_leaves_the_input_conditioning_untouched(scene):
    positive = text_cond()
    encode(scene, positive=positive)
    assert set(positive[0][1]) == {"pooled_output"}


def test_iilr_encode_appends_after_earlier_vace_inputs(scene):
    earlier = [[torch.zeros(1, 4, 32), {"vace_frames": ["x"], "vace_mask": ["m"], "vace_strength": [1.0]}]]
    positive = encode(scene, positive=earlier)[0]
    assert positive[0][1]["vace_frames"][0] == "x" and len(positive[0][1]["vace_frames"]) == 2
    assert positive[0][1]["vace_strength"] == [1.0, 0.8]


def test_iilr_encode_layout_matches_the_core_layout(scene):
    layout = encode(scene)[4]
    expected = build_token_layout(scene.reference_masks, scene.track_boxes, [0, 1])
    assert isinstance(layout, TokenLayout)
    for a, b in zip(layout.vid_tokens + layout.ref_tokens, expected.vid_tokens + expected.ref_tokens):
        assert torch.equal(a, b)


def test_iilr_encode_track_masks_give_the_boxes_of_the_masks(scene):
    masks = scene.track_masks.float().reshape(-1, 64, 96)
    layout = encode(scene, boxes="", track_masks=masks)[4]
    from anycrowd_core.boxes import boxes_from_masks

    expected = build_token_layout(scene.reference_masks, boxes_from_masks(scene.track_masks), [0, 1])
    for a, b in zip(layout.vid_tokens, expected.vid_tokens):
        assert torch.equal(a, b)


def test_iilr_encode_resizes_control_video_boxes_and_reference_to_width_height(scene):
    big_video = scene.pose_video.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 192x128, boxes x2
    big_boxes = boxes_text(scene.track_boxes * 2)
    layout = encode(scene, control_video=big_video, boxes=big_boxes)[4]
    native = encode(scene)[4]
    for a, b in zip(layout.vid_tokens, native.vid_tokens):
        assert torch.equal(a, b)
    small = encode(scene, width=48, height=32)
    assert small[2]["samples"].shape == (1, 16, 6, 4, 6)
    assert small[4].frame_size == (32, 48)


def test_iilr_encode_binding_repeats_identities(scene):
    import json

    text = json.dumps(json.loads(boxes_text(scene.track_boxes)) + [[0, 0, 16, 16]])
    layout = encode(scene, boxes=text, binding="0,1,0")[4]
    assert layout.identity_tracks == ((0, 2), (1,))


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (dict(length=13), "shorter than length = 13"),
        (dict(length=5), "longer than length = 5"),
        (dict(width=90), "multiples of 16"),
        (dict(length=8), "4n+1"),
        (dict(boxes="1,1,20,20"), "1 box tracks but 2 characters"),
        (dict(binding="0,5"), "refers to characters [5]"),
        (dict(binding="0"), "has 1 entries but there are 2 box tracks"),
        (dict(boxes=""), "No per-character boxes"),
        (dict(track_masks=torch.zeros(18, 64, 96)), "Both track_masks and boxes"),
        (dict(boxes="", track_masks=torch.zeros(17, 64, 96)), "not a multiple of the length"),
    ],
)
def test_iilr_encode_errors_in_plain_words(scene, overrides, fragment):
    with pytest.raises(AnyCrowdError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        encode(scene, **overrides)


def test_iilr_encode_validate_inputs_catches_widget_mistakes_early():
    validate = nodes.node_iilr_encode.AnyCrowdIILREncode.VALIDATE_INPUTS
    assert validate(width=96, height=64, length=9, boxes="1,1,20,20", binding="0") is True
    assert validate() is True  # linked inputs arrive as None
    default = nodes.node_iilr_encode.EXAMPLE_BOXES  # comment only: fine while track_masks may be linked
    assert validate(length=9, boxes=default) is True
    assert "multiples of 16" in validate(width=100, height=64)
    assert "4n+1" in validate(length=10)
    assert "past the last frame" in validate(length=9, boxes="0: 1,1,4,4; 9: 1,1,4,4")
    assert "not a list" in validate(binding="a,b")


# --- Sampler ---------------------------------------------------------------------------

def fake_wan_vace():
    dm = SimpleNamespace(blocks=[], vace_blocks=[])
    return SimpleNamespace(model=SimpleNamespace(diffusion_model=dm))


def sampler_args(layout, latent, **overrides):
    args = dict(
        model=fake_wan_vace(), positive=text_cond(), negative=text_cond(), latent=latent, layout=layout,
        attention_mode="masked", agf_mode="gated", seed=0, steps=2, cfg=1.0, sampler_name="euler",
        scheduler="simple", shift=8.0, denoise=1.0,
    )
    args.update(overrides)
    return args


def test_sampler_refuses_a_layout_built_for_another_size_before_sampling(scene):
    _, _, latent, _, layout = encode(scene)
    other = {"samples": torch.zeros(1, 16, 6, 4, 6)}
    with pytest.raises(AnyCrowdError, match="layout was built for 96x64"):
        nodes.node_sampler.AnyCrowdSampler().sample(**sampler_args(layout, other))
    longer = {"samples": torch.zeros(1, 16, 7, 8, 12)}
    with pytest.raises(AnyCrowdError, match="same AnyCrowd IILR Encode"):
        nodes.node_sampler.AnyCrowdSampler().sample(**sampler_args(layout, longer))


def test_sampler_refuses_a_model_that_is_not_wan_vace(scene):
    _, _, latent, _, layout = encode(scene)
    plain = SimpleNamespace(model=SimpleNamespace(diffusion_model=SimpleNamespace(blocks=[])))
    with pytest.raises(AnyCrowdError, match="Wan 2.1 VACE"):
        nodes.node_sampler.AnyCrowdSampler().sample(**sampler_args(layout, latent, model=plain))


def test_sampler_validate_inputs():
    validate = nodes.node_sampler.AnyCrowdSampler.VALIDATE_INPUTS
    assert validate(attention_mode="tsda", agf_mode="max", steps=4) is True
    assert "choose one of" in validate(attention_mode="dense")
    assert "at least 1" in validate(steps=0)


# --- Wan 2.2 VACE-Fun A14B: two experts (the sampling itself: tests/test_nodes_host.py) -----------

def expert_model(dim=64, layers=4, vace=2, **record):
    """A fake MODEL with Wan VACE blocks and, optionally, what AnyCrowd Load Adapter recorded."""
    dm = SimpleNamespace(dim=dim, blocks=[None] * layers, vace_blocks=[None] * vace)
    options = {"transformer_options": {nodes.comfy_patch.ADAPTER_KEY: record} if record else {}}
    return SimpleNamespace(model=SimpleNamespace(diffusion_model=dm), model_options=options)


def test_sampler_declares_the_low_noise_expert_inputs_after_the_guidance_widgets():
    optional = nodes.node_sampler.AnyCrowdSampler.INPUT_TYPES()["optional"]
    assert list(optional)[-3:] == ["low_noise_model", "low_noise_gates", "switch_boundary"]
    assert optional["low_noise_model"][0] == "MODEL" and optional["low_noise_gates"][0] == "ANYCROWD_GATES"
    assert optional["switch_boundary"][1]["default"] == 0.875  # Wan 2.2 T2V-A14B, the base of VACE-Fun
    params = inspect.signature(nodes.node_sampler.AnyCrowdSampler.sample).parameters
    assert params["switch_boundary"].default == 0.875 and params["low_noise_model"].default is None
    validate = nodes.node_sampler.AnyCrowdSampler.VALIDATE_INPUTS
    assert validate(switch_boundary=0.9) is True and "between 0 and 1" in validate(switch_boundary=1.5)


def test_switch_step_counts_the_steps_that_start_at_or_above_the_boundary():
    switch = nodes.wan22_experts.expert_switch_step
    sigmas = torch.tensor([1.0, 0.96, 0.889, 0.875, 0.727, 0.0])  # 5 steps
    assert switch(sigmas, 0.875) == 4  # t >= boundary * 1000 runs the high-noise expert (Wan 2.2)
    assert switch(sigmas, 0.9) == 2 and switch(sigmas, 0.0) == 5 and switch(sigmas, 1.0) == 1
    assert switch(torch.tensor([0.5, 0.2, 0.0]), 0.875) == 0  # a low-denoise schedule: low-noise expert only


def test_an_expert_pair_is_checked_in_words():
    check = nodes.wan22_experts.check_expert_pair
    check(expert_model(), expert_model())  # stock experts
    check(expert_model(expert="high_noise", family="wan2.2-vace-fun", lora="h.safetensors"),
          expert_model(expert="low_noise", family="wan2.2-vace-fun", lora="l.safetensors"))
    with pytest.raises(AnyCrowdError, match="'l.safetensors', an adapter for the low-noise expert: the two experts are swapped"):
        check(expert_model(expert="low_noise", family="wan2.2-vace-fun", lora="l.safetensors"), expert_model())
    with pytest.raises(AnyCrowdError, match="low_noise_model carries 'h.safetensors', an adapter for the high-noise"):
        check(expert_model(), expert_model(expert="high_noise", family="wan2.2-vace-fun", lora="h.safetensors"))
    with pytest.raises(AnyCrowdError, match="trained on Wan 2.1 VACE, but a low_noise_model makes this"):
        check(expert_model(expert="none", family="wan2.1-vace", gates="w21_gates.safetensors"), expert_model())
    with pytest.raises(AnyCrowdError, match=r"model \(dim 64, 4 blocks, 2 VACE blocks\) and low_noise_model \(dim 128"):
        check(expert_model(), expert_model(dim=128))


def test_sampler_refuses_a_bad_expert_pair_before_sampling(scene):
    _, _, latent, _, layout = encode(scene)
    swapped = expert_model(expert="low_noise", family="wan2.2-vace-fun", lora="l.safetensors")
    with pytest.raises(AnyCrowdError, match="swapped"):
        nodes.node_sampler.AnyCrowdSampler().sample(**sampler_args(layout, latent, model=swapped),
                                                    low_noise_model=expert_model())
    with pytest.raises(AnyCrowdError, match="low_noise_gates is connected but low_noise_model is not"):
        nodes.node_sampler.AnyCrowdSampler().sample(**sampler_args(layout, latent), low_noise_gates=object())


@pytest.mark.skipif(bool(os.environ.get("COMFYUI_PATH")), reason="checks the message shown without ComfyUI")
def test_shift_needs_comfyui_and_says_so():
    with pytest.raises(AnyCrowdError, match="needs ComfyUI"):
        nodes.comfy_runtime.apply_shift(object(), 5.0)


# --- runtime helpers -------------------------------------------------------------------

def test_conditioning_set_values_copies_and_appends():
    cond = [[torch.zeros(1), {"a": [1]}], [torch.ones(1), {}]]
    out = nodes.comfy_runtime.conditioning_set_values(cond, {"a": [2], "b": 3}, append=True)
    assert out[0][1] == {"a": [1, 2], "b": 3} and out[1][1] == {"a": [2], "b": 3}
    assert cond[0][1] == {"a": [1]} and out[0][0] is cond[0][0]
    replaced = nodes.comfy_runtime.conditioning_set_values(cond, {"a": [2]})
    assert replaced[0][1] == {"a": [2]}


def test_resize_frames_center_crops_then_resizes():
    frames = torch.zeros(1, 4, 8, 3)
    frames[:, :, 2:6] = 1.0  # the centre 4x4 square of a 4x8 frame
    out = nodes.comfy_runtime.resize_frames(frames, 2, 2)
    assert out.shape == (1, 2, 2, 3) and torch.allclose(out, torch.ones_like(out))


def test_vae_codec_adapter_maps_comfy_shapes():
    codec = nodes.codec_vae.ComfyVAECodec(TestVAE())
    frames = torch.rand(5, 16, 16, 3)
    z = codec.encode(frames)
    assert z.shape == (16, 2, 2, 2)
    assert codec.decode(z).shape == (5, 16, 16, 3)
    with pytest.raises(AnyCrowdError, match="connect a VAE"):
        nodes.codec_vae.ComfyVAECodec(object())
