"""ComfyUI node classes of AnyCrowd (the only code that touches comfy.* / folder_paths).

Registration is V1-style. Each node module is imported on its own: if one cannot be
imported because a dependency is missing, ComfyUI still starts and that node is
registered as a placeholder with the same sockets whose run says what to pip install.
"""

from __future__ import annotations

import importlib
import logging

from anycrowd_core.errors import AnyCrowdError

from .node_types import GATES, INSTANCES, LAYOUT, TRACKS  # noqa: F401  (used by NODE_SPECS entries)

# pip package for the import names our modules need (the import name is not always the pip name)
PIP_NAMES = {
    "cv2": "opencv-python-headless",
    "av": "av",
    "einops": "einops",
    "numpy": "numpy",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
}


class NodeSpec:
    """One registered node: class key, module and class name, display name, category and
    sockets (kept here so a placeholder keeps the real node's outputs and workflows still load)."""

    def __init__(self, key: str, module: str, display: str, category: str, return_types: tuple, return_names: tuple):
        self.key, self.module, self.display = key, module, display
        self.category, self.return_types, self.return_names = category, return_types, return_names


NODE_SPECS = (
    NodeSpec("AnyCrowdInstanceDecoupler", ".node_decoupler", "AnyCrowd Instance Decoupler", "AnyCrowd/conditioning",
             (INSTANCES, "IMAGE"), ("instances", "preview")),
    NodeSpec("AnyCrowdIILREncode", ".node_iilr_encode", "AnyCrowd IILR Encode", "AnyCrowd/conditioning",
             ("CONDITIONING", "CONDITIONING", "LATENT", "INT", LAYOUT),
             ("positive", "negative", "latent", "trim_latent", "layout")),
    NodeSpec("AnyCrowdTSDAPatch", ".node_tsda_patch", "AnyCrowd TSDA Patch", "AnyCrowd/sampling",
             ("MODEL",), ("model",)),
    NodeSpec("AnyCrowdSampler", ".node_sampler", "AnyCrowd Sampler (TSDA-patched Wan)", "AnyCrowd/sampling",
             ("LATENT",), ("latent",)),
    NodeSpec("AnyCrowdCumulativeCFG", ".node_cumulative_cfg", "AnyCrowd Cumulative CFG (guider)", "AnyCrowd/sampling",
             ("GUIDER",), ("guider",)),
    # pose nodes
    NodeSpec("AnyCrowdPoseExtractor", ".node_pose", "AnyCrowd Pose Extractor (DWPose + tracking)", "AnyCrowd/pose",
             (TRACKS, "IMAGE", "POSE_KEYPOINT", "IMAGE"), ("tracks", "pose_video", "pose_keypoint", "preview")),
    NodeSpec("AnyCrowdPoseFromKeypoints", ".node_pose", "AnyCrowd Pose From Keypoints", "AnyCrowd/pose",
             (TRACKS, "IMAGE", "IMAGE"), ("tracks", "pose_video", "preview")),
    NodeSpec("AnyCrowdMasksFromPoses", ".node_pose", "AnyCrowd Masks From Poses (GrabCut)", "AnyCrowd/pose",
             ("MASK", "IMAGE"), ("masks", "preview")),
    NodeSpec("AnyCrowdIdentityMasks", ".node_identity_masks", "AnyCrowd Identity Masks (SCAIL-2 colours / SAM3)",
             "AnyCrowd/pose", ("MASK", TRACKS, "STRING", "MASK", "IMAGE", "IMAGE"),
             ("reference_masks", "tracks", "binding", "track_masks", "mask_video", "preview")),
    # long-video and face-control nodes
    NodeSpec("AnyCrowdFaceControl", ".node_face_control", "AnyCrowd Face Control (X-Dyna)", "AnyCrowd/conditioning",
             ("CONDITIONING", "CONDITIONING", "IMAGE"), ("positive", "negative", "face_video")),
    NodeSpec("AnyCrowdLongVideoSampler", ".node_long_video", "AnyCrowd Long Video Sampler", "AnyCrowd/sampling",
             ("IMAGE",), ("images",)),
    # adapter (trained LoRA + gates) nodes
    NodeSpec("AnyCrowdLoadAdapter", ".node_load_adapter", "AnyCrowd Load Adapter (LoRA + gates)", "AnyCrowd/loaders",
             ("MODEL", GATES, "STRING"), ("model", "gates", "info")),
    # the miniature shipped with the package (CPU demo of the whole graph)
    NodeSpec("AnyCrowdMiniLoader", ".node_mini_loader", "AnyCrowd Mini Loader (CPU demo model)", "AnyCrowd/loaders",
             ("MODEL", GATES, "VAE", "CONDITIONING", "STRING"), ("model", "gates", "vae", "conditioning", "info")),
)


def missing_dependency_placeholder(spec: NodeSpec, error: Exception) -> type:
    """A node class with the real node's outputs that raises an AnyCrowdError naming the
    missing package (or the import failure) when run; ComfyUI shows it in its error dialog."""
    missing = getattr(error, "name", None) if isinstance(error, ImportError) else None
    if missing:
        top = missing.split(".")[0]
        message = (
            f"{spec.display} is unavailable because the Python package '{top}' could not be imported ({error}). "
            f"Install it into ComfyUI's Python: python -m pip install {PIP_NAMES.get(top, top)} "
            "(or pip install -r requirements.txt in the AnyCrowd folder), then restart ComfyUI."
        )
    else:
        message = (
            f"{spec.display} is unavailable because its module failed to import: {type(error).__name__}: {error}. "
            "Reinstall the AnyCrowd package with its requirements.txt and restart ComfyUI; if it persists, report it."
        )

    def run(self, **kwargs):
        raise AnyCrowdError(message)

    return type(
        spec.key,
        (),
        {
            "DESCRIPTION": f"UNAVAILABLE: {message}",
            "CATEGORY": spec.category,
            "FUNCTION": "run",
            "RETURN_TYPES": spec.return_types,
            "RETURN_NAMES": spec.return_names,
            "OUTPUT_NODE": True,  # so running the graph reaches it and shows the message
            "INPUT_TYPES": classmethod(lambda cls: {"required": {}}),
            "run": run,
            "MISSING_DEPENDENCY": message,
        },
    )


def load_nodes(specs=NODE_SPECS) -> tuple[dict[str, type], dict[str, str]]:
    """Import each node module; a module whose dependency is missing becomes a placeholder."""
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for spec in specs:
        try:
            cls = getattr(importlib.import_module(spec.module, __name__), spec.key)
        except Exception as exc:  # noqa: BLE001 - one broken node must not stop ComfyUI's start-up
            logging.warning("AnyCrowd: %s unavailable (%s); registering a placeholder.", spec.key, exc)
            cls = missing_dependency_placeholder(spec, exc)
        classes[spec.key] = cls
        names[spec.key] = spec.display
    return classes, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = load_nodes()
