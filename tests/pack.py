"""Load this repository as a ComfyUI custom-node package, the way ComfyUI does.

ComfyUI imports the folder under its folder name; tests use the name `comfyui_anycrowd`, so
our `nodes` subpackage is `comfyui_anycrowd.nodes` and never shadows ComfyUI's top-level
`nodes` module. Usage: `from pack import load_pack; pack = load_pack(); pack.nodes.<module>`.
`run_fresh_python` runs code in a new Python from the repository folder (first-import checks).
"""

from __future__ import annotations

import importlib.util
import subprocess
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


def run_fresh_python(code: str) -> str:
    """Run `code` in a new process of this Python (nothing imported yet), in the repository
    folder, 120 s at most; asserts it exits 0 (showing its stderr) and returns what it printed."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout
