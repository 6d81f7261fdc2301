"""Where the pose nodes find the DWPose ONNX files: ComfyUI's `models/dwpose` folder (registered
with folder_paths, `.onnx` listed explicitly), plus the folders other pose packs download into,
or an explicit file path. folder_paths is only read when ComfyUI has already imported it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from anycrowd_core.pose.dwpose import DWPoseEstimator
from anycrowd_core.pose.onnx_sessions import DETECTOR_FILES, POSE_FILES, find_model_file

FOLDER = "dwpose"
"""ComfyUI model-folder name: `ComfyUI/models/dwpose/` (and extra_model_paths.yaml entries)."""
EXTENSIONS = (".onnx",)
# comfyui_controlnet_aux downloads into custom_nodes/comfyui_controlnet_aux/ckpts/yzd-v/DWPose/
# (its annotator_ckpts_path, overridable with this environment variable); ComfyUI-Just-DWPose
# uses models/checkpoints/DWPose/. Both are searched so nobody needs a second copy.
AUX_ENV = "AUX_ANNOTATOR_CKPTS_PATH"
AUX_PACK_NAMES = ("comfyui_controlnet_aux",)


def _folder_paths():
    """ComfyUI's folder_paths if ComfyUI has imported it (never imported from here: importing
    it outside ComfyUI would read ComfyUI's command line)."""
    return sys.modules.get("folder_paths")


def other_pack_folders(fp=None) -> list[str]:
    """Existing folders where other pose packs keep the DWPose files."""
    fp = fp if fp is not None else _folder_paths()
    found: list[str] = []
    env = os.environ.get(AUX_ENV)
    if env:
        found.append(env)
    if fp is not None:
        for root in fp.get_folder_paths("custom_nodes"):
            if os.path.isdir(root):
                for name in sorted(os.listdir(root)):
                    if name.lower().replace("-", "_") in AUX_PACK_NAMES:
                        found.append(os.path.join(root, name, "ckpts"))
        found.append(os.path.join(fp.models_dir, "checkpoints", "DWPose"))
    return [d for d in dict.fromkeys(found) if os.path.isdir(d)]


def register_pose_folder() -> bool:
    """Register the `dwpose` model folder with ComfyUI (idempotent): `models/dwpose` first,
    then the other packs' folders, with `.onnx` as the listed extension. False without ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return False
    default = os.path.join(fp.models_dir, FOLDER)
    if FOLDER not in fp.folder_names_and_paths:
        fp.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))
    else:
        paths, exts = fp.folder_names_and_paths[FOLDER]
        # An entry made by add_model_folder_path / extra_model_paths.yaml has no extensions,
        # which would list every file: name .onnx explicitly.
        if isinstance(exts, set):
            exts.update(EXTENSIONS)
        else:
            fp.folder_names_and_paths[FOLDER] = (paths, set(exts) | set(EXTENSIONS))
        if default not in paths:
            paths.insert(0, default)
    for folder in other_pack_folders(fp):
        fp.add_model_folder_path(FOLDER, folder)
    return True


def search_folders() -> list[str]:
    """Folders searched for model files (recursively), in order."""
    fp = _folder_paths()
    if fp is None:
        return []
    register_pose_folder()
    return list(dict.fromkeys(fp.get_folder_paths(FOLDER) + other_pack_folders(fp)))


def _choices(preferred: tuple[str, ...]) -> list[str]:
    files: list[str] = []
    fp = _folder_paths()
    if fp is not None and register_pose_folder():
        files = list(fp.get_filename_list(FOLDER))
    # The usual name always comes first, present or not: a workflow saved elsewhere still
    # validates, and running it gives the error saying where to put the file.
    head = [f for f in files if os.path.basename(f) == preferred[0]][:1] or [preferred[0]]
    return head + [f for f in files if f not in head]


def detector_choices() -> list[str]:
    """Choices of the detector widget: yolox_l.onnx first, then every .onnx file found."""
    return _choices(DETECTOR_FILES)


def pose_choices() -> list[str]:
    """Choices of the pose-model widget: dw-ll_ucoco_384.onnx first, then every .onnx file found."""
    return _choices(POSE_FILES)


def resolve_model(name: str, kind: str) -> Path:
    """Full path of a model choice: an existing path as given, the file registered under that
    name in the dwpose folder, or a file of that name anywhere under the searched folders.
    Raises AnyCrowdError naming the folders and the expected file names."""
    defaults = DETECTOR_FILES if kind == "detector" else POSE_FILES
    what = "DWPose detector (YOLOX)" if kind == "detector" else "DWPose pose"
    name = (name or "").strip() or defaults[0]
    fp = _folder_paths()
    if fp is not None and not os.path.isfile(name):
        register_pose_folder()
        full = fp.get_full_path(FOLDER, name)
        if full:
            name = full
    candidates = [name] + [d for d in defaults if d != os.path.basename(name)] if name in defaults else [name]
    dirs = search_folders() if fp is not None else []
    if not dirs and fp is None:
        dirs = [os.path.join("models", FOLDER)]  # only reached outside ComfyUI: said in the error
    return find_model_file(candidates, dirs, what)


def estimator(detector: str, pose: str, providers: str = "auto", det_threshold: float = 0.3) -> DWPoseEstimator:
    """A DWPoseEstimator for the two widget values (names or paths)."""
    return DWPoseEstimator(resolve_model(detector, "detector"), resolve_model(pose, "pose"),
                           providers=providers, det_threshold=float(det_threshold))
