"""Static import rules checked on the source (no ComfyUI needed).

- Nothing in our `nodes/` package imports ComfyUI's own node modules (`nodes`, `comfy_extras.*`):
  core node classes are being converted to the V3 schema one by one, so instantiating or
  calling them from ours breaks when they are (issue [host]). We go through `comfy.*` APIs in
  `nodes/comfy_runtime.py` instead.
- `anycrowd_core/` never imports ComfyUI (`comfy`, `folder_paths`, `nodes`, `comfy_extras`...).
"""

from __future__ import annotations

import ast
from pathlib import Path

from pack import REPO

COMFY_NODE_MODULES = ("nodes", "comfy_extras", "comfy_api_nodes")
COMFY_MODULES = ("comfy", "folder_paths", "latent_preview", "execution", "server", "comfy_execution") + COMFY_NODE_MODULES


def absolute_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, including importlib.import_module("...")."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("_loaded", "require_comfy")
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, node.args[0].value))
    return found


def offending(folder: str, banned: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, module in absolute_imports(path):
            if module.split(".")[0] in banned:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


def test_our_nodes_never_import_comfyuis_node_modules():
    assert offending("nodes", COMFY_NODE_MODULES) == []


def test_the_core_never_imports_comfyui():
    assert offending("anycrowd_core", COMFY_MODULES) == []


def test_tests_never_import_our_nodes_as_top_level_nodes():
    """`import nodes` / `from nodes.x import` in a test makes our package the process's `nodes`
    module, and every later host test then gets ours instead of ComfyUI's (the host suite broke
    that way once); tests load the package as ComfyUI does, through tests/pack.py."""
    ours = {p.stem for p in (REPO / "nodes").glob("*.py")}
    bad = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                names = {a.name for a in node.names} if parts == ["nodes"] else set(parts[1:2])
                if parts[0] == "nodes" and names & ours:
                    bad.append(f"{path.name}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                        if a.name.split(".")[0] == "nodes" and set(a.name.split(".")[1:2]) & ours]
    assert bad == [], "load the package through tests/pack.py (load_pack) instead"


def test_the_scanner_sees_every_import_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import nodes\nfrom comfy_extras.nodes_model_advanced import ModelSamplingSD3\n"
                     "import importlib\nimportlib.import_module('comfy_extras.nodes_wan')\n_loaded('nodes')\n"
                     "from . import sibling\n")
    assert [m for _l, m in absolute_imports(probe)] == [
        "nodes", "comfy_extras.nodes_model_advanced", "importlib", "comfy_extras.nodes_wan", "nodes"]
