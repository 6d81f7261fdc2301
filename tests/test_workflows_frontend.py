"""The example UI workflows load in ComfyUI's real front end (headless Chromium) with every node
known, every link and widget value in place, and convert back to exactly our API prompts.

Starts `main.py --cpu` of the ComfyUI at COMFYUI_PATH on a free port with a temporary base
directory (our repo symlinked into its custom_nodes, the example inputs and empty model files in
place) so COMFYUI_PATH is not modified. Needs Chromium (CHROMIUM_PATH or /usr/bin/chromium) and
`pip install playwright` (no `playwright install`); set ANYCROWD_SCREENSHOTS=dir to keep screenshots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from comfy_host import COMFYUI_PATH
from pack import REPO, load_pack

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
SERVER_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
WORKFLOWS = REPO / "workflows"
CASES = {  # name: (UI file, API file, builder graph)
    "basic": ("anycrowd_wan21_vace_1.3B.json", "anycrowd_wan21_vace_1.3B_api.json", "GRAPH"),
    "long_face": ("anycrowd_long_face_wan21_vace_1.3B.json", "anycrowd_long_face_wan21_vace_1.3B_api.json", "LONG_GRAPH"),
    "mini_cpu": ("anycrowd_mini_cpu.json", "anycrowd_mini_cpu_api.json", "MINI_GRAPH"),
    "identity_masks": ("anycrowd_identity_masks_wan21_vace_1.3B.json", "anycrowd_identity_masks_wan21_vace_1.3B_api.json",
                       "IDM_GRAPH"),
    "wan22_vace_fun": ("anycrowd_wan22_vace_fun_A14B.json", "anycrowd_wan22_vace_fun_A14B_api.json", "WAN22_GRAPH"),
}
# Model file names the workflows pick: empty placeholders make them valid combo choices.
MODEL_FILES = {
    "diffusion_models": ("wan2.1_vace_1.3B_fp16.safetensors", "wan2.2_fun_vace_high_noise_14B_fp8_scaled.safetensors",
                         "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors"),
    "text_encoders": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    "vae": "wan_2.1_vae.safetensors",
    "dwpose": ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"),
}
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
# The builder's UI-only widget names -> the front end's widget names.
FRONTEND_WIDGET_NAMES = {"__control_after_generate__": "control_after_generate", "__upload__": "upload"}


def _skip_reason() -> str | None:
    if not COMFYUI_PATH:
        return "needs a ComfyUI host: set COMFYUI_PATH to a ComfyUI checkout (tested with 0.3.64)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"needs Chromium: no executable at {CHROMIUM} (set CHROMIUM_PATH, or apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "needs playwright for Python (pip install playwright; its own browser download is not needed)"
    if SERVER_PYTHON == sys.executable and importlib.util.find_spec("comfyui_frontend_package") is None:
        return "needs ComfyUI's front end: pip install -r $COMFYUI_PATH/requirements.txt in this Python"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_directory(base: Path) -> None:
    """ComfyUI base directory: our package as a custom node, example inputs, placeholder models."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "ComfyUI-AnyCrowd").symlink_to(REPO, target_is_directory=True)
    from anycrowd_core.example_inputs import write_example_inputs

    # small and short: the front end only shows previews of them
    write_example_inputs(base / "input", frames=9, height=160, width=288)
    for folder, names in MODEL_FILES.items():
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name in (names,) if isinstance(names, str) else names:
            (base / "models" / folder / name).touch()
    # a first visit otherwise opens the template browser over the canvas
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, object_info, log text) of a running ComfyUI; killed (its process group) afterwards."""
    base = tmp_path_factory.mktemp("comfy_base")
    _base_directory(base)
    port = _free_port()
    log_path = base / "server.log"
    cmd = [SERVER_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        info = None
        while info is None:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not answer on {url} within 90 s:\n{log_path.read_text()[-3000:]}")
            try:
                info = _get_json(url + "/object_info")
            except OSError:
                time.sleep(0.5)
        yield url, info, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    url = server[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1600, "height": 1000})
            pg.messages = []  # (kind, text, url) of console errors and uncaught page errors
            pg.on("console", lambda m: m.type == "error" and pg.messages.append(("console", m.text, m.location.get("url", ""))))
            pg.on("pageerror", lambda e: pg.messages.append(("pageerror", str(e), "")))
            pg.goto(url, wait_until="domcontentloaded")
            pg.wait_for_function("window.app && window.app.graph && window.LiteGraph && window.app.canvas", timeout=60_000)
            pg.wait_for_timeout(1000)  # let the start-up workflow settle
            yield pg
        finally:
            browser.close()


def test_server_imports_our_nodes(server):
    _url, info, log = server
    timing = [line for line in log.splitlines() if "seconds" in line and line.endswith("ComfyUI-AnyCrowd")]
    assert len(timing) == 1 and "IMPORT FAILED" not in timing[0], f"server log:\n{log[-3000:]}"
    assert not [line for line in log.splitlines() if "Cannot import" in line and "ComfyUI-AnyCrowd" in line]
    missing = set(load_pack().NODE_CLASS_MAPPINGS) - set(info)
    assert not missing, f"/object_info lacks {sorted(missing)}; server log:\n{log[-3000:]}"


LOAD_AND_INSPECT = """async (wf) => {
  document.querySelectorAll('.p-dialog-mask').forEach(d => d.remove());
  await window.app.loadGraphData(wf);
  await new Promise(r => setTimeout(r, 500));
  const g = window.app.graph;
  const options = (w) => { const v = w.options && w.options.values; return typeof v === 'function' ? v() : v; };
  const nodes = g._nodes.map(n => ({
    id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
    placeholder: !!n.has_errors || n.constructor === LiteGraph.LGraphNode,
    inputs: (n.inputs || []).map(i => [i.name, i.link ?? null]),
    // widgets the front end never saves: its own image / video previews
    widgets: (n.widgets || []).filter(w => w.serialize !== false)
      .map(w => [w.name, w.value, w.type === 'combo' ? (options(w) || null) : null]),
  }));
  const links = [];
  const all = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links);
  for (const l of all) if (l) links.push([l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]);
  const serialized = g.serialize();
  const dialogs = [...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 500));
  const prompt = await window.app.graphToPrompt();
  return {nodes, links, widgets_values: Object.fromEntries(serialized.nodes.map(n => [n.id, n.widgets_values ?? []])),
          dialogs, output: prompt.output};
}"""


@pytest.fixture(scope="module")
def loaded(page):
    """name -> (file workflow, API prompt, builder graph, front-end result, front-end errors)."""
    sys.path.insert(0, str(WORKFLOWS))
    try:
        import build_workflows
    finally:
        sys.path.remove(str(WORKFLOWS))
    shots = os.environ.get("ANYCROWD_SCREENSHOTS")
    results = {}
    for name, (ui_name, api_name, graph_name) in CASES.items():
        workflow = json.loads((WORKFLOWS / ui_name).read_text())
        prompt = json.loads((WORKFLOWS / api_name).read_text())
        del page.messages[:]
        result = page.evaluate(LOAD_AND_INSPECT, workflow)
        page.wait_for_timeout(500)  # previews of the example inputs load after the graph
        # offline hosts cannot reach api.comfy.org & co.; only errors from this server count
        errors = [m for m in page.messages if not (m[2].startswith("http") and "127.0.0.1" not in m[2])]
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"wf_{name}.png"))
        results[name] = (workflow, prompt, getattr(build_workflows, graph_name), result, errors)
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_loads_without_missing_nodes_dialog_or_errors(loaded, name):
    workflow, _prompt, _graph, result, errors = loaded[name]
    assert result["dialogs"] == [], f"the front end opened a dialog: {result['dialogs']}"
    assert errors == [], f"console / page errors while loading {name}: {errors}"
    unknown = [(n["id"], n["type"]) for n in result["nodes"] if not n["registered"] or n["placeholder"]]
    assert unknown == [], f"missing node types: {unknown}"
    assert len(result["nodes"]) == len(workflow["nodes"])
    assert sorted(n["id"] for n in result["nodes"]) == sorted(n["id"] for n in workflow["nodes"])


@pytest.mark.parametrize("name", list(CASES))
def test_every_link_lands_on_the_named_socket(loaded, name):
    workflow, _prompt, _graph, result, _errors = loaded[name]
    assert sorted(result["links"]) == sorted(workflow["links"])
    inputs = {n["id"]: n["inputs"] for n in result["nodes"]}
    file_inputs = {n["id"]: n["inputs"] for n in workflow["nodes"]}
    for link_id, _src, _slot, dst, dst_slot, _type in workflow["links"]:
        assert inputs[dst][dst_slot] == [file_inputs[dst][dst_slot]["name"], link_id]


@pytest.mark.parametrize("name", list(CASES))
def test_every_widget_value_lands_in_the_named_widget(loaded, name):
    """By name, not by position: a missing or extra widget shifts every value after it."""
    workflow, _prompt, graph, result, _errors = loaded[name]
    by_id = {n["id"]: n for n in result["nodes"]}
    for node in workflow["nodes"]:
        widgets = by_id[node["id"]]["widgets"]
        expected = [(FRONTEND_WIDGET_NAMES.get(w, w), v) for w, v in graph[node["id"]][4]]
        assert [(w, v) for w, v, _opts in widgets] == expected, f"node {node['id']} ({node['type']})"
        for w, v, opts in widgets:
            if opts is not None:
                assert v in opts, f"node {node['id']} ({node['type']}).{w} = {v!r} is not among {opts}"
        assert result["widgets_values"][str(node["id"])] == node["widgets_values"]


@pytest.mark.parametrize("name", list(CASES))
def test_graph_to_prompt_is_our_api_prompt(server, loaded, name):
    _workflow, prompt, _graph, result, _errors = loaded[name]
    info = server[1]
    output = result["output"]
    assert set(output) == set(prompt)
    for nid, entry in prompt.items():
        assert output[nid]["class_type"] == entry["class_type"]
        declared = {k for section in info[entry["class_type"]]["input"].values() for k in section}
        # the front end also sends its LoadVideo preview widget ('video-preview': ''); the server
        # ignores inputs a node does not declare
        inputs = {k: v for k, v in output[nid]["inputs"].items() if k in declared}
        assert set(output[nid]["inputs"]) - set(inputs) <= {"video-preview"}
        assert inputs == entry["inputs"], f"node {nid} ({entry['class_type']})"
        if entry["_meta"]["title"] != entry["class_type"]:  # untitled: the front end shows the display name
            assert output[nid]["_meta"] == entry["_meta"]
