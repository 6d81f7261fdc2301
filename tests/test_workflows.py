"""The example workflows: both files parse, every node class and input exists, every link
connects matching types, widget values fit their inputs, and UI and API files are one graph.

Native node definitions come from ComfyUI itself when COMFYUI_PATH is set (and the recorded
table below is checked against them); otherwise from that table, recorded from ComfyUI 0.3.64.
"""

import asyncio
import json
import sys

import pytest

from comfy_host import COMFYUI_PATH, import_comfy, requires_comfyui
from pack import REPO, load_pack

WORKFLOWS = REPO / "workflows"
UI_FILE = WORKFLOWS / "anycrowd_wan21_vace_1.3B.json"
API_FILE = WORKFLOWS / "anycrowd_wan21_vace_1.3B_api.json"
RECORDED_COMFYUI_VERSION = "0.3.64"
# every shipped workflow: UI file, API file and their builder functions in build_workflows.py
WORKFLOW_PAIRS = {
    "basic": ("anycrowd_wan21_vace_1.3B.json", "anycrowd_wan21_vace_1.3B_api.json", "ui_workflow", "api_prompt"),
    "long_face": ("anycrowd_long_face_wan21_vace_1.3B.json", "anycrowd_long_face_wan21_vace_1.3B_api.json",
                  "long_ui_workflow", "long_api_prompt"),
    "mini_cpu": ("anycrowd_mini_cpu.json", "anycrowd_mini_cpu_api.json", "mini_ui_workflow", "mini_api_prompt"),
    "identity_masks": ("anycrowd_identity_masks_wan21_vace_1.3B.json", "anycrowd_identity_masks_wan21_vace_1.3B_api.json",
                       "idm_ui_workflow", "idm_api_prompt"),
    "wan22_vace_fun": ("anycrowd_wan22_vace_fun_A14B.json", "anycrowd_wan22_vace_fun_A14B_api.json",
                       "wan22_ui_workflow", "wan22_api_prompt"),
}


@pytest.fixture(autouse=True, params=list(WORKFLOW_PAIRS))
def workflow_pair(request, monkeypatch):
    """Runs every test once per shipped workflow (UI_FILE / API_FILE point at that pair)."""
    ui_name, api_name, ui_builder, api_builder = WORKFLOW_PAIRS[request.param]
    monkeypatch.setitem(globals(), "UI_FILE", WORKFLOWS / ui_name)
    monkeypatch.setitem(globals(), "API_FILE", WORKFLOWS / api_name)
    return ui_builder, api_builder

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL = "__control_after_generate__"
UPLOAD = "__upload__"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image", "file"}

def normalize(cls) -> dict:
    types = cls.INPUT_TYPES()
    inputs, widgets, combos, upload = {}, [], {}, False
    for section in ("required", "optional"):
        for name, decl in types.get(section, {}).items():
            t = decl[0]
            opts = decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {}
            if isinstance(t, (list, tuple)):
                if name not in FILE_INPUTS:
                    combos[name] = [str(v) for v in t]
                t = "COMBO"
            elif t == "COMBO":
                if name not in FILE_INPUTS and "options" in opts:
                    combos[name] = [str(v) for v in opts["options"]]
            inputs[name] = [t, section]
            if t in WIDGET_TYPES:
                widgets.append(name)
                control = opts.get("control_after_generate")
                if control is None:  # the front end's legacy rule: INT seed / noise_seed get a control widget
                    control = t == "INT" and name in ("seed", "noise_seed")
                if control:
                    widgets.append(CONTROL)
            upload = upload or bool(opts.get("image_upload") or opts.get("video_upload"))
    if upload:
        widgets.append(UPLOAD)
    return {"inputs": inputs, "widgets": widgets, "combos": combos, "outputs": list(cls.RETURN_TYPES)}


# normalize() of each native node the workflows use, recorded from ComfyUI 0.3.64.
RECORDED_NATIVE = {
    'UNETLoader': {"inputs": {"unet_name": ["COMBO", "required"], "weight_dtype": ["COMBO", "required"]}, "widgets": ["unet_name", "weight_dtype"], "combos": {"weight_dtype": ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]}, "outputs": ["MODEL"]},
    'CLIPLoader': {"inputs": {"clip_name": ["COMBO", "required"], "type": ["COMBO", "required"], "device": ["COMBO", "optional"]}, "widgets": ["clip_name", "type", "device"], "combos": {"type": ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"], "device": ["default", "cpu"]}, "outputs": ["CLIP"]},
    'VAELoader': {"inputs": {"vae_name": ["COMBO", "required"]}, "widgets": ["vae_name"], "combos": {}, "outputs": ["VAE"]},
    'CLIPTextEncode': {"inputs": {"text": ["STRING", "required"], "clip": ["CLIP", "required"]}, "widgets": ["text"], "combos": {}, "outputs": ["CONDITIONING"]},
    'LoadImage': {"inputs": {"image": ["COMBO", "required"]}, "widgets": ["image", "__upload__"], "combos": {}, "outputs": ["IMAGE", "MASK"]},
    'LoadImageMask': {"inputs": {"image": ["COMBO", "required"], "channel": ["COMBO", "required"]}, "widgets": ["image", "channel", "__upload__"], "combos": {"channel": ["alpha", "red", "green", "blue"]}, "outputs": ["MASK"]},
    'MaskToImage': {"inputs": {"mask": ["MASK", "required"]}, "widgets": [], "combos": {}, "outputs": ["IMAGE"]},
    'ImageBatch': {"inputs": {"image1": ["IMAGE", "required"], "image2": ["IMAGE", "required"]}, "widgets": [], "combos": {}, "outputs": ["IMAGE"]},
    'ImageToMask': {"inputs": {"image": ["IMAGE", "required"], "channel": ["COMBO", "required"]}, "widgets": ["channel"], "combos": {"channel": ["red", "green", "blue", "alpha"]}, "outputs": ["MASK"]},
    'LoadVideo': {"inputs": {"file": ["COMBO", "required"]}, "widgets": ["file", "__upload__"], "combos": {}, "outputs": ["VIDEO"]},
    'GetVideoComponents': {"inputs": {"video": ["VIDEO", "required"]}, "widgets": [], "combos": {}, "outputs": ["IMAGE", "AUDIO", "FLOAT"]},
    'ImageFromBatch': {"inputs": {"image": ["IMAGE", "required"], "batch_index": ["INT", "required"], "length": ["INT", "required"]}, "widgets": ["batch_index", "length"], "combos": {}, "outputs": ["IMAGE"]},
    'VAEDecode': {"inputs": {"samples": ["LATENT", "required"], "vae": ["VAE", "required"]}, "widgets": [], "combos": {}, "outputs": ["IMAGE"]},
    'CreateVideo': {"inputs": {"images": ["IMAGE", "required"], "fps": ["FLOAT", "required"], "audio": ["AUDIO", "optional"]}, "widgets": ["fps"], "combos": {}, "outputs": ["VIDEO"]},
    'SaveVideo': {"inputs": {"video": ["VIDEO", "required"], "filename_prefix": ["STRING", "required"], "format": ["COMBO", "required"], "codec": ["COMBO", "required"]}, "widgets": ["filename_prefix", "format", "codec"], "combos": {"format": ["auto", "mp4"], "codec": ["auto", "h264"]}, "outputs": []},
    'PreviewImage': {"inputs": {"images": ["IMAGE", "required"]}, "widgets": [], "combos": {}, "outputs": []},
}


def ui():
    return json.loads(UI_FILE.read_text())


def api():
    return json.loads(API_FILE.read_text())


def our_definitions() -> dict:
    return {key: normalize(cls) for key, cls in load_pack().NODE_CLASS_MAPPINGS.items()}


_HOST_CACHE: dict = {}


def host_native_definitions() -> dict:
    """normalize() of ComfyUI's real NODE_CLASS_MAPPINGS, built-in extras included."""
    if not _HOST_CACHE:
        import_comfy()
        import utils.install_util  # noqa: F401  (ComfyUI's server imports it first; extras rely on it)
        import nodes as comfy_nodes  # ComfyUI's top-level module; ours is loaded as comfyui_anycrowd.nodes

        if "ImageFromBatch" not in comfy_nodes.NODE_CLASS_MAPPINGS:
            asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        for key in RECORDED_NATIVE:
            _HOST_CACHE[key] = normalize(comfy_nodes.NODE_CLASS_MAPPINGS[key])
    return _HOST_CACHE


def definitions() -> dict:
    native = host_native_definitions() if COMFYUI_PATH else RECORDED_NATIVE
    return {**native, **our_definitions()}


def widget_values(node: dict, definition: dict) -> dict:
    values = node["widgets_values"]
    names = definition["widgets"]
    assert len(values) == len(names), f"node {node['id']} ({node['type']}): {len(values)} widget values for {names}"
    return {n: v for n, v in zip(names, values) if n not in (CONTROL, UPLOAD)}


def test_both_files_parse_and_ui_is_frontend_format_0_4():
    workflow = ui()
    assert workflow["version"] == 0.4
    for key in ("nodes", "links", "last_node_id", "last_link_id"):
        assert key in workflow
    assert all(set(n) >= {"id", "type", "pos", "size", "inputs", "outputs", "widgets_values"} for n in workflow["nodes"])
    assert all(len(link) == 6 for link in workflow["links"])
    assert all(set(v) >= {"class_type", "inputs"} for v in api().values())


def test_every_node_class_exists():
    defs = definitions()
    missing = {n["type"] for n in ui()["nodes"]} - set(defs)
    missing |= {v["class_type"] for v in api().values()} - set(defs)
    assert not missing


def test_every_ui_link_connects_existing_sockets_of_matching_type():
    defs = definitions()
    workflow = ui()
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, ltype in workflow["links"]:
        out_type = defs[by_id[src]["type"]]["outputs"][src_slot]
        target = by_id[dst]["inputs"][dst_slot]
        in_type = defs[by_id[dst]["type"]]["inputs"][target["name"]][0]
        assert out_type == in_type == ltype, f"link {link_id}: {out_type} -> {target['name']} ({in_type})"
        assert target["link"] == link_id and link_id in by_id[src]["outputs"][src_slot]["links"]


def test_ui_sockets_and_widgets_match_the_definitions():
    defs = definitions()
    for node in ui()["nodes"]:
        d = defs[node["type"]]
        for socket in node["inputs"]:
            assert socket["name"] in d["inputs"], f"{node['type']} has no input {socket['name']}"
            assert socket["type"] == d["inputs"][socket["name"]][0]
        assert [o["type"] for o in node["outputs"]] == d["outputs"]
        for name, value in widget_values(node, d).items():
            if name in d["combos"]:
                assert str(value) in d["combos"][name], f"{node['type']}.{name} = {value!r}"


def test_api_inputs_exist_required_ones_are_given_and_links_match_types():
    defs = definitions()
    prompt = api()
    for nid, node in prompt.items():
        d = defs[node["class_type"]]
        for name, value in node["inputs"].items():
            assert name in d["inputs"], f"{nid} {node['class_type']} has no input {name}"
            if isinstance(value, list):
                src = prompt[value[0]]
                assert defs[src["class_type"]]["outputs"][value[1]] == d["inputs"][name][0], f"{nid}.{name}"
            elif name in d["combos"]:
                assert str(value) in d["combos"][name], f"{node['class_type']}.{name} = {value!r}"
        required = {n for n, (t, section) in d["inputs"].items() if section == "required"}
        assert required <= set(node["inputs"]), f"{nid} {node['class_type']} misses {required - set(node['inputs'])}"


def test_ui_and_api_describe_the_same_graph():
    defs = definitions()
    workflow, prompt = ui(), api()
    assert {str(n["id"]) for n in workflow["nodes"]} == set(prompt)
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        entry = prompt[str(node["id"])]
        assert entry["class_type"] == node["type"]
        expected = dict(widget_values(node, defs[node["type"]]))
        for socket in node["inputs"]:
            if socket["link"] is not None:
                link = next(l for l in workflow["links"] if l[0] == socket["link"])
                expected[socket["name"]] = [str(link[1]), link[2]]
        assert entry["inputs"] == expected, f"node {node['id']} ({node['type']})"
    assert len(workflow["links"]) == sum(isinstance(v, list) for e in prompt.values() for v in e["inputs"].values())
    assert all(by_id[l[1]] and by_id[l[3]] for l in workflow["links"])


def test_workflow_uses_comfyuis_repackaged_wan21_file_names():
    inputs = {e["class_type"]: e["inputs"] for e in api().values()}
    if "AnyCrowdMiniLoader" in inputs:  # the CPU demo loads no Wan file at all
        assert not {"UNETLoader", "CLIPLoader", "VAELoader"} & set(inputs)
        return
    unets = [e["inputs"]["unet_name"] for e in api().values() if e["class_type"] == "UNETLoader"]
    if len(unets) == 2:  # Wan 2.2 VACE-Fun A14B: its experts as Comfy-Org's Wan 2.2 repackage names them
        assert unets == [WAN22_HIGH_NOISE, WAN22_LOW_NOISE]
    else:
        assert unets == ["wan2.1_vace_1.3B_fp16.safetensors"]
    assert inputs["VAELoader"]["vae_name"] == "wan_2.1_vae.safetensors"
    assert inputs["CLIPLoader"] == {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}


WAN22_HIGH_NOISE = "wan2.2_fun_vace_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW_NOISE = "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors"


def test_the_wan22_workflow_runs_both_experts_in_one_anycrowd_sampler(workflow_pair):
    if workflow_pair[1] != "wan22_api_prompt":
        pytest.skip("only the Wan 2.2 VACE-Fun workflow has two experts")
    prompt = api()
    (sampler,) = [e["inputs"] for e in prompt.values() if e["class_type"] == "AnyCrowdSampler"]
    high, low = (prompt[sampler[name][0]] for name in ("model", "low_noise_model"))
    assert (high["class_type"], low["class_type"]) == ("UNETLoader", "UNETLoader")
    assert (high["inputs"]["unet_name"], low["inputs"]["unet_name"]) == (WAN22_HIGH_NOISE, WAN22_LOW_NOISE)
    assert sampler["switch_boundary"] == 0.875  # Wan 2.2 T2V-A14B's boundary, the base of VACE-Fun
    # one layout for both experts: the sampler's conditioning, latent and layout come from one IILR Encode
    assert {sampler[k][0] for k in ("positive", "negative", "latent", "layout")} == {
        k for k, e in prompt.items() if e["class_type"] == "AnyCrowdIILREncode"}
    create = next(e["inputs"] for e in prompt.values() if e["class_type"] == "CreateVideo")
    assert prompt[create["fps"][0]]["class_type"] == "GetVideoComponents" and create["fps"][1] == 2


def test_files_are_what_the_builder_writes(workflow_pair):
    sys.path.insert(0, str(WORKFLOWS))
    try:
        import build_workflows
    finally:
        sys.path.remove(str(WORKFLOWS))
    ui_builder, api_builder = workflow_pair
    assert ui() == json.loads(json.dumps(getattr(build_workflows, ui_builder)()))
    assert api() == json.loads(json.dumps(getattr(build_workflows, api_builder)()))


@requires_comfyui
def test_recorded_native_table_matches_the_host():
    host = host_native_definitions()
    for key, recorded in RECORDED_NATIVE.items():
        assert host[key] == recorded, f"{key} differs from ComfyUI at COMFYUI_PATH (recorded from {RECORDED_COMFYUI_VERSION})"
