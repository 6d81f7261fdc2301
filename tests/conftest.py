"""Fixtures shared by the test files (pytest puts tests/ on sys.path through this file's folder,
so helpers import as `from pack import ...`, `from comfy_host import ...`).

`pack` and `model` are the host tests' fixtures: our package loaded with ComfyUI importable and
ComfyUI's MODEL of the tiny random Wan 2.1 VACE (tests/comfy_host.py). They skip without
COMFYUI_PATH. A plain test file that needs the package without ComfyUI defines its own `pack`
(`load_pack()`), which takes precedence over this one.
"""

from __future__ import annotations

import pytest

from comfy_host import comfy_node_registry, load_pack_with_comfy, tiny_vace_patcher


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
