"""Bad inputs at every node function (no ComfyUI): NaN/inf numbers and pixels, wrong ranks,
channels and sizes, empty batches, out-of-range counts and seeds, boxes that leave a character
with no video token, foreign or non-finite adapter files. Each gives an AnyCrowdError that
names the input (widget or socket), never a raw traceback or a silently meaningless result.

The checks live in nodes/input_checks.py and run before any VAE, model or sampler work (the
sampling functions are replaced by ones that fail the test if a bad input reaches them).
"""

from __future__ import annotations

import copy
import logging
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.scenes import make_scene
from comfy_vae_stand_in import TestVAE
from node_inputs import boxes_text, text_cond
from pack import load_pack

pack = load_pack()
nodes = pack.nodes
NAN, INF = float("nan"), float("inf")
H, W, T = 64, 96, 9


def raises(fn, *fragments):
    """Call fn, expect an AnyCrowdError whose message contains every fragment (any case)."""
    with pytest.raises(AnyCrowdError) as info:
        fn()
    message = str(info.value).lower()
    for fragment in fragments:
        assert fragment.lower() in message, f"{fragment!r} not in: {info.value}"
    return str(info.value)


def poke(t: torch.Tensor, value=NAN, index: int = 7) -> torch.Tensor:
    """A copy of t with one element set to value."""
    t = t.clone()
    t.view(-1)[index] = value
    return t


def make_unreachable(monkeypatch, module, names, message: str) -> None:
    """Replace each of `names` in `module` by a function that fails the test with `message`: the
    work a bad input must never reach."""
    def reached(*args, **kwargs):
        raise AssertionError(message)

    for name in names:
        monkeypatch.setattr(module, name, reached)


def pose_keypoint_of(keypoints, height, width):
    """POSE_KEYPOINT frames of people `[P, T, 18, 3]` px."""
    return [{"people": [{"pose_keypoints_2d": [float(v) for v in keypoints[p, t].reshape(-1)]}
                        for p in range(keypoints.shape[0]) if (keypoints[p, t, :, 2] > 0).any()],
             "canvas_width": width, "canvas_height": height} for t in range(keypoints.shape[1])]


@pytest.fixture(scope="module")
def instances(scene):
    return nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float())[0]


@pytest.fixture(scope="module")
def tracks(scene):
    from anycrowd_core.pose.types import NUM_KEYPOINTS, PoseTracks

    n, t = scene.keypoints.shape[:2]
    kp = torch.zeros(n, t, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = scene.keypoints
    present = ~torch.isnan(scene.track_boxes).any(-1)
    kp[~present] = 0
    return PoseTracks(kp, scene.track_boxes.clone(), present, H, W, list(range(n)))


# --- Instance Decoupler -------------------------------------------------------------------

def decouple(scene, **overrides):
    args = dict(image=scene.reference_image[None], masks=scene.reference_masks.float())
    args.update(overrides)
    return nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(**args)


DECOUPLER_CASES = {  # case: (overrides from the reference image and masks, fragments of the message)
    "image_nan": (lambda img, masks: dict(image=poke(img)), ("image", "nan")),
    "image_inf": (lambda img, masks: dict(image=poke(img, INF)), ("image", "non-finite")),
    "image_empty_batch": (lambda img, masks: dict(image=img[:0]), ("image", "empty")),
    "image_none": (lambda img, masks: dict(image=None), ("image", "IMAGE batch")),
    "image_5d": (lambda img, masks: dict(image=img[None]), ("image", "IMAGE batch")),
    "image_0_255": (lambda img, masks: dict(image=img * 255), ("image", "0..1")),
    "masks_nan": (lambda img, masks: dict(masks=poke(masks)), ("masks", "nan")),
    "masks_zero_size": (lambda img, masks: dict(masks=masks[:, :0, :0]), ("masks", "empty")),
    "masks_none": (lambda img, masks: dict(masks=None), ("masks", "MASK batch")),
    "seed_negative": (lambda img, masks: dict(reassign=True, seed=-1), ("seed",)),
    "seed_too_large": (lambda img, masks: dict(reassign=True, seed=2 ** 64), ("seed",)),
}


@pytest.mark.parametrize("case", list(DECOUPLER_CASES))
def test_decoupler_bad_image_masks_seed(scene, case):
    overrides, fragments = DECOUPLER_CASES[case]
    img, masks = scene.reference_image[None], scene.reference_masks.float()
    raises(lambda: decouple(scene, **overrides(img, masks)), *fragments)


def test_decoupler_anchor_frame_past_the_tracks_or_nan(scene, tracks):
    raises(lambda: decouple(scene, align_to=tracks, anchor_frame=100), "anchor_frame 100", "last frame (8)")
    raises(lambda: decouple(scene, align_to=tracks, anchor_frame=NAN), "anchor_frame", "whole number")


def test_decoupler_reference_pose_of_another_shape_or_unreadable(scene, tracks):
    square = pose_keypoint_of(scene.keypoints[:, :1].numpy(), 64, 64)
    raises(lambda: decouple(scene, align_to=tracks, reference_pose=square), "reference_pose", "another shape")
    broken = pose_keypoint_of(scene.keypoints[:, :1].numpy(), H, W)
    broken[0]["canvas_width"] = NAN
    raises(lambda: decouple(scene, align_to=tracks, reference_pose=broken), "reference_pose")


# --- IILR Encode ---------------------------------------------------------------------------

def encode(scene, instances, **overrides):
    args = dict(positive=text_cond(1.0), negative=text_cond(-1.0), vae=TestVAE(), instances=instances,
                control_video=scene.pose_video, width=W, height=H, length=T, batch_size=1, strength=0.8,
                boxes=boxes_text(scene.track_boxes), binding="")
    args.update(overrides)
    return nodes.node_iilr_encode.AnyCrowdIILREncode().encode(**args)


def track_masks(scene):
    return scene.track_masks.float().reshape(-1, H, W)


IILR_CASES = {  # case: (overrides from the scene, fragments of the message)
    "strength_nan": (lambda s: dict(strength=NAN), ("strength", "nan")),
    "strength_inf": (lambda s: dict(strength=INF), ("strength", "inf")),
    "video_nan": (lambda s: dict(control_video=poke(s.pose_video)), ("control_video", "nan")),
    "video_inf": (lambda s: dict(control_video=poke(s.pose_video, -INF)), ("control_video", "non-finite")),
    "video_zero_width": (lambda s: dict(control_video=s.pose_video[:, :, :0]), ("control_video", "empty")),
    "video_zero_frames": (lambda s: dict(control_video=s.pose_video[:0]), ("control_video", "empty")),
    "batch_size_0": (lambda s: dict(batch_size=0), ("batch_size",)),
    "batch_size_negative": (lambda s: dict(batch_size=-1), ("batch_size",)),
    "width_nan": (lambda s: dict(width=NAN), ("width", "whole number")),
    "width_fraction": (lambda s: dict(width=96.5), ("width", "whole number")),
    "track_masks_nan": (lambda s: dict(boxes="", track_masks=poke(track_masks(s))), ("track_masks", "nan")),
    "track_masks_other_shape": (lambda s: dict(boxes="", track_masks=torch.ones(2 * T, 64, 64)),
                                ("track_masks", "another shape")),
    "control_masks_nan": (lambda s: dict(control_masks=poke(torch.ones(T, H, W))), ("control_masks", "nan")),
    "control_masks_0_255": (lambda s: dict(control_masks=torch.full((T, H, W), 255.0)), ("control_masks", "0..1")),
    "positive_none": (lambda s: dict(positive=None), ("positive", "CONDITIONING")),
    "negative_malformed": (lambda s: dict(negative=[[torch.zeros(1)]]), ("negative", "CONDITIONING")),
}


@pytest.mark.parametrize("case", list(IILR_CASES))
def test_iilr_encode_bad_numbers_pixels_masks_and_conditioning(scene, instances, case):
    overrides, fragments = IILR_CASES[case]
    raises(lambda: encode(scene, instances, **overrides(scene)), *fragments)


@pytest.mark.parametrize("boxes,binding,name", [
    ("-1000,-1000,-900,-900\n0,0,30,30", "", "boxes line 0 (character A, index 0)"),  # left of and above the frame
    ("200,0,300,60\n0,0,30,30", "", "boxes line 0 (character A, index 0)"),  # right of the 96 px wide frame
    ("0,0,30,30\n0: none", "", "boxes line 1 (character B, index 1)"),  # absent from frame 0 on, never back
    ("0,0,30,30\n40,0,90,60\n500,0,600,60", "0,1,1", "boxes line 2 (character B, index 1)"),  # one of B's two
    ("0,0,30,30\n0: 0,0,30,30; 1: none", "", None),  # present in frame 0: fine
])
def test_iilr_encode_a_track_whose_boxes_never_touch_the_frame_is_named(scene, instances, boxes, binding, name):
    if name is None:
        encode(scene, instances, boxes=boxes, binding=binding)
        return
    message = raises(lambda: encode(scene, instances, boxes=boxes, binding=binding), name,
                     "no box inside the 96x64 output frame")
    assert "binding" in message


def test_iilr_encode_a_character_whose_track_masks_are_all_empty_is_named(scene, instances):
    masks = track_masks(scene)
    masks[T:] = 0  # character 1 never present
    raises(lambda: encode(scene, instances, boxes="", track_masks=masks), "track_masks character 1 (character B, index 1)")


def test_iilr_encode_warns_about_a_character_bound_to_no_track(scene, instances, caplog):
    with caplog.at_level(logging.WARNING):
        encode(scene, instances, binding="0,0")
    assert any("character B (index 1) is bound to no track" in r.getMessage() for r in caplog.records)


def test_iilr_encode_boxes_parser_failures_name_the_boxes_widget(scene, instances, monkeypatch):
    # whatever a parser bug raises on odd text reaches the user as an error naming the widget
    def broken(*args, **kwargs):
        raise ValueError("cannot convert float NaN to integer")

    monkeypatch.setattr(nodes.track_inputs, "parse_boxes", broken)
    monkeypatch.setattr(nodes.node_iilr_encode, "validate_boxes_text", broken)
    raises(lambda: encode(scene, instances, boxes="0: 1,1,9,9; nan: 1,1,9,9"), "boxes could not be read", "nan: 1,1,9,9")
    message = nodes.node_iilr_encode.AnyCrowdIILREncode.VALIDATE_INPUTS(length=T, boxes="0: 1,1,9,9; nan: 1,1,9,9")
    assert isinstance(message, str) and "boxes could not be read" in message


# --- Sampler ---------------------------------------------------------------------------------

def fake_wan_vace():
    return SimpleNamespace(model=SimpleNamespace(diffusion_model=SimpleNamespace(blocks=[], vace_blocks=[])))


@pytest.fixture(scope="module")
def encoded(scene, instances):
    return encode(scene, instances)


@pytest.fixture
def no_sampling(monkeypatch):
    """Sampling must never be reached by a bad input."""
    make_unreachable(monkeypatch, nodes.node_sampler, ("patch_model", "apply_shift", "sample"),
                     "a bad input reached patching/sampling")


@pytest.mark.parametrize("overrides,fragments", [
    (dict(cfg=NAN), ("cfg", "nan")),
    (dict(cfg=INF), ("cfg", "inf")),
    (dict(cfg=-1.0), ("cfg", ">= 0")),
    (dict(shift=NAN), ("shift", "nan")),
    (dict(shift=INF), ("shift", "inf")),
    (dict(shift=-1.0), ("shift", ">= 0")),
    (dict(denoise=NAN), ("denoise", "nan")),
    (dict(denoise=-0.5), ("denoise", "between 0 and 1")),
    (dict(denoise=1.5), ("denoise", "between 0 and 1")),
    (dict(steps=0), ("steps", ">= 1")),
    (dict(steps=-3), ("steps", ">= 1")),
    (dict(seed=-1), ("seed",)),
    (dict(seed=2 ** 64), ("seed",)),
    (dict(positive=None), ("positive", "CONDITIONING")),
    (dict(negative="text"), ("negative", "CONDITIONING")),
])
def test_sampler_bad_widgets_are_refused_before_sampling(encoded, no_sampling, overrides, fragments):
    positive, negative, latent, _, layout = encoded
    args = dict(model=fake_wan_vace(), positive=positive, negative=negative, latent=latent, layout=layout,
                attention_mode="masked", agf_mode="gated", seed=0, steps=2, cfg=1.0, sampler_name="euler",
                scheduler="simple", shift=8.0, denoise=1.0)
    args.update(overrides)
    raises(lambda: nodes.node_sampler.AnyCrowdSampler().sample(**args), *fragments)


def test_sampler_non_finite_latent_is_refused_before_sampling(encoded, no_sampling):
    positive, negative, latent, _, layout = encoded
    args = dict(model=fake_wan_vace(), positive=positive, negative=negative, layout=layout, attention_mode="masked",
                agf_mode="gated", seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple", shift=8.0,
                denoise=1.0)
    sampler = nodes.node_sampler.AnyCrowdSampler()
    raises(lambda: sampler.sample(latent={"samples": poke(latent["samples"])}, **args), "latent (samples)", "nan")
    with_mask = {"samples": latent["samples"], "noise_mask": torch.full((1,), NAN)}
    raises(lambda: sampler.sample(latent=with_mask, **args), "noise_mask", "nan")


# --- Face Control ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_inputs(scene, instances):
    from test_face_control import plant_tracks, static_centres

    face_tracks = plant_tracks(static_centres((25, 25), (72, 32)))
    boxes = "5,5,45,60\n50,5,90,60"
    positive, negative, _, _, layout = encode(scene, instances, boxes=boxes)
    return dict(positive=positive, negative=negative, vae=TestVAE(), images=scene.video, mode="local",
                strength=0.5, enlarge=1.5, layout=layout, tracks=face_tracks)


@pytest.mark.parametrize("overrides,fragments", [
    (dict(strength=NAN), ("strength", "nan")),
    (dict(strength=INF), ("strength", "inf")),
    (dict(strength=-1.0), ("strength", ">= 0")),
    (dict(enlarge=NAN), ("enlarge", "nan")),
    ("images_nan", ("images", "nan")),
    ("images_nan_no_layout", ("images", "nan")),
    (dict(positive=[["not a tensor", {}]]), ("positive", "CONDITIONING")),
])
def test_face_control_bad_numbers_pixels_and_conditioning(face_inputs, overrides, fragments):
    args = dict(face_inputs)
    if overrides == "images_nan":
        overrides = dict(images=poke(args["images"]))
    elif overrides == "images_nan_no_layout":
        overrides = dict(images=poke(args["images"]), layout=None)
    args.update(overrides)
    raises(lambda: nodes.node_face_control.AnyCrowdFaceControl().apply(**args), *fragments)


def test_face_control_unreadable_pose_keypoint_names_the_input(face_inputs, scene):
    data = pose_keypoint_of(scene.keypoints.numpy(), H, W)
    data[0]["canvas_height"] = INF
    args = dict(face_inputs, tracks=None, pose_keypoint=data, layout=None)
    raises(lambda: nodes.node_face_control.AnyCrowdFaceControl().apply(**args), "pose_keypoint")


# --- Long Video Sampler ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_scene():
    return make_scene(num_characters=2, num_frames=17, height=H, width=W, seed=0, scenario="crossing")


@pytest.fixture
def no_long_run(monkeypatch):
    make_unreachable(monkeypatch, nodes.node_long_video, ("run_token_replace", "run_sliding_window", "apply_shift"),
                     "a bad input reached sampling")


LONG_CASES = {
    "strength_nan": (dict(strength=NAN), ("strength", "nan")),
    "face_strength_inf": (dict(face_strength=INF, face_video="video"), ("face_strength", "inf")),
    "cfg_nan": (dict(cfg=NAN), ("cfg", "nan")),
    "shift_negative": (dict(shift=-1.0), ("shift", ">= 0")),
    "steps_0": (dict(steps=0), ("steps", ">= 1")),
    "seed_negative": (dict(seed=-1), ("seed",)),
    "width_nan": (dict(width=NAN), ("width", "whole number")),
    "segment_frames_nan": (dict(segment_frames=NAN), ("segment_frames", "whole number")),
    "video_nan": (dict(control_video="nan"), ("control_video", "nan")),
    "video_zero_width": (dict(control_video="zero_width"), ("control_video", "empty")),
    "video_one_channel": (dict(control_video="one_channel"), ("control_video", "channel")),
    "face_video_nan": (dict(face_video="nan"), ("face_video", "nan")),
    "face_video_3d": (dict(face_video="3d"), ("face_video", "IMAGE batch")),
    "face_video_not_tensor": (dict(face_video="not a tensor"), ("face_video", "IMAGE batch")),
    "face_video_other_shape": (dict(face_video="square"), ("face_video", "another shape")),
    "boxes_outside": (dict(boxes="500,0,600,60\n0,0,30,30"), ("boxes line 0 (character A, index 0)", "no box inside")),
    "positive_none": (dict(positive=None), ("positive", "CONDITIONING")),
}


@pytest.mark.parametrize("case", list(LONG_CASES))
def test_long_video_bad_inputs_are_refused_before_sampling(long_scene, instances, no_long_run, case):
    overrides, fragments = LONG_CASES[case]
    video, face = long_scene.pose_video, long_scene.video
    pick = {"video": face, "nan": None, "zero_width": video[:, :, :0], "one_channel": video[..., :1], "3d": face[0],
            "not a tensor": "not a tensor", "square": torch.rand(17, 64, 64, 3)}
    overrides = dict(overrides)
    if overrides.get("control_video") == "nan":
        overrides["control_video"] = poke(video)
    elif "control_video" in overrides:
        overrides["control_video"] = pick[overrides["control_video"]]
    if overrides.get("face_video") == "nan":
        overrides["face_video"] = poke(face)
    elif "face_video" in overrides:
        overrides["face_video"] = pick[overrides["face_video"]]
    args = dict(model=fake_wan_vace(), vae=TestVAE(), positive=text_cond(), negative=text_cond(), instances=instances,
                control_video=video, width=W, height=H, strength=1.0, boxes=boxes_text(long_scene.track_boxes),
                binding="", attention_mode="masked", agf_mode="gated", seed=0, steps=2, cfg=3.0,
                sampler_name="euler", scheduler="simple", shift=8.0, strategy="token_replace", segment_frames=9,
                overlap_frames=5)
    args.update(overrides)
    raises(lambda: nodes.node_long_video.AnyCrowdLongVideoSampler().generate(**args), *fragments)


# --- VALIDATE_INPUTS: a NaN or text where a number belongs is a message, not a traceback ------

@pytest.mark.parametrize("key,kwargs,fragment", [
    ("AnyCrowdIILREncode", dict(width=NAN, height=64), "width"),
    ("AnyCrowdIILREncode", dict(length=NAN, boxes="1,1,9,9"), "length"),
    ("AnyCrowdSampler", dict(steps=NAN), "steps"),
    ("AnyCrowdLongVideoSampler", dict(width=96, height=INF), "height"),
    ("AnyCrowdLongVideoSampler", dict(strategy="token_replace", segment_frames=NAN, overlap_frames=5), "segment_frames"),
    ("AnyCrowdFaceControl", dict(strength=NAN), "strength"),
    ("AnyCrowdFaceControl", dict(strength="strong"), "strength"),
])
def test_validate_inputs_reports_non_numbers_in_words(key, kwargs, fragment):
    message = pack.NODE_CLASS_MAPPINGS[key].VALIDATE_INPUTS(**kwargs)
    assert isinstance(message, str) and fragment in message


# --- pose nodes ------------------------------------------------------------------------------

node_pose = getattr(nodes, "node_pose", None)
needs_pose = pytest.mark.skipif(node_pose is None or hasattr(pack.NODE_CLASS_MAPPINGS["AnyCrowdPoseExtractor"],
                                                              "MISSING_DEPENDENCY"),
                                reason="pose nodes unavailable (opencv/onnxruntime missing)")


@needs_pose
@pytest.mark.parametrize("case", ["nan", "empty"])
def test_pose_extractor_bad_video_is_refused_before_loading_models(case):
    video = torch.full((3, 64, 64, 3), 0.5)
    images = poke(video) if case == "nan" else video[:0]
    raises(lambda: node_pose.AnyCrowdPoseExtractor().extract(images, "missing_det.onnx", "missing_pose.onnx"),
           "images", "nan" if case == "nan" else "empty")


@needs_pose
def test_pose_from_keypoints_bad_images_and_canvas(scene):
    node = node_pose.AnyCrowdPoseFromKeypoints()
    data = pose_keypoint_of(scene.keypoints.numpy(), H, W)
    raises(lambda: node.convert(data, images=poke(scene.video)), "images", "nan")
    raises(lambda: node.convert(data, images=torch.rand(T, 64, 64, 3)), "pose_keypoint canvas", "images",
           "another shape")
    raises(lambda: node.convert(data, identities="as_given", images=torch.rand(T, 64, 64, 3)), "another shape")
    broken = copy.deepcopy(data)
    broken[0]["canvas_width"] = NAN
    raises(lambda: node.convert(broken, identities="as_given"), "pose_keypoint")
    raises(lambda: node.convert(broken), "pose_keypoint")


@pytest.fixture(scope="module")
def ref_scene():
    return make_scene(num_characters=2, num_frames=1, height=128, width=192, seed=3, scenario="crossing")


@needs_pose
@pytest.mark.parametrize("overrides,fragments", [
    (dict(margin=NAN), ("margin", "nan")),
    (dict(margin=INF), ("margin", "inf")),
    (dict(margin=-0.5), ("margin", ">= 0")),
    (dict(iterations=0), ("iterations", ">= 1")),
    (dict(iterations=-2), ("iterations", ">= 1")),
    (dict(frame=NAN), ("frame", "whole number")),
    ("image_nan", ("image", "nan")),
    ("image_empty", ("image", "empty")),
    ("image_0_255", ("image", "0..1")),
    ("pose_other_shape", ("pose_keypoint canvas", "another shape")),
    ("pose_canvas_inf", ("pose_keypoint",)),
])
def test_masks_from_poses_bad_widgets_image_and_poses(ref_scene, overrides, fragments):
    s = ref_scene
    data = pose_keypoint_of(s.reference_keypoints[:, None].numpy(), 128, 192)
    args = dict(image=s.reference_image[None], detector_model="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx",
                pose_keypoint=data)
    if overrides == "image_nan":
        overrides = dict(image=poke(args["image"]))
    elif overrides == "image_empty":
        overrides = dict(image=args["image"][:0])
    elif overrides == "image_0_255":
        overrides = dict(image=args["image"] * 255)
    elif overrides == "pose_other_shape":
        overrides = dict(pose_keypoint=pose_keypoint_of(s.reference_keypoints[:, None].numpy(), 128, 128))
    elif overrides == "pose_canvas_inf":
        broken = copy.deepcopy(data)
        broken[0]["canvas_height"] = INF
        overrides = dict(pose_keypoint=broken)
    args.update(overrides)
    raises(lambda: node_pose.AnyCrowdMasksFromPoses().make_masks(**args), *fragments)


# --- Load Adapter / Mini Loader: non-finite files --------------------------------------------

def with_value(src, dst, value) -> str:
    """Copy of an adapter file (metadata kept) with one value of its first tensor replaced."""
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    key = sorted(tensors)[0]
    tensors[key] = poke(tensors[key].float().contiguous(), value, 0).to(tensors[key].dtype)
    save_file(tensors, str(dst), metadata=meta)
    return dst.name


@pytest.fixture
def adapter(tmp_path, monkeypatch):
    from test_node_load_adapter import FakeFolderPaths, fake_model, write_adapter
    from tiny_wan import tiny_config

    models = tmp_path / "models"
    for sub in ("loras", "anycrowd_gates"):
        (models / sub).mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "folder_paths", FakeFolderPaths(models))
    lora, gates, _ = write_adapter(models, tiny_config())
    monkeypatch.setattr(nodes.node_load_adapter, "apply_lora", lambda model, lora, strength: ("patched", strength))
    return SimpleNamespace(models=models, lora=lora, gates=gates, model=fake_model())


@pytest.mark.parametrize("kind,value", [("lora", NAN), ("lora", INF), ("gates", NAN), ("gates", -INF)])
def test_load_adapter_refuses_a_non_finite_file_naming_it(adapter, kind, value):
    src = adapter.lora if kind == "lora" else adapter.gates
    name = with_value(src, src.with_name(f"bad_{kind}.safetensors"), value)
    node = nodes.node_load_adapter.AnyCrowdLoadAdapter()
    lora_name, gates_name = (name, "None") if kind == "lora" else ("None", name)
    message = raises(lambda: node.load(adapter.model, lora_name, gates_name, 1.0), name)
    assert re.search(r"nan|non-finite|infinit", message, re.I)


@pytest.mark.parametrize("strength", [NAN, INF, -INF])
def test_load_adapter_refuses_a_non_finite_strength(adapter, strength):
    node = nodes.node_load_adapter.AnyCrowdLoadAdapter()
    raises(lambda: node.load(adapter.model, adapter.lora.name, "None", strength), "strength_model")


def test_mini_loader_refuses_non_finite_shipped_adapter(tmp_path, monkeypatch):
    from mini_weights import write_random_mini_weights

    loader = nodes.node_mini_loader
    folder = write_random_mini_weights(tmp_path / "weights")
    with_value(folder / loader.LORA_FILE, folder / "tmp.safetensors", NAN)
    (folder / "tmp.safetensors").replace(folder / loader.LORA_FILE)
    monkeypatch.setattr(loader, "WEIGHTS_DIR", folder)
    make_unreachable(monkeypatch, loader, ("load_diffusion_model",), "a non-finite adapter reached ComfyUI's loader")
    message = raises(lambda: loader.AnyCrowdMiniLoader().load(loader.ANYCROWD), loader.LORA_FILE, "variant")
    assert "git checkout" in message
