"""Fixtures shared by the test files (pytest puts tests/ on sys.path through this file's folder,
so helpers import as `from pack import ...`, `from comfy_host import ...`).

`comfy`, `pack` and `model` are the host tests' fixtures: ComfyUI made importable, our package
loaded with it and ComfyUI's MODEL of the tiny random Wan 2.1 VACE (tests/comfy_host.py). They
skip without COMFYUI_PATH. A plain test file that needs the package without ComfyUI defines its
own `pack` (`load_pack()`), which takes precedence over this one. `one_thread` and `scene` serve
plain and host tests alike.
"""

from __future__ import annotations

import pytest
import torch

from anycrowd_core.scenes import make_scene
from comfy_host import comfy_node_registry, import_comfy, load_pack_with_comfy, tiny_vace_patcher


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's `comfy` package, importable on this CPU host."""
    return import_comfy()


@pytest.fixture(scope="module")
def pack():
    return load_pack_with_comfy()


@pytest.fixture(scope="module")
def model():
    """ComfyUI ModelPatcher (WAN21_Vace, float32, CPU) of the tiny random model, seed 0."""
    return tiny_vace_patcher(seed=0)


@pytest.fixture(scope="module")
def comfy_nodes(pack):
    """ComfyUI's own node registry (its top-level `nodes` module, extras included)."""
    return comfy_node_registry()


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny matmuls on a shared 2-core machine are dominated by
    thread hand-offs. Files of tiny-model runs use it for every test
    (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scene(request):
    """The two characters crossing, at the size of the requesting test module: its `H` x `W`
    pixels and `T` frames (the module's constants, read through `request.module`)."""
    module = request.module
    return make_scene(num_characters=2, num_frames=module.T, height=module.H, width=module.W, seed=0,
                      scenario="crossing")
