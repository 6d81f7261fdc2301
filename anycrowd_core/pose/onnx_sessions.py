"""onnxruntime plumbing for the pose models: execution-provider choice, one cached
InferenceSession per (model file, providers), explicit release, and model-file lookup in
search folders with an error that says where to put the files. Nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import AnyCrowdError

CPU_PROVIDER = "CPUExecutionProvider"
# Preference order for "auto": GPU/NPU providers that run these models without an engine
# build step. TensorRT is left out on purpose (minutes of engine building on the first
# run, per input shape); ask for it explicitly if wanted.
AUTO_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)

Providers = str | Sequence[str]
"""`"auto"` (GPU provider when present, then CPU), `"cpu"`, or explicit provider names."""

DETECTOR_FILES = ("yolox_l.onnx",)
"""File names accepted for the YOLOX person detector, tried in order."""
POSE_FILES = ("dw-ll_ucoco_384.onnx", "dw-ll_ucoco.onnx")
"""File names accepted for the DWPose whole-body (RTMPose, SimCC) model, tried in order."""

MODEL_SOURCE = "https://huggingface.co/yzd-v/DWPose"

_sessions: dict[tuple, object] = {}
_lock = threading.Lock()


def _ort():
    # Imported lazily: onnxruntime is optional at run time (users may have onnxruntime-gpu
    # instead), and only pose extraction needs it.
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise AnyCrowdError(
            "Pose extraction needs onnxruntime: install `onnxruntime` (CPU) or `onnxruntime-gpu` "
            "(NVIDIA) into the Python that runs ComfyUI (not both)."
        ) from e
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    return list(_ort().get_available_providers())


def resolve_providers(providers: Providers = "auto") -> list[str]:
    """Provider list for a session: "auto" -> [first available of CUDA/ROCm/DirectML/CoreML,
    CPU]; "cpu" -> [CPU]; explicit names are checked against the available ones and CPU is
    appended as the fallback."""
    available = available_providers()
    if isinstance(providers, str):
        key = providers.strip()
        if key.lower() == "auto":
            gpu = [p for p in AUTO_PROVIDERS if p in available]
            return gpu[:1] + [CPU_PROVIDER]
        if key.lower() == "cpu":
            return [CPU_PROVIDER]
        providers = [key]
    chosen = [str(p) for p in providers]
    if not chosen:
        raise AnyCrowdError('No execution provider given: use "auto", "cpu" or a list of names.')
    missing = [p for p in chosen if p not in available]
    if missing:
        raise AnyCrowdError(
            f"Execution provider(s) {missing} are not available in this onnxruntime build "
            f"(available: {available}). Use \"auto\" or one of the available names; GPU providers "
            "need the matching package (e.g. onnxruntime-gpu for CUDA)."
        )
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return chosen


def get_session(path: str | os.PathLike, providers: Providers = "auto"):
    """The cached `onnxruntime.InferenceSession` for this file and provider list.

    The key includes the file's modification time, so a replaced file is loaded afresh.
    """
    path = Path(path)
    if not path.is_file():
        raise AnyCrowdError(f"ONNX model file not found: {path}. Check the path or the file name.")
    chosen = tuple(resolve_providers(providers))
    real = os.path.realpath(path)
    key = (real, os.stat(real).st_mtime_ns, chosen)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            ort = _ort()
            try:
                session = ort.InferenceSession(real, providers=list(chosen))
            except Exception as e:
                raise AnyCrowdError(
                    f"onnxruntime could not load {path} ({type(e).__name__}: {e}). The file may be "
                    f"incomplete or not an ONNX model: download it again from {MODEL_SOURCE}."
                ) from e
            _sessions[key] = session
    return session


def cached_sessions() -> int:
    """Number of sessions currently held."""
    return len(_sessions)


def release_sessions() -> int:
    """Drop every cached session (frees their CPU/GPU memory once no caller holds them).

    Returns how many were released.
    """
    with _lock:
        n = len(_sessions)
        _sessions.clear()
    return n


def find_model_file(
    candidates: Sequence[str],
    search_dirs: Sequence[str | os.PathLike],
    what: str,
) -> Path:
    """First file named like one of `candidates` in `search_dirs` (searched recursively, in
    order; ComfyUI model folders often hold files in subfolders such as `yzd-v/DWPose/`).

    A candidate that is itself an existing file path is returned as is. Raises
    `AnyCrowdError` naming the folders searched and the expected file names.
    """
    for name in candidates:
        if os.path.isfile(name):
            _check_onnx(Path(name), what)
            return Path(name)
    dirs = [Path(d) for d in search_dirs]
    for name in candidates:
        base = os.path.basename(name)
        for d in dirs:
            if (d / base).is_file():
                return _check_onnx(d / base, what)
            if d.is_dir():
                for root, subdirs, files in os.walk(d, followlinks=True):
                    subdirs.sort()
                    if base in files:
                        return _check_onnx(Path(root) / base, what)
    names = ", ".join(os.path.basename(c) for c in candidates)
    where = ", ".join(str(d) for d in dirs) if dirs else "(no folders given)"
    others = _non_onnx_hint(dirs)
    raise AnyCrowdError(
        f"{what} model not found: looked for {names} in {where} (and their subfolders). "
        f"Download it from {MODEL_SOURCE} into one of these folders (e.g. ComfyUI/models/dwpose/), "
        f"or give the full path.{others}"
    )


def _check_onnx(path: Path, what: str) -> Path:
    if path.suffix.lower() != ".onnx":
        raise AnyCrowdError(
            f"{path.name} is not an ONNX file: only .onnx DWPose models are supported for the "
            f"{what} (TorchScript .pt files are not). Use yolox_l.onnx and dw-ll_ucoco_384.onnx "
            f"from {MODEL_SOURCE}."
        )
    return path


def _non_onnx_hint(dirs: Sequence[Path]) -> str:
    # Users of comfyui_controlnet_aux often have only the TorchScript variants; say plainly
    # that those do not work here instead of leaving them wondering why a file is "missing".
    found = []
    for d in dirs:
        if d.is_dir():
            for root, _, files in os.walk(d):
                found += [f for f in files if f.endswith((".torchscript.pt", ".torchscript"))]
    if not found:
        return ""
    return f" Found {sorted(set(found))[:4]}, but only .onnx models are supported."
