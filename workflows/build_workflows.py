"""Writes the example workflows of this folder from one graph description, so the UI
workflow (drag-and-drop, ComfyUI front-end format 0.4) and the API prompt stay the same graph.

Run from the repository root: `python workflows/build_workflows.py`. tests/test_workflows.py
checks the written files against ComfyUI's node definitions.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
UI_FILE = HERE / "anycrowd_wan21_vace_1.3B.json"
API_FILE = HERE / "anycrowd_wan21_vace_1.3B_api.json"

CONTROL = "__control_after_generate__"  # UI-only widget value after a seed widget: the front end adds one
# after every INT input declaring control_after_generate AND (legacy rule) every INT named seed / noise_seed
UPLOAD = "__upload__"  # UI-only value of the upload button of Load Image / Load Video

# Socket (non-widget) inputs and outputs (name, type) of each node type used, in order.
SOCKETS = {
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadImageMask": ([], [("MASK", "MASK")]),
    "MaskToImage": ([("mask", "MASK")], [("IMAGE", "IMAGE")]),
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ImageToMask": ([("image", "IMAGE")], [("MASK", "MASK")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "ImageFromBatch": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "AnyCrowdInstanceDecoupler": (
        [("image", "IMAGE"), ("masks", "MASK"), ("align_to", "ANYCROWD_TRACKS"), ("reference_pose", "POSE_KEYPOINT")],
        [("instances", "ANYCROWD_INSTANCES"), ("preview", "IMAGE")],
    ),
    "AnyCrowdIILREncode": (
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
         ("instances", "ANYCROWD_INSTANCES"), ("control_video", "IMAGE"), ("track_masks", "MASK"),
         ("control_masks", "MASK"), ("tracks", "ANYCROWD_TRACKS")],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
         ("trim_latent", "INT"), ("layout", "ANYCROWD_LAYOUT")],
    ),
    "AnyCrowdSampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
         ("layout", "ANYCROWD_LAYOUT"), ("gates", "ANYCROWD_GATES"), ("low_noise_model", "MODEL"),
         ("low_noise_gates", "ANYCROWD_GATES")],
        [("latent", "LATENT")],
    ),
}

POSITIVE = "two people dancing side by side in a bright studio, full body, smooth natural motion"
NEGATIVE = "blurry, low quality, distorted bodies, extra limbs, flickering, static frame, watermark, text"
# Two characters crossing over 81 frames; fractions of the control video's width/height.
BOXES = (
    "# character 0 walks left -> right, character 1 right -> left (fractions of the frame)\n"
    "0: 0.08,0.10,0.40,0.98; 80: 0.58,0.10,0.90,0.98\n"
    "0: 0.60,0.10,0.92,0.98; 80: 0.10,0.10,0.42,0.98"
)

# id: (type, pos, size, {input: (source id, output slot)}, [(widget, value), ...], title)
GRAPH = {
    1: ("UNETLoader", (40, 60), (330, 82), {}, [("unet_name", "wan2.1_vace_1.3B_fp16.safetensors"), ("weight_dtype", "default")], "Load Diffusion Model (Wan 2.1 VACE 1.3B)"),
    2: ("CLIPLoader", (40, 190), (330, 106), {}, [("clip_name", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"), ("type", "wan"), ("device", "default")], None),
    3: ("VAELoader", (40, 340), (330, 58), {}, [("vae_name", "wan_2.1_vae.safetensors")], None),
    4: ("CLIPTextEncode", (420, 60), (400, 140), {"clip": (2, 0)}, [("text", POSITIVE)], "Positive prompt"),
    5: ("CLIPTextEncode", (420, 240), (400, 140), {"clip": (2, 0)}, [("text", NEGATIVE)], "Negative prompt"),
    6: ("LoadImage", (40, 460), (320, 330), {}, [("image", "anycrowd_reference.png"), (UPLOAD, "image")], "Reference image (all characters)"),
    7: ("LoadImageMask", (40, 840), (320, 330), {}, [("image", "anycrowd_mask_0.png"), ("channel", "red"), (UPLOAD, "image")], "Mask of character 0"),
    8: ("LoadImageMask", (40, 1220), (320, 330), {}, [("image", "anycrowd_mask_1.png"), ("channel", "red"), (UPLOAD, "image")], "Mask of character 1"),
    9: ("MaskToImage", (400, 860), (200, 26), {"mask": (7, 0)}, [], None),
    10: ("MaskToImage", (400, 1240), (200, 26), {"mask": (8, 0)}, [], None),
    11: ("ImageBatch", (640, 1000), (210, 46), {"image1": (9, 0), "image2": (10, 0)}, [], "Batch the masks (add one per extra character)"),
    12: ("ImageToMask", (880, 1000), (210, 58), {"image": (11, 0)}, [("channel", "red")], None),
    13: ("AnyCrowdInstanceDecoupler", (880, 460), (320, 150), {"image": (6, 0), "masks": (12, 0)}, [("reassign", False), ("seed", 0), (CONTROL, "fixed"), ("background_fill", "gray"), ("anchor_frame", -1), ("align_binding", "")], None),
    14: ("PreviewImage", (1240, 700), (420, 260), {"images": (13, 1)}, [], "Isolated characters + background"),
    15: ("LoadVideo", (420, 1600), (320, 330), {}, [("file", "anycrowd_pose.mp4"), (UPLOAD, "image")], "Driving pose video"),
    16: ("GetVideoComponents", (780, 1600), (230, 70), {"video": (15, 0)}, [], None),
    17: ("ImageFromBatch", (1040, 1600), (240, 82), {"image": (16, 0)}, [("batch_index", 0), ("length", 81)], "First 81 frames"),
    18: ("AnyCrowdIILREncode", (1240, 60), (420, 560),
         {"positive": (4, 0), "negative": (5, 0), "vae": (3, 0), "instances": (13, 0), "control_video": (17, 0)},
         [("width", 832), ("height", 480), ("length", 81), ("batch_size", 1), ("strength", 1.0), ("boxes", BOXES),
          ("binding", ""), ("background_reference", True)], None),
    19: ("AnyCrowdSampler", (1700, 60), (340, 420),
         {"model": (1, 0), "positive": (18, 0), "negative": (18, 1), "latent": (18, 2), "layout": (18, 4)},
         [("attention_mode", "masked"), ("agf_mode", "gated"), ("seed", 42), (CONTROL, "fixed"), ("steps", 20),
          ("cfg", 6.0), ("sampler_name", "uni_pc"), ("scheduler", "simple"), ("shift", 8.0), ("denoise", 1.0),
          ("guidance", "cfg"), ("ref_cfg", 1.5), ("switch_boundary", 0.875)], None),
    20: ("VAEDecode", (2080, 60), (210, 46), {"samples": (19, 0), "vae": (3, 0)}, [], None),
    21: ("CreateVideo", (2080, 160), (270, 78), {"images": (20, 0), "fps": (16, 2)}, [("fps", 16.0)], "Create Video (at the driving video's fps)"),
    22: ("SaveVideo", (2080, 290), (420, 420), {"video": (21, 0)}, [("filename_prefix", "video/AnyCrowd"), ("format", "auto"), ("codec", "auto")], None),
}


def widgets_with(widgets: list, **changes) -> list:
    """A node's widget list with some values changed: a graph reusing another graph's node
    keeps every other value (and any widget added later) in step with it."""
    return [(name, changes.get(name, value)) for name, value in widgets]


def api_prompt(graph: dict | None = None) -> dict:
    graph = GRAPH if graph is None else graph
    prompt = {}
    for nid, (ntype, _pos, _size, links, widgets, title) in graph.items():
        inputs = {name: value for name, value in widgets if name not in (CONTROL, UPLOAD)}
        inputs.update({name: [str(src), slot] for name, (src, slot) in links.items()})
        prompt[str(nid)] = {"class_type": ntype, "inputs": inputs, "_meta": {"title": title or ntype}}
    return prompt


def ui_workflow(graph: dict | None = None, sockets: dict | None = None,
                workflow_id: str = "5f1c2a7e-4b7d-4f3e-9a51-0a9c0d0e0001") -> dict:
    graph = GRAPH if graph is None else graph
    sockets = SOCKETS if sockets is None else sockets
    links, incoming, outgoing, node_inputs = [], {}, {}, {}
    for nid, (ntype, _p, _s, node_links, widgets, _title) in graph.items():
        # socket inputs, then each widget fed by a link (a widget converted to an input, e.g.
        # CreateVideo's fps taken from the driving video): the front end marks those with "widget".
        # It gives every widget an input slot after the sockets, in widget order, so the widgets
        # before a linked one are written as unlinked widget inputs too (the link's slot then
        # matches, e.g. IILR Encode's binding fed by Identity Masks). Their type comes from the
        # value: a combo widget before a linked widget would need its type written here.
        ins = [{"name": n, "type": t} for n, t in sockets[ntype][0]]
        real = [(w, v) for w, v in widgets if w not in (CONTROL, UPLOAD)]
        linked = [i for i, (w, _v) in enumerate(real) if w in node_links]
        for name, value in real[: max(linked) + 1 if linked else 0]:
            if name in node_links:
                src, slot = node_links[name]
                wtype = sockets[graph[src][0]][1][slot][1]
            else:
                wtype = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}[type(value)]
            ins.append({"name": name, "type": wtype, "widget": {"name": name}})
        node_inputs[nid] = ins
        for name, (src, slot) in node_links.items():
            ltype = sockets[graph[src][0]][1][slot][1]
            to_slot = [i["name"] for i in ins].index(name)
            link_id = len(links) + 1
            links.append([link_id, src, slot, nid, to_slot, ltype])
            incoming[(nid, name)] = link_id
            outgoing.setdefault((src, slot), []).append(link_id)
    nodes = []
    for order, (nid, (ntype, pos, size, _links, widgets, title)) in enumerate(graph.items()):
        outs = sockets[ntype][1]
        node = {
            "id": nid, "type": ntype, "pos": list(pos), "size": list(size), "flags": {}, "order": order, "mode": 0,
            "inputs": [{**i, "link": incoming.get((nid, i["name"]))} for i in node_inputs[nid]],
            "outputs": [
                {"name": n, "type": t, "links": outgoing.get((nid, i), []), **({"slot_index": i} if (nid, i) in outgoing else {})}
                for i, (n, t) in enumerate(outs)
            ],
            "properties": {"Node name for S&R": ntype},
            "widgets_values": [value for _name, value in widgets],
        }
        if title:
            node["title"] = title
        nodes.append(node)
    return {
        "id": workflow_id,
        "revision": 0,
        "last_node_id": max(graph),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}, "anycrowd": "generated by workflows/build_workflows.py"},
        "version": 0.4,
    }


# --- second example: a long multi-character video with face control ----------------------------
# Loaders, prompts, reference image, masks and decoupler are nodes 1-14 of GRAPH (kept in sync);
# the driving video is real footage of any length: poses, tracks and faces come from it.

LONG_UI_FILE = HERE / "anycrowd_long_face_wan21_vace_1.3B.json"
LONG_API_FILE = HERE / "anycrowd_long_face_wan21_vace_1.3B_api.json"

LONG_SOCKETS = {
    "AnyCrowdPoseExtractor": (
        [("images", "IMAGE")],
        [("tracks", "ANYCROWD_TRACKS"), ("pose_video", "IMAGE"), ("pose_keypoint", "POSE_KEYPOINT"), ("preview", "IMAGE")],
    ),
    "AnyCrowdFaceControl": (
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"), ("images", "IMAGE"),
         ("layout", "ANYCROWD_LAYOUT"), ("tracks", "ANYCROWD_TRACKS"), ("pose_keypoint", "POSE_KEYPOINT")],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("face_video", "IMAGE")],
    ),
    "AnyCrowdLongVideoSampler": (
        [("model", "MODEL"), ("vae", "VAE"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
         ("instances", "ANYCROWD_INSTANCES"), ("control_video", "IMAGE"), ("tracks", "ANYCROWD_TRACKS"),
         ("face_video", "IMAGE"), ("gates", "ANYCROWD_GATES")],
        [("images", "IMAGE")],
    ),
}

LONG_GRAPH = {
    **{nid: GRAPH[nid] for nid in range(1, 15)},
    15: ("LoadVideo", (420, 1600), (320, 330), {}, [("file", "anycrowd_driving.mp4"), (UPLOAD, "image")], "Driving video (real footage, any length)"),
    16: ("GetVideoComponents", (780, 1600), (230, 70), {"video": (15, 0)}, [], None),
    17: ("AnyCrowdPoseExtractor", (1040, 1600), (340, 420), {"images": (16, 0)},
         [("detector_model", "yolox_l.onnx"), ("pose_model", "dw-ll_ucoco_384.onnx"), ("providers", "auto"),
          ("det_threshold", 0.3), ("max_gap", 8), ("min_track_length", 3), ("smoothing", 0.0), ("max_people", 0),
          ("draw_body", True), ("draw_hands", True), ("draw_face", True), ("light_head", False),
          ("release_models", False), ("appearance", True), ("edits", "")], "Poses + identity tracks of the whole video"),
    18: ("PreviewImage", (1420, 1600), (420, 260), {"images": (17, 3)}, [], "Track ids (for the binding)"),
    19: ("AnyCrowdFaceControl", (1240, 1000), (340, 260),
         {"positive": (4, 0), "negative": (5, 0), "vae": (3, 0), "images": (16, 0), "tracks": (17, 0)},
         [("mode", "local"), ("strength", 0.5), ("enlarge", 1.5), ("binding", "")], "Face control video (eyes + mouth)"),
    20: ("PreviewImage", (1620, 1000), (420, 260), {"images": (19, 2)}, [], "Face control video"),
    21: ("AnyCrowdLongVideoSampler", (1700, 60), (360, 620),
         {"model": (1, 0), "vae": (3, 0), "positive": (4, 0), "negative": (5, 0), "instances": (13, 0),
          "control_video": (17, 1), "tracks": (17, 0), "face_video": (19, 2)},
         [("width", 832), ("height", 480), ("strength", 1.0), ("boxes", ""), ("binding", ""),
          ("attention_mode", "masked"), ("agf_mode", "gated"), ("seed", 42), (CONTROL, "fixed"), ("steps", 20),
          ("cfg", 6.0), ("sampler_name", "uni_pc"), ("scheduler", "simple"), ("shift", 8.0),
          ("strategy", "token_replace"), ("segment_frames", 81), ("overlap_frames", 5), ("face_strength", 0.5),
          ("background_reference", True), ("guidance", "cfg"), ("ref_cfg", 1.5)], None),
    22: ("CreateVideo", (2100, 60), (270, 78), {"images": (21, 0), "fps": (16, 2)}, [("fps", 16.0)], "Create Video (at the driving video's fps)"),
    23: ("SaveVideo", (2100, 190), (420, 420), {"video": (22, 0)}, [("filename_prefix", "video/AnyCrowd_long"), ("format", "auto"), ("codec", "auto")], None),
}


def long_api_prompt() -> dict:
    return api_prompt(LONG_GRAPH)


def long_ui_workflow() -> dict:
    return ui_workflow(LONG_GRAPH, {**SOCKETS, **LONG_SOCKETS}, workflow_id="5f1c2a7e-4b7d-4f3e-9a51-0a9c0d0e0002")


# --- third example: the whole graph on a CPU with AnyCrowd-Mini, before any Wan download -------
# The miniature shipped with the package (anycrowd_core/mini, docs/mini.md) replaces the Wan model,
# the text encoder and the VAE: AnyCrowd Mini Loader gives MODEL, GATES, VAE and the empty prompt.
# Reference image, masks and decoupler are nodes 6-14 of GRAPH (kept in sync); the inputs are the
# example files at the miniature's trained size (example_inputs --frames 9 --height 128 --width 192).

MINI_UI_FILE = HERE / "anycrowd_mini_cpu.json"
MINI_API_FILE = HERE / "anycrowd_mini_cpu_api.json"
MINI_VARIANT = "anycrowd (base + LoRA + gates)"

MINI_SOCKETS = {
    "AnyCrowdMiniLoader": (
        [],
        [("model", "MODEL"), ("gates", "ANYCROWD_GATES"), ("vae", "VAE"), ("conditioning", "CONDITIONING"),
         ("info", "STRING")],
    ),
}
# The two characters of the 9-frame example scene crossing, as fractions of the frame.
MINI_BOXES = (
    "# character 0 walks left -> right, character 1 right -> left (fractions of the frame)\n"
    "0: 0.15,0.33,0.36,0.92; 8: 0.65,0.33,0.86,0.92\n"
    "0: 0.64,0.37,0.86,0.97; 8: 0.14,0.37,0.36,0.97"
)

MINI_GRAPH = {
    1: ("AnyCrowdMiniLoader", (40, 60), (330, 170), {}, [("variant", MINI_VARIANT)], "AnyCrowd-Mini (CPU demo model, no Wan download)"),
    **{nid: GRAPH[nid] for nid in range(6, 15)},
    15: ("LoadVideo", (420, 1600), (320, 330), {}, [("file", "anycrowd_pose.mp4"), (UPLOAD, "image")], "Driving pose video (9 frames, 192x128)"),
    16: ("GetVideoComponents", (780, 1600), (230, 70), {"video": (15, 0)}, [], None),
    17: ("ImageFromBatch", (1040, 1600), (240, 82), {"image": (16, 0)}, [("batch_index", 0), ("length", 9)], "First 9 frames"),
    18: ("AnyCrowdIILREncode", (1240, 60), (420, 560),
         {"positive": (1, 3), "negative": (1, 3), "vae": (1, 2), "instances": (13, 0), "control_video": (17, 0)},
         [("width", 192), ("height", 128), ("length", 9), ("batch_size", 1), ("strength", 1.0), ("boxes", MINI_BOXES),
          ("binding", ""), ("background_reference", True)], None),
    19: ("AnyCrowdSampler", (1700, 60), (340, 420),
         {"model": (1, 0), "positive": (18, 0), "negative": (18, 1), "latent": (18, 2), "layout": (18, 4),
          "gates": (1, 1)},
         [("attention_mode", "tsda"), ("agf_mode", "gated"), ("seed", 0), (CONTROL, "fixed"), ("steps", 10),
          ("cfg", 1.0), ("sampler_name", "euler"), ("scheduler", "simple"), ("shift", 3.0), ("denoise", 1.0),
          ("guidance", "cfg"), ("ref_cfg", 1.5), ("switch_boundary", 0.875)],
         "AnyCrowd Sampler (the miniature's settings)"),
    20: ("VAEDecode", (2080, 60), (210, 46), {"samples": (19, 0), "vae": (1, 2)}, [], None),
    21: ("CreateVideo", (2080, 160), (270, 78), {"images": (20, 0), "fps": (16, 2)}, [("fps", 8.0)], "Create Video (at the driving video's fps)"),
    22: ("SaveVideo", (2080, 290), (420, 420), {"video": (21, 0)}, [("filename_prefix", "video/AnyCrowd_mini"), ("format", "auto"), ("codec", "auto")], None),
}


def mini_api_prompt() -> dict:
    return api_prompt(MINI_GRAPH)


def mini_ui_workflow() -> dict:
    return ui_workflow(MINI_GRAPH, {**SOCKETS, **MINI_SOCKETS}, workflow_id="5f1c2a7e-4b7d-4f3e-9a51-0a9c0d0e0003")


# --- fourth example: identities from SCAIL-2 colour masks / SAM3 tracks (AnyCrowd Identity Masks) ---
# Loaders, prompts and the reference image are nodes 1-6 of GRAPH (kept in sync). The colour mask
# video is what a SCAIL-2 graph has (SCAIL2ColoredMask's pose_video_mask, saved as a video); the
# reference colour mask is its reference_image_mask. Identity Masks gives the Decoupler its masks
# and IILR Encode its tracks and binding (docs/identity_masks.md).

IDM_UI_FILE = HERE / "anycrowd_identity_masks_wan21_vace_1.3B.json"
IDM_API_FILE = HERE / "anycrowd_identity_masks_wan21_vace_1.3B_api.json"

IDM_SOCKETS = {
    "AnyCrowdIdentityMasks": (
        [("mask_video", "IMAGE"), ("reference_mask", "IMAGE"), ("driving_track_data", "SAM3_TRACK_DATA"),
         ("reference_track_data", "SAM3_TRACK_DATA"), ("driving_video", "IMAGE")],
        [("reference_masks", "MASK"), ("tracks", "ANYCROWD_TRACKS"), ("binding", "STRING"), ("track_masks", "MASK"),
         ("mask_video", "IMAGE"), ("preview", "IMAGE")],
    ),
}

IDM_GRAPH = {
    **{nid: GRAPH[nid] for nid in range(1, 7)},
    7: ("LoadImage", (40, 840), (320, 330), {}, [("image", "anycrowd_reference_mask.png"), (UPLOAD, "image")], "Reference colour mask (SCAIL2ColoredMask reference_image_mask)"),
    8: ("LoadVideo", (40, 1220), (320, 330), {}, [("file", "anycrowd_identity_masks.mp4"), (UPLOAD, "image")], "Colour mask video (SCAIL2ColoredMask pose_video_mask)"),
    9: ("GetVideoComponents", (400, 1220), (230, 70), {"video": (8, 0)}, [], None),
    10: ("ImageFromBatch", (660, 1220), (240, 82), {"image": (9, 0)}, [("batch_index", 0), ("length", 81)], "First 81 mask frames"),
    11: ("LoadVideo", (420, 1600), (320, 330), {}, [("file", "anycrowd_pose.mp4"), (UPLOAD, "image")], "Driving pose video"),
    12: ("GetVideoComponents", (780, 1600), (230, 70), {"video": (11, 0)}, [], None),
    13: ("ImageFromBatch", (1040, 1600), (240, 82), {"image": (12, 0)}, [("batch_index", 0), ("length", 81)], "First 81 frames"),
    14: ("AnyCrowdIdentityMasks", (880, 860), (340, 330),
         {"mask_video": (10, 0), "reference_mask": (7, 0), "driving_video": (13, 0)},
         [("reference_frame", 0), ("binding", ""), ("tolerance", 0.5), ("min_area", 16), ("extra_colours", True),
          ("sort_by", "left_to_right")], "Identities from the colour masks (or SAM3 track data)"),
    15: ("PreviewImage", (1240, 1000), (420, 260), {"images": (14, 5)}, [], "Identity numbers (for the binding)"),
    16: ("AnyCrowdInstanceDecoupler", (880, 460), (320, 150), {"image": (6, 0), "masks": (14, 0)}, GRAPH[13][4], None),
    17: ("PreviewImage", (1240, 700), (420, 260), {"images": (16, 1)}, [], "Isolated characters + background"),
    18: ("AnyCrowdIILREncode", (1240, 60), (420, 560),
         {"positive": (4, 0), "negative": (5, 0), "vae": (3, 0), "instances": (16, 0), "control_video": (13, 0),
          "tracks": (14, 1), "binding": (14, 2)},
         widgets_with(GRAPH[18][4], boxes=""), None),
    19: ("AnyCrowdSampler", (1700, 60), (340, 420),
         {"model": (1, 0), "positive": (18, 0), "negative": (18, 1), "latent": (18, 2), "layout": (18, 4)},
         GRAPH[19][4], None),
    20: ("VAEDecode", (2080, 60), (210, 46), {"samples": (19, 0), "vae": (3, 0)}, [], None),
    21: ("CreateVideo", (2080, 160), (270, 78), {"images": (20, 0), "fps": (12, 2)}, [("fps", 16.0)], "Create Video (at the driving video's fps)"),
    22: ("SaveVideo", (2080, 290), (420, 420), {"video": (21, 0)}, [("filename_prefix", "video/AnyCrowd_identity_masks"), ("format", "auto"), ("codec", "auto")], None),
}


def idm_api_prompt() -> dict:
    return api_prompt(IDM_GRAPH)


def idm_ui_workflow() -> dict:
    return ui_workflow(IDM_GRAPH, {**SOCKETS, **IDM_SOCKETS}, workflow_id="5f1c2a7e-4b7d-4f3e-9a51-0a9c0d1d0001")


# --- fourth example: Wan 2.2 VACE-Fun A14B, the two experts -----------------------------------
# Prompts, VAE, reference image, masks, decoupler, driving video and IILR Encode are nodes 2-18 of
# GRAPH (kept in sync). Node 1 loads the high-noise expert, node 23 the low-noise one; AnyCrowd
# Sampler patches both with the same layout and runs them on one schedule, switching below sigma
# 0.875 (docs/comfyui_nodes.md, "Wan 2.2 VACE-Fun A14B"). File names: Comfy-Org's repackaged
# Wan 2.2 files; the experts use the Wan 2.1 VAE and text encoder. cfg 5 and shift 12 are the
# settings of VideoX-Fun's VACE-Fun A14B examples (examples/wan2.2_vace_fun/predict_v2v_control_ref.py).

WAN22_UI_FILE = HERE / "anycrowd_wan22_vace_fun_A14B.json"
WAN22_API_FILE = HERE / "anycrowd_wan22_vace_fun_A14B_api.json"
WAN22_HIGH_NOISE = "wan2.2_fun_vace_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW_NOISE = "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors"

WAN22_GRAPH = {
    1: ("UNETLoader", (40, 60), (330, 82), {}, [("unet_name", WAN22_HIGH_NOISE), ("weight_dtype", "default")],
        "Load Diffusion Model (Wan 2.2 VACE-Fun A14B, high-noise expert)"),
    23: ("UNETLoader", (420, 420), (330, 82), {}, [("unet_name", WAN22_LOW_NOISE), ("weight_dtype", "default")],
         "Load Diffusion Model (Wan 2.2 VACE-Fun A14B, low-noise expert)"),
    **{nid: GRAPH[nid] for nid in range(2, 19)},
    19: ("AnyCrowdSampler", (1700, 60), (340, 470),
         {"model": (1, 0), "positive": (18, 0), "negative": (18, 1), "latent": (18, 2), "layout": (18, 4),
          "low_noise_model": (23, 0)},
         widgets_with(GRAPH[19][4], cfg=5.0, shift=12.0),
         "AnyCrowd Sampler (both experts, low-noise from sigma < 0.875)"),
    **{nid: GRAPH[nid] for nid in (20, 21)},
    22: ("SaveVideo", (2080, 290), (420, 420), {"video": (21, 0)},
         [("filename_prefix", "video/AnyCrowd_wan22"), ("format", "auto"), ("codec", "auto")], None),
}


def wan22_api_prompt() -> dict:
    return api_prompt(WAN22_GRAPH)


def wan22_ui_workflow() -> dict:
    return ui_workflow(WAN22_GRAPH, workflow_id="5f1c2a7e-4b7d-4f3e-9a51-0a9c0d0e0004")


# every file this script writes, with the function that builds it
FILES = (
    (UI_FILE, ui_workflow), (API_FILE, api_prompt),
    (LONG_UI_FILE, long_ui_workflow), (LONG_API_FILE, long_api_prompt),
    (MINI_UI_FILE, mini_ui_workflow), (MINI_API_FILE, mini_api_prompt),
    (IDM_UI_FILE, idm_ui_workflow), (IDM_API_FILE, idm_api_prompt),
    (WAN22_UI_FILE, wan22_ui_workflow), (WAN22_API_FILE, wan22_api_prompt),
)


def main() -> None:
    for path, build in FILES:
        path.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {', '.join(path.name for path, _build in FILES)}")


if __name__ == "__main__":
    main()
