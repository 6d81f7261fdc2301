"""AnyCrowd pose nodes inside a real ComfyUI (COMFYUI_PATH): the `dwpose` model folder registered
with folder_paths (.onnx listed, comfyui_controlnet_aux's ckpts searched), the extractor resolving
widget names through it with ComfyUI's progress bar and Cancel, and loading by the custom-node loader."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

pytest.importorskip("onnxruntime")

from comfy_host import assert_progress_reaches, import_comfy, load_pack_with_comfy, requires_comfyui  # noqa: E402
from pack import REPO  # noqa: E402

pytestmark = requires_comfyui

POSE_KEYS = ("AnyCrowdPoseExtractor", "AnyCrowdPoseFromKeypoints", "AnyCrowdMasksFromPoses")


@pytest.fixture(scope="module")
def pack():
    return load_pack_with_comfy()


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
    import comfy.utils

    from test_node_pose import T

    calls = []
    node = pack.nodes.node_pose.AnyCrowdPoseExtractor()
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        tracks = node.extract(**extract_args())[0]
        assert tracks.num_tracks == 2 and bool(tracks.present.all())
        assert_progress_reaches(calls, T)
        assert {t for _, t in calls} == {T}  # one bar, over the frames

        def cancel_after_first(value, total, preview, node_id=None):
            calls.append((value, total))
            mm.interrupt_current_processing(True)  # what the Cancel button does

        calls.clear()
        comfy.utils.set_progress_bar_global_hook(cancel_after_first)
        with pytest.raises(mm.InterruptProcessingException):
            node.extract(**extract_args())
        assert calls == [(1, T)]
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def test_pose_nodes_load_through_comfyuis_custom_node_loader(tmp_path):
    import_comfy()
    import utils.install_util  # noqa: F401  (ComfyUI's server imports it before the extras)
    import nodes as comfy_nodes  # ComfyUI's top-level module (ours is comfyui_anycrowd.nodes)

    link = tmp_path / "ComfyUI-AnyCrowd"
    link.symlink_to(REPO, target_is_directory=True)
    assert asyncio.run(comfy_nodes.load_custom_node(str(link), module_parent="custom_nodes")) is True
    for key in POSE_KEYS:
        cls = comfy_nodes.NODE_CLASS_MAPPINGS[key]
        assert not hasattr(cls, "MISSING_DEPENDENCY"), key
        assert "ComfyUI-AnyCrowd.nodes.node_pose" in cls.__module__
    out = comfy_nodes.NODE_CLASS_MAPPINGS["AnyCrowdPoseFromKeypoints"]().convert(
        [{"people": [{"pose_keypoints_2d": [10, 10, 1] * 18}], "canvas_width": 32, "canvas_height": 32}], min_track_length=1)
    assert out[1].shape == (1, 32, 32, 3) and isinstance(out[1], torch.Tensor)
