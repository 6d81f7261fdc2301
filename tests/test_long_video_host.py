"""AnyCrowd Long Video Sampler and Face Control inside a real ComfyUI (skipped unless
COMFYUI_PATH is set): both strategies on the native WAN21_Vace model with native samplers,
token-replace context kept fixed, a single window equal to the plain sampler, the face stream
as a second VACE context seen by the patched model, and the long-video API prompt."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import numpy as np
import pytest
import torch

from anycrowd_core.long_video import plan_segments, plan_windows
from anycrowd_core.pose.types import FACE, NUM_KEYPOINTS, PoseTracks
from anycrowd_core.scenes import make_scene
from comfy_host import assert_progress_reaches, comfy_node_registry, requires_comfyui, text_conditioning
from node_inputs import boxes_text
from pack import REPO
from comfy_vae_stand_in import TestVAE

pytestmark = requires_comfyui

H, W, T = 64, 96, 17
SEG, OVERLAP = 9, 5  # 9-frame segments: 1, 2, 3 segments for 9, 13, 17 frames


def face_template() -> np.ndarray:
    pts = np.zeros((68, 2))
    theta = np.linspace(math.pi, 0, 17)
    pts[0:17] = np.stack([np.cos(theta), 0.1 + 0.9 * np.sin(theta)], -1)
    pts[17:27] = np.stack([np.r_[np.linspace(-0.8, -0.2, 5), np.linspace(0.2, 0.8, 5)], np.full(10, -0.6)], -1)
    pts[27:36] = np.stack([np.r_[np.zeros(4), np.linspace(-0.2, 0.2, 5)], np.r_[np.linspace(-0.4, 0.25, 4), np.full(5, 0.32)]], -1)
    a6, a12, a8 = (np.linspace(0, 2 * math.pi, n, endpoint=False) for n in (6, 12, 8))
    pts[36:42] = np.stack([-0.45 + 0.18 * np.cos(a6), -0.3 + 0.07 * np.sin(a6)], -1)
    pts[42:48] = np.stack([0.45 + 0.18 * np.cos(a6), -0.3 + 0.07 * np.sin(a6)], -1)
    pts[48:60] = np.stack([0.35 * np.cos(a12), 0.6 + 0.12 * np.sin(a12)], -1)
    pts[60:68] = np.stack([0.2 * np.cos(a8), 0.6 + 0.05 * np.sin(a8)], -1)
    return pts


def scene_tracks(scene) -> PoseTracks:
    """The scene's characters as PoseTracks, with face landmarks planted around each nose."""
    m, t = scene.keypoints.shape[:2]
    kp = torch.zeros(m, t, NUM_KEYPOINTS, 3)
    kp[:, :, :18] = scene.keypoints
    nose = scene.keypoints[:, :, 0]
    face = torch.from_numpy(face_template()).float()[None, None] * 3.0 + nose[:, :, None, :2]
    kp[:, :, FACE, :2] = face
    kp[:, :, FACE, 2] = (nose[:, :, 2:] > 0).float() * 0.9
    present = ~torch.isnan(scene.track_boxes).any(-1)
    return PoseTracks(kp, scene.track_boxes.clone(), present, H, W, list(range(m)))


@pytest.fixture(scope="module")
def instances(pack, scene):
    return pack.nodes.node_decoupler.AnyCrowdInstanceDecoupler().decouple(
        scene.reference_image[None], scene.reference_masks.float())[0]


def long_kwargs(scene, instances, frames: int, **overrides):
    args = dict(
        vae=TestVAE(), positive=text_conditioning(1), negative=text_conditioning(2), instances=instances,
        control_video=scene.pose_video[:frames], width=W, height=H, strength=1.0,
        boxes=boxes_text(scene.track_boxes[:, :frames]), binding="", attention_mode="masked", agf_mode="gated",
        seed=3, steps=2, cfg=3.0, sampler_name="euler", scheduler="simple", shift=8.0, strategy="token_replace",
        segment_frames=SEG, overlap_frames=OVERLAP,
    )
    args.update(overrides)
    return args


def record_progress():
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    return calls


# --- both strategies, exact frame counts ----------------------------------------------------

@pytest.mark.parametrize("strategy", ["token_replace", "sliding_window"])
@pytest.mark.parametrize("frames,parts", [(9, 1), (13, 2), (17, 3), (11, 2)])
def test_both_strategies_return_every_frame_once(pack, model, scene, instances, strategy, frames, parts):
    import comfy.utils

    planned = plan_segments(frames, SEG, OVERLAP) if strategy == "token_replace" else plan_windows(frames, SEG, OVERLAP)
    assert len(planned) == parts
    calls = record_progress()
    try:
        node = pack.nodes.node_long_video.AnyCrowdLongVideoSampler()
        images = node.generate(model, **long_kwargs(scene, instances, frames, strategy=strategy))[0]
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert images.shape == (frames, H, W, 3) and images.device.type == "cpu"
    assert torch.isfinite(images).all() and 0 <= float(images.min()) and float(images.max()) <= 1
    total = parts * 2 if strategy == "token_replace" else 2
    assert_progress_reaches(calls, total)


def test_token_replace_keeps_the_context_latents_fixed_at_every_step(pack, model, scene, instances):
    lvc = pack.nodes.long_video_comfy
    node_lv = pack.nodes.node_long_video
    inputs = node_lv.resolve_inputs(instances, scene.pose_video[:13], W, H, boxes_text(scene.track_boxes[:, :13]), "",
                                    None, None, 1.0, 0.5, True)
    options = lvc.SamplingOptions(seed=3, steps=3, cfg=3.0, sampler_name="euler", scheduler="simple")
    seen = {}
    vae = TestVAE()

    def on_step(segment, step, x0, x):
        seen.setdefault(segment, []).append(x0.clone())

    out = lvc.run_token_replace(model, pack.nodes.codec_vae.ComfyVAECodec(vae), inputs, text_conditioning(1),
                                text_conditioning(2), options, segment_frames=SEG, overlap_frames=OVERLAP, on_step=on_step)
    assert out.shape == (13, H, W, 3) and sorted(seen) == [0, 1]
    r = 3  # 2 characters + background
    seg1 = plan_segments(13, SEG, OVERLAP)[1]
    context = vae.codec.encode(out[seg1.start : seg1.start + seg1.context_frames])  # what segment 1 started from
    expected = model.model.process_latent_in(context[None])
    for x0 in seen[1]:  # the sampler's prediction for the context frames is the context itself, bit for bit
        assert torch.equal(x0[:, :, r : r + 2], expected)
    # and the rest of segment 1 really was generated
    assert not torch.equal(seen[1][0][:, :, r + 2 :], seen[1][-1][:, :, r + 2 :])
    # context frames are not written twice: segment 1 only contributes frames 9..12
    assert (seg1.out.start, seg1.out.stop) == (9, 13)


def test_a_sliding_window_covering_the_clip_equals_the_plain_sampler(pack, model, scene, instances):
    frames = 9
    args = long_kwargs(scene, instances, frames, strategy="sliding_window")
    windowed = pack.nodes.node_long_video.AnyCrowdLongVideoSampler().generate(model, **args)[0]
    positive, negative, latent, trim, layout = pack.nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        text_conditioning(1), text_conditioning(2), TestVAE(), instances, scene.pose_video[:frames], W, H, frames, 1, 1.0,
        boxes=args["boxes"])
    plain = pack.nodes.node_sampler.AnyCrowdSampler().sample(
        model, positive, negative, latent, layout, "masked", "gated", 3, 2, 3.0, "euler", "simple", 8.0, 1.0)[0]
    decoded = TestVAE().decode(plain["samples"])[0]
    assert torch.equal(windowed, decoded)


# --- cancel ---------------------------------------------------------------------------------

def test_cancel_stops_between_steps(pack, model, scene, instances):
    import comfy.model_management as mm
    import comfy.utils

    calls = []

    def cancel_after_first(value, total, preview, node_id=None):
        calls.append((value, total))
        mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(cancel_after_first)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack.nodes.node_long_video.AnyCrowdLongVideoSampler().generate(model, **long_kwargs(scene, instances, 17))
        assert calls == [(1, 6)]
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


# --- face control ----------------------------------------------------------------------------

class CountingHook:
    """Wraps the AnyCrowd hook and records (branch, layer, tokens) of every call."""

    def __init__(self, hook):
        self.hook, self.mode, self.branches, self.calls = hook, hook.mode, hook.branches, []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x, ops):
        self.calls.append((ops.branch, ops.index, int(x.shape[1])))
        return self.hook(x, ops)


def test_face_control_appends_a_second_vace_context_that_the_patched_model_runs(pack, model, scene, instances):
    frames = 9
    positive, negative, latent, trim, layout = pack.nodes.node_iilr_encode.AnyCrowdIILREncode().encode(
        text_conditioning(1), text_conditioning(2), TestVAE(), instances, scene.pose_video[:frames], W, H, frames, 1, 1.0,
        boxes=boxes_text(scene.track_boxes[:, :frames]))
    tracks = scene_tracks(scene)
    tracks = PoseTracks(tracks.keypoints[:, :frames], tracks.boxes[:, :frames], tracks.present[:, :frames], H, W, [0, 1])
    fpos, fneg, face_video = pack.nodes.node_face_control.AnyCrowdFaceControl().apply(
        positive, negative, TestVAE(), scene.video[:frames], "local", 0.5, 1.5, layout=layout, tracks=tracks)
    for cond in (fpos, fneg):
        opts = cond[0][1]
        assert len(opts["vace_frames"]) == 2 and opts["vace_strength"] == [1.0, 0.5]
        assert opts["vace_frames"][1].shape == opts["vace_frames"][0].shape
        assert opts["vace_mask"][1].shape == opts["vace_mask"][0].shape
    assert face_video.shape == (frames, H, W, 3)

    patch = pack.nodes.comfy_patch
    patched = patch.patch_model(model, layout, mode="masked")
    counting = CountingHook(patched.model_options["transformer_options"][patch.HOOK_KEY])
    patched.model_options["transformer_options"][patch.HOOK_KEY] = counting
    out = pack.nodes.comfy_runtime.sample(patched, latent, seed=0, steps=1, cfg=1.0, sampler_name="euler",
                                          scheduler="simple", positive=fpos, negative=fneg)
    assert torch.isfinite(out).all()
    dm = model.model.diffusion_model
    vace = [c for c in counting.calls if c[0] == "vace"]
    dit = [c for c in counting.calls if c[0] == "dit"]
    assert len(dit) == len(dm.blocks) and len(vace) == 2 * len(dm.vace_blocks)  # once per context per block
    assert len({c[2] for c in counting.calls}) == 1  # the same tokens in both branches and contexts
    without = pack.nodes.comfy_runtime.sample(patch.patch_model(model, layout), latent, seed=0, steps=1, cfg=1.0,
                                              sampler_name="euler", scheduler="simple", positive=positive,
                                              negative=negative)
    assert not torch.allclose(out, without)


def test_long_video_with_tracks_and_face_video(pack, model, scene, instances):
    tracks = scene_tracks(scene)
    face_video = pack.nodes.node_face_control.AnyCrowdFaceControl().apply(
        text_conditioning(1), text_conditioning(2), TestVAE(), scene.video, "global", 0.5, 1.5, tracks=tracks)[2]
    assert face_video.shape == (T, H, W, 3)
    vae = TestVAE()
    args = long_kwargs(scene, instances, T, boxes="", vae=vae)
    images = pack.nodes.node_long_video.AnyCrowdLongVideoSampler().generate(
        model, **args, tracks=tracks, face_video=face_video, face_strength=0.7)[0]
    assert images.shape == (T, H, W, 3)
    # references encoded once for the whole run (3 single frames), not once per segment
    assert vae.encoded.count(1) == 3


# --- the long-video workflow ----------------------------------------------------------------

def test_long_video_api_prompt_validates_in_comfyui(pack, tmp_path):
    """ComfyUI's own validate_prompt accepts the shipped long-video prompt (file names are
    checked against folders holding empty stand-in files of those names)."""
    comfy_nodes = comfy_node_registry()
    import execution
    import folder_paths

    prompt = json.loads((REPO / "workflows" / "anycrowd_long_face_wan21_vace_1.3B_api.json").read_text())
    files = {"diffusion_models": "unet_name", "text_encoders": "clip_name", "vae": "vae_name"}
    by_key = {key: node["inputs"][key] for node in prompt.values() for key in node["inputs"]}
    added = []
    for folder, key in files.items():
        d = tmp_path / folder
        d.mkdir()
        (d / by_key[key]).write_bytes(b"")
        folder_paths.add_model_folder_path(folder, str(d))
        added.append((folder, str(d)))
    inputs = tmp_path / "input"
    inputs.mkdir()
    for node in prompt.values():
        for key in ("image", "file"):
            if isinstance(node["inputs"].get(key), str):
                (inputs / node["inputs"][key]).write_bytes(b"")
    old_in = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(inputs))
    registered = {k: v for k, v in pack.NODE_CLASS_MAPPINGS.items() if k not in comfy_nodes.NODE_CLASS_MAPPINGS}
    comfy_nodes.NODE_CLASS_MAPPINGS.update(registered)
    try:
        valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        assert valid and not node_errors, (error, node_errors)
        names = {v["class_type"] for v in prompt.values()}
        assert {"AnyCrowdLongVideoSampler", "AnyCrowdFaceControl", "AnyCrowdPoseExtractor"} <= names
    finally:
        for key in registered:
            comfy_nodes.NODE_CLASS_MAPPINGS.pop(key, None)
        folder_paths.set_input_directory(old_in)
        for folder, d in added:
            paths = folder_paths.folder_names_and_paths[folder][0]
            if d in paths:
                paths.remove(d)


@pytest.mark.parametrize("strategy", ["token_replace", "sliding_window"])
def test_cumulative_guidance_option_runs_in_both_strategies(pack, model, scene, instances, strategy):
    """guidance = cumulative: unit scales give the cfg-1 result (u + (p - u) + (f - p) = f),
    other scales a different finite video."""
    node = pack.nodes.node_long_video.AnyCrowdLongVideoSampler()

    def run(**kw):
        return node.generate(model, **long_kwargs(scene, instances, 13, strategy=strategy, **kw))[0]

    plain = run(cfg=1.0)
    unit = run(cfg=1.0, guidance="cumulative", ref_cfg=1.0)
    assert torch.allclose(unit, plain, atol=2e-3), float((unit - plain).abs().max())
    guided = run(cfg=2.0, guidance="cumulative", ref_cfg=1.5)
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-3


def test_long_video_api_prompt_executes_through_comfyuis_executor(tmp_path, pack):
    """The shipped long-video prompt runs end to end in ComfyUI's executor on tiny models: the
    same substitutions as test_nodes_host.make_test_variant (tiny Wan VACE, seeded text
    stand-in, TestVAE), tiny DWPose ONNX graphs (tests/onnx_graphs.py) planting two people in
    an 11-frame 240x416 driving video, 64x96 output, 9-frame segments with 5 overlap (2
    segments), 2 steps. Every other node — Load Image/Mask, the decoupler, Load Video, Get
    Video Components, the Pose Extractor, Face Control, the Long Video Sampler, Create Video
    (fps linked from the driving video) and Save Video — runs unchanged."""
    import av

    from anycrowd_core.video_io import read_video, write_mp4, write_png
    from comfy_host import run_api_prompt, tiny_vace_state_dict_file, with_stand_in_encoders
    from test_node_pose import people_video, write_models

    import folder_paths

    frames, fps = 11, 12
    models, dwpose = tmp_path / "diffusion_models", tmp_path / "dwpose"
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    for d in (models, dwpose, inputs, outputs):
        d.mkdir()
    tiny = tiny_vace_state_dict_file(models, seed=0, name="anycrowd_tiny_wan_vace.safetensors")
    write_models(dwpose)
    ref = make_scene(num_characters=2, num_frames=1, height=H, width=W, seed=0, scenario="crossing")
    write_png(ref.reference_image, inputs / "anycrowd_reference.png")
    for k in range(2):
        write_png(ref.reference_masks[k].float()[..., None].expand(H, W, 3), inputs / f"anycrowd_mask_{k}.png")
    write_mp4(people_video(frames), inputs / "anycrowd_driving.mp4", fps=fps)

    prompt = with_stand_in_encoders(json.loads((REPO / "workflows" / "anycrowd_long_face_wan21_vace_1.3B_api.json").read_text()))
    by_type = {v["class_type"]: k for k, v in prompt.items()}
    prompt[by_type["UNETLoader"]]["inputs"]["unet_name"] = tiny.name
    prompt[by_type["AnyCrowdLongVideoSampler"]]["inputs"].update(
        width=W, height=H, steps=2, segment_frames=SEG, overlap_frames=OVERLAP)

    pack.nodes.pose_models.register_pose_folder()
    saved_dwpose = folder_paths.folder_names_and_paths.get("dwpose")
    saved_dwpose = (list(saved_dwpose[0]), set(saved_dwpose[1])) if saved_dwpose else None
    folder_paths.add_model_folder_path("dwpose", str(dwpose))
    try:
        run_api_prompt(pack, prompt, inputs, outputs, {"diffusion_models": models})
        videos = list(outputs.rglob("AnyCrowd_long*.mp4"))
        assert len(videos) == 1
        assert tuple(read_video(videos[0]).shape[:3]) == (frames, H, W)  # every driving frame, once
        with av.open(str(videos[0])) as container:
            assert container.streams.video[0].average_rate == fps
    finally:
        if saved_dwpose is None:
            folder_paths.folder_names_and_paths.pop("dwpose", None)
        else:
            folder_paths.folder_names_and_paths["dwpose"] = saved_dwpose
        folder_paths.filename_list_cache.pop("dwpose", None)
