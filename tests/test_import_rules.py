"""Static import rules checked on the source (no ComfyUI needed).

- Nothing in our `nodes/` package imports ComfyUI's own node modules (`nodes`, `comfy_extras.*`):
  core node classes are being converted to the V3 schema one by one, so instantiating or
  calling them from ours breaks when they are (issue [host]). We go through `comfy.*` APIs in
  `nodes/comfy_runtime.py` instead.
- `anycrowd_core/` never imports ComfyUI (`comfy`, `folder_paths`, `nodes`, `comfy_extras`...).
- Layers: the core imports neither our `nodes` nor `training`; `nodes` (inference) never imports
  `training`. And no two of the repository's modules import each other, directly or round a
  circle (the module import graph, relative imports resolved, function-level imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

from pack import REPO

PACKAGES = ("anycrowd_core", "nodes", "training", "benchmarks")  # the repository's own modules

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


# ---------------------------------------------------------------- layers and cycles


def module_name(path: Path) -> str:
    """'anycrowd_core.pose.dwpose' for anycrowd_core/pose/dwpose.py ('nodes' for nodes/__init__.py)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def repo_modules() -> dict[str, Path]:
    return {module_name(p): p for folder in PACKAGES for p in sorted((REPO / folder).rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of each of our modules a file imports, relative imports resolved against its
    package (the repository root is the pack: `..training.x` from nodes/ is `training.x`) and
    `from a import b` counted as an import of module a.b where b is one."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join(base + (node.module.split(".") if node.module else []))
            names = [f"{stem}.{alias.name}" if stem else alias.name for alias in node.names]
            targets = [n if n in known else stem for n in names]  # a submodule, else a name in stem
        else:
            continue
        for target in targets:
            while target and target not in known:  # the module itself, or the package holding it
                target = target.rpartition(".")[0]
            if target and target != module_name(path):
                found.append((node.lineno, target))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, over the repository's own modules."""
    modules = repo_modules()
    graph = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for line, target in imported_modules(path, set(modules)):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def wrong_way_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    banned = {"anycrowd_core": ("nodes", "training"), "nodes": ("training",)}
    bad = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if target.split(".")[0] in banned.get(module.split(".")[0], ()):
                bad.append(f"{module}:{line} imports {target}")
    return bad


def import_cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One path per import circle, e.g. 'nodes.a:12 -> nodes.b:7 -> nodes.a' (depth-first search,
    each back edge reported once)."""
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target, line in sorted(graph.get(module, {}).items()):
            if state.get(target) == 1:
                loop = path[path.index(target):] + [module]
                cycles.append(" -> ".join(f"{m}:{graph[m][n]}" for m, n in zip(loop, loop[1:] + [target]))
                              + f" -> {target}")
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return cycles


def test_no_wrong_way_imports_between_layers():
    """The core is below nodes and training; inference (nodes) never needs the trainer."""
    assert wrong_way_imports(import_graph()) == []


def test_no_import_cycles_among_our_modules():
    assert import_cycles(import_graph()) == []


def test_the_graph_resolves_relative_imports_and_finds_cycles_and_wrong_ways(tmp_path, monkeypatch):
    import test_import_rules as rules

    files = {
        "anycrowd_core/__init__.py": "",
        "anycrowd_core/a.py": "from .b import thing\n",
        "anycrowd_core/b.py": "def f():\n    from anycrowd_core import a\n",
        "anycrowd_core/c.py": "from ..training.x import y\n",
        "nodes/__init__.py": "from . import n\n",
        "nodes/n.py": "import anycrowd_core.b\nfrom ..training import x\n",
        "training/__init__.py": "",
        "training/x.py": "from anycrowd_core.c import z\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(rules, "REPO", tmp_path)
    graph = rules.import_graph()
    assert graph["nodes"] == {"nodes.n": 1}
    assert graph["nodes.n"] == {"anycrowd_core.b": 1, "training.x": 2}
    assert rules.wrong_way_imports(graph) == [
        "anycrowd_core.c:1 imports training.x", "nodes.n:2 imports training.x"]
    assert rules.import_cycles(graph) == [
        "anycrowd_core.a:1 -> anycrowd_core.b:2 -> anycrowd_core.a",
        "anycrowd_core.c:1 -> training.x:1 -> anycrowd_core.c",
    ]
