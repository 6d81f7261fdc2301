"""AnyCrowd pose nodes inside a real ComfyUI (COMFYUI_PATH): the `dwpose` model folder registered
with folder_paths (.onnx listed, comfyui_controlnet_aux's ckpts searched), the extractor resolving
widget names through it with ComfyUI's progress bar and Cancel, and loading by the custom-node loader."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

pytest.importorskip("onnxruntime")

from comfy_host import (  # noqa: E402
    assert_progress_reaches, cancel_at_first_progress, import_comfy, load_as_custom_node,
    progress_calls, requires_comfyui,
)

pytestmark = requires_comfyui

POSE_KEYS = ("AnyCrowdPoseExtractor", "AnyCrowdPoseFromKeypoints", "AnyCrowdMasksFromPoses")


@pytest.fixture
def folder_paths(monkeypatch):
    """ComfyUI's folder_paths with the `dwpose` entry restored after the test."""
    import_comfy()
    import folder_paths

    saved = folder_paths.folder_names_and_paths.get("dwpose")
    saved = (list(saved[0]), set(saved[1])) if saved else None
    yield folder_paths
    if saved is None:
        folder_paths.folder_names_and_paths.pop("dwpose", None)
    else:
        folder_paths.folder_names_and_paths["dwpose"] = saved
    folder_paths.filename_list_cache.pop("dwpose", None)


@pytest.fixture
def model_dir(tmp_path, folder_paths, pack):
    from test_node_pose import write_models

    d = tmp_path / "dwpose_models"
    d.mkdir()
    write_models(d)
    (d / "readme.txt").write_text("not a model")
    pack.nodes.pose_models.register_pose_folder()
    folder_paths.add_model_folder_path("dwpose", str(d))
    return d


def test_dwpose_folder_is_registered_under_models_with_onnx_listed(pack, folder_paths):
    assert pack.nodes.pose_models.register_pose_folder() is True
    paths, exts = folder_paths.folder_names_and_paths["dwpose"]
    assert paths[0] == os.path.join(folder_paths.models_dir, "dwpose")
    assert ".onnx" in exts


def test_registered_folder_lists_only_onnx_files_and_the_widgets_offer_them(pack, model_dir, folder_paths):
    listed = folder_paths.get_filename_list("dwpose")
    assert {"yolox_l.onnx", "dw-ll_ucoco_384.onnx"} <= set(listed) and "readme.txt" not in listed
    types = pack.nodes.node_pose.AnyCrowdPoseExtractor.INPUT_TYPES()["required"]
    assert types["detector_model"][0][0] == "yolox_l.onnx" and "dw-ll_ucoco_384.onnx" in types["detector_model"][0]
    assert types["pose_model"][0][0] == "dw-ll_ucoco_384.onnx"


def test_controlnet_aux_downloads_are_found_without_copying(pack, tmp_path, folder_paths, monkeypatch):
    from test_node_pose import write_models

    custom = tmp_path / "custom_nodes"
    aux = custom / "comfyui_controlnet_aux" / "ckpts" / "yzd-v" / "DWPose"
    aux.mkdir(parents=True)
    write_models(aux)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "custom_nodes", ([str(custom)], set()))
    pose_models = pack.nodes.pose_models
    assert pose_models.register_pose_folder()
    assert "yzd-v/DWPose/yolox_l.onnx" in folder_paths.get_filename_list("dwpose")
    assert pose_models.resolve_model("yolox_l.onnx", "detector") == aux / "yolox_l.onnx"
    assert pose_models.resolve_model("yzd-v/DWPose/dw-ll_ucoco_384.onnx", "pose").resolve() == (aux / "dw-ll_ucoco_384.onnx").resolve()


def test_missing_model_names_the_registered_folders(pack, folder_paths):
    from anycrowd_core.errors import AnyCrowdError

    pack.nodes.pose_models.register_pose_folder()
    with pytest.raises(AnyCrowdError, match=r"nothere\.onnx in .*models/dwpose"):
        pack.nodes.pose_models.resolve_model("nothere.onnx", "detector")


def extract_args():
    from test_node_pose import people_video

    return dict(images=people_video(), detector_model="yolox_l.onnx", pose_model="dw-ll_ucoco_384.onnx", providers="cpu")


def test_extractor_runs_on_registered_files_with_comfyuis_progress_bar_and_cancel(pack, model_dir):
    import comfy.model_management as mm

    from test_node_pose import T

    node = pack.nodes.node_pose.AnyCrowdPoseExtractor()
    with progress_calls() as calls:
        tracks = node.extract(**extract_args())[0]
        assert tracks.num_tracks == 2 and bool(tracks.present.all())
        assert_progress_reaches(calls, T)
        assert {t for _, t in calls} == {T}  # one bar, over the frames

        cancel_at_first_progress(calls)
        with pytest.raises(mm.InterruptProcessingException):
            node.extract(**extract_args())
        assert calls == [(1, T)]


def test_pose_nodes_load_through_comfyuis_custom_node_loader(tmp_path):
    comfy_nodes = load_as_custom_node(tmp_path, POSE_KEYS)
    for key in POSE_KEYS:
        assert "ComfyUI-AnyCrowd.nodes.node_pose" in comfy_nodes.NODE_CLASS_MAPPINGS[key].__module__
    out = comfy_nodes.NODE_CLASS_MAPPINGS["AnyCrowdPoseFromKeypoints"]().convert(
        [{"people": [{"pose_keypoints_2d": [10, 10, 1] * 18}], "canvas_width": 32, "canvas_height": 32}], min_track_length=1)
    assert out[1].shape == (1, 32, 32, 3) and isinstance(out[1], torch.Tensor)


# --- corrections and the colour cue, executed by ComfyUI itself ---------------------------

class _TestPoses:
    """Test source node: a clip's per-frame poses (people shuffled) as POSE_KEYPOINT and its pictures."""

    CATEGORY = "AnyCrowd/test"
    FUNCTION = "make"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    def make(self, seed):
        from anycrowd_core.pose.scenarios import make_scenario

        sc = make_scenario("edge_entry_cross", seed)
        frames = []
        for f in sc.sequence.frames:
            people = [{"pose_keypoints_2d": [float(v) for v in f.keypoints[j, :18].reshape(-1)]}
                      for j in range(f.num_people)]
            frames.append({"people": people, "canvas_width": 832, "canvas_height": 480})
        return (frames, torch.from_numpy(sc.frames()).float() / 255.0)


class _TestProbe:
    """Test sink node: keeps the tracks it receives."""

    CATEGORY = "AnyCrowd/test"
    FUNCTION = "keep"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tracks": ("ANYCROWD_TRACKS",)}}

    def keep(self, tracks):
        _TestProbe.seen.append(tracks)
        return {}


def _run_prompt(pack, prompt):
    import_comfy()
    import utils.install_util  # noqa: F401  (ComfyUI's server imports it before the extras)
    import execution
    import nodes as comfy_nodes
    from comfy_host import FakeServer

    added = {"AnyCrowdTestPoses": _TestPoses, "AnyCrowdTestProbe": _TestProbe,
             "AnyCrowdPoseFromKeypoints": pack.NODE_CLASS_MAPPINGS["AnyCrowdPoseFromKeypoints"]}
    saved = {k: comfy_nodes.NODE_CLASS_MAPPINGS.get(k) for k in added}
    comfy_nodes.NODE_CLASS_MAPPINGS.update(added)
    try:
        prompt_id = "anycrowd-track-edits"
        valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        assert valid, (error, node_errors)
        executor = execution.PromptExecutor(FakeServer())
        executor.execute(prompt, prompt_id, {}, outputs)
        return executor
    finally:
        for k, v in saved.items():
            if v is None:
                comfy_nodes.NODE_CLASS_MAPPINGS.pop(k, None)
            else:
                comfy_nodes.NODE_CLASS_MAPPINGS[k] = v


def _prompt(appearance: bool, edits: str) -> dict:
    return {
        "1": {"class_type": "AnyCrowdTestPoses", "inputs": {"seed": 0}},
        "2": {"class_type": "AnyCrowdPoseFromKeypoints", "inputs": {
            "pose_keypoint": ["1", 0], "images": ["1", 1], "coords": "pixel", "identities": "retrack",
            "max_gap": 8, "min_track_length": 3, "smoothing": 0.0, "max_people": 0, "draw_body": True,
            "draw_hands": True, "draw_face": True, "light_head": False, "appearance": appearance, "edits": edits}},
        "3": {"class_type": "AnyCrowdTestProbe", "inputs": {"tracks": ["2", 0]}},
    }


def test_colour_cue_and_track_edits_run_through_comfyuis_executor(pack):
    from anycrowd_core.pose.keypoint_format import pose_keypoint_to_sequence
    from anycrowd_core.pose.track_edits import apply_track_edits
    from anycrowd_core.pose.tracking import track_people

    poses, pictures = _TestPoses().make(0)
    seq = pose_keypoint_to_sequence(poses, coords="pixel")
    with_colour = track_people(seq, frames=(pictures * 255).round().to(torch.uint8).numpy())
    pose_only = track_people(seq)
    assert not torch.equal(with_colour.keypoints, pose_only.keypoints)  # the cue changes this clip's ids

    _TestProbe.seen.clear()
    for appearance, edits in ((True, ""), (False, ""), (True, "swap 0 1 @40\ndrop 1")):
        executor = _run_prompt(pack, _prompt(appearance, edits))
        assert executor.success, [d for e, d in executor.status_messages if e == "execution_error"]
    colour, plain, edited = _TestProbe.seen
    assert torch.equal(colour.keypoints, with_colour.keypoints) and colour.track_ids == with_colour.track_ids
    assert torch.equal(plain.keypoints, pose_only.keypoints)
    expected = apply_track_edits(with_colour, "swap 0 1 @40\ndrop 1")
    assert edited.track_ids == expected.track_ids == [0] and torch.equal(edited.keypoints, expected.keypoints)

    executor = _run_prompt(pack, _prompt(True, "swap 0 @40"))
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert not executor.success and len(errors) == 1
    assert "Track edit error on line 1, character 7" in errors[0]["exception_message"]
    assert "  swap 0 @40\n        ^" in errors[0]["exception_message"]
