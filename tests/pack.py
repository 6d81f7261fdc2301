"""Load this repository as a ComfyUI custom-node package, the way ComfyUI does.

ComfyUI imports the folder under its folder name; tests use the name `comfyui_anycrowd`, so
our `nodes` subpackage is `comfyui_anycrowd.nodes` and never shadows ComfyUI's top-level
`nodes` module. Usage: `from pack import load_pack; pack = load_pack(); pack.nodes.<module>`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_anycrowd"


def load_pack(name: str = PACK_NAME):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
