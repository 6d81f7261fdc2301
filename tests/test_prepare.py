"""`python -m training.prepare`: procedural dataset -> cache files with the documented keys
and shapes, exact agreement with the core's own encoders, cache reuse and invalidation,
bad clips skipped and reported, atomic writes, and ComfyUI's Wan VAE as codec (host)."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.codec import TestCodec
from anycrowd_core.decoupler import decouple_instances
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.iilr import encode_iilr
from anycrowd_core.latent_format import process_in
from anycrowd_core.layout import build_token_layout
from anycrowd_core.scenes import make_scene
from training import cache_format as cf
from training.crop_resize import CropResize
from training.prepare import main, prepare
from training.prepare_settings import PrepareSettings, sample_seed
from training.procedural_dataset import clip_parameters, generate
from training.prompt_embeddings import TextSource
from training.sample_builder import render_keypoints

H, W, CLIP_FRAMES, FRAMES = 64, 96, 9, 9
TEXT = TextSource("random", dim=8, length=4)


class CountingCodec(TestCodec):
    __test__ = False

    def __init__(self):
        super().__init__(seed=0)
        self.calls = 0

    def encode(self, frames):
        self.calls += 1
        return super().encode(frames)


def settings(**kw):
    return PrepareSettings(**{"width": W, "height": H, "frames": FRAMES, "codec_id": "test:seed=0", **kw})


def run(manifest, out, codec=None, **kw):
    return prepare(manifest, out, settings(**kw), codec or TestCodec(0), TEXT, progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 procedural clips (one of each input variant), 9 frames at 96x64."""
    root = tmp_path_factory.mktemp("procedural")
    return generate(root / "data", clips=4, frames=CLIP_FRAMES, height=H, width=W, seed=0)


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    report = run(data, out)
    assert not report.skipped, report.summary()
    return out


def scene_of(index):
    p = clip_parameters(index)
    return make_scene(num_characters=p["characters"], num_frames=CLIP_FRAMES, height=H, width=W,
                      seed=p["seed"], scenario=p["scenario"])


# ---------------------------------------------------------------- keys, shapes, exact values


def test_cache_files_have_the_documented_keys_and_shapes(cache):
    index = json.loads((cache / cf.INDEX_FILE).read_text())
    assert index["entries"] == [f"clip_{i:03d}.safetensors" for i in range(4)]
    for i, name in enumerate(index["entries"]):
        entry = cf.read_sample(cache / name)
        t, h = entry.tensors, entry.header
        n = clip_parameters(i)["characters"]
        r, t_lat, v = n + 1, (FRAMES - 1) // 4 + 1, ((FRAMES - 1) // 4 + 1) * (H // 16) * (W // 16)
        assert set(t) == set(cf.SAMPLE_KEYS)
        assert t["latents"].shape == (16, t_lat, H // 8, W // 8) and t["latents"].dtype == torch.float32
        assert t["vace_frames"].shape == (16 * 2, r + t_lat, H // 8, W // 8)
        assert t["reference_masks"].shape == (n, H, W) and t["reference_masks"].dtype == torch.uint8
        assert t["track_boxes"].shape == (n, FRAMES, 4)
        assert torch.equal(t["binding"], torch.arange(n))
        assert t["candidates"].shape[0] == v and t["soft_labels"].shape == t["candidates"].shape
        valid = t["candidates"] >= 0
        assert torch.allclose((t["soft_labels"] * valid).sum(1), torch.ones(v))
        assert int(h["trim"]) == r and h["format_version"] == str(cf.FORMAT_VERSION)
        assert len(h["fingerprint"]) == 64 and h["sample_id"] == f"clip_{i:03d}"
        assert torch.equal(t["vace_frames"][16:, :r], torch.zeros(16, r, H // 8, W // 8))
    emb, header = cf.read_text_embeddings(cache)
    assert [tuple(e.shape) for e in emb.values()] == [(1, 4, 8)]
    assert header["source"] == "random" and "RANDOM" in header["warning"] and "RANDOM" in index["warning"]


def test_png_clip_sample_equals_the_core_encoders_run_directly(cache):
    """Clip 3: PNG frames (lossless), array masks, a reference frame, keypoints, tracks JSON."""
    scene = scene_of(3)
    entry = cf.read_sample(cache / "clip_003.safetensors")
    meta = entry.header["meta"]
    assert meta["window"] == [0, 1, FRAMES] and meta["pose_source"] == "keypoints" and meta["box_source"] == "tracks"
    frames = torch.round(scene.video * 255) / 255  # what the PNGs hold
    codec = TestCodec(0)
    assert torch.equal(entry.tensors["latents"], process_in(codec.encode(frames)))

    ref_t = meta["reference_frame"]
    decoupled = decouple_instances(frames[ref_t], scene.track_masks[:, ref_t], reassign=True,
                                   seed=sample_seed(0, "clip_003", 0) % 2**32)
    pose = torch.from_numpy(render_keypoints(scene.keypoints.numpy(), H, W))
    cond = encode_iilr(codec, decoupled, pose)
    assert torch.equal(entry.tensors["vace_frames"], cond.vace_context[:32])
    assert torch.equal(cf.vace_context_from_frames(entry.tensors["vace_frames"], cond.trim), cond.vace_context)
    assert torch.equal(entry.tensors["reference_masks"].bool(), decoupled.masks)
    assert torch.allclose(entry.tensors["track_boxes"], scene.track_boxes, equal_nan=True)
    layout = build_token_layout(decoupled.masks, scene.track_boxes, list(range(scene.num_characters)),
                                track_masks=scene.track_masks)
    assert torch.equal(entry.tensors["candidates"], layout.candidates)
    assert torch.equal(entry.tensors["soft_labels"], layout.soft_labels)


def test_boxes_come_from_the_masks_when_no_tracks_are_given(cache):
    scene = scene_of(0)  # mask folder, no tracks JSON
    entry = cf.read_sample(cache / "clip_000.safetensors")
    assert entry.header["meta"]["box_source"] == "masks"
    assert torch.allclose(entry.tensors["track_boxes"], boxes_from_masks(scene.track_masks), equal_nan=True)


def test_crop_resize_maps_pixels_boxes_and_masks_consistently():
    geo = CropResize((100, 300), (64, 96))  # scale 0.64 -> 64 x 192, crop 48 px each side
    assert geo.resized == (64, 192) and geo.offset == (0, 48)
    assert np.allclose(geo.points(np.array([[150.0, 50.0]])), [[48.0, 32.0]])
    boxes = geo.boxes(np.array([[0.0, 0.0, 50.0, 100.0], [100.0, 10.0, 200.0, 60.0], [np.nan] * 4]))
    assert np.isnan(boxes[0]).all()  # left of the crop entirely
    assert np.allclose(boxes[1], [16.0, 6.4, 80.0, 38.4]) and np.isnan(boxes[2]).all()
    mask = np.zeros((100, 300), bool)
    mask[25:75, 125:175] = True
    out = geo.mask(mask)
    assert out.shape == (64, 96) and out[32, 48] and not out[0, 0]


# ---------------------------------------------------------------- reuse and invalidation


def test_rerun_reuses_every_entry_without_encoding(data, tmp_path):
    first = CountingCodec()
    report = run(data, tmp_path, first)
    assert len(report.built) == 4 and first.calls > 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")}

    def no_codec():
        raise AssertionError("a fully cached re-run must not load the codec")

    again = prepare(data, tmp_path, settings(), no_codec, TEXT, progress=False, log=lambda *_: None)
    assert again.reused == report.built and not again.built
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")}


def test_changing_a_setting_rebuilds_every_entry(data, tmp_path):
    run(data, tmp_path)
    codec = CountingCodec()
    report = run(data, tmp_path, codec, seed=1)
    assert len(report.built) == 4 and not report.reused and codec.calls > 0
    assert len(run(data, tmp_path, frames=5).built) == 4


def test_touching_one_input_rebuilds_only_that_sample(data, tmp_path):
    run(data, tmp_path)
    masks = data.parent / "clip_001" / "masks.npz"
    st = masks.stat()
    try:
        os.utime(masks, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        report = run(data, tmp_path)
        assert report.built == ["clip_001.safetensors"] and len(report.reused) == 3
    finally:
        os.utime(masks, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_stale_format_version_is_rebuilt(data, tmp_path):
    run(data, tmp_path)
    path = tmp_path / "clip_000.safetensors"
    entry = cf.read_sample(path)
    header = {**entry.header, "format_version": "0", "meta": json.dumps(entry.header["meta"])}
    save_file(entry.tensors, str(path), metadata=header)
    assert run(data, tmp_path).built == ["clip_000.safetensors"]


def test_variants_give_distinct_entries_per_clip(data, tmp_path):
    report = run(data, tmp_path, variants=2)
    assert len(report.entries) == 8 and "clip_000_v1.safetensors" in report.entries
    a = cf.read_sample(tmp_path / "clip_000_v0.safetensors").tensors["reference_masks"]
    b = cf.read_sample(tmp_path / "clip_000_v1.safetensors").tensors["reference_masks"]
    assert not torch.equal(a, b)  # different reassignments


# ---------------------------------------------------------------- bad clips


def write_bad_manifest(data, tmp_path):
    src = data.parent
    masks = np.load(src / "clip_001" / "masks.npz")["masks"]
    np.savez(tmp_path / "empty.npz", masks=np.zeros_like(masks))
    np.savez(tmp_path / "short.npz", masks=masks[:, :-1])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    base = {"clip": str(src / "clip_001" / "video.mp4"), "masks": str(src / "clip_001" / "masks.npz"),
            "keypoints": str(src / "clip_001" / "keypoints.npy")}
    lines = [
        {**base, "id": "good"},
        {**base, "id": "too_short", "frames": [0, 5]},
        {**base, "id": "empty_mask", "masks": "empty.npz"},
        {**base, "id": "mismatch", "masks": "short.npz"},
        {**base, "id": "missing", "clip": "nowhere.mp4"},
        {**base, "id": "unreadable", "clip": "broken.mp4"},
        {**base, "id": "no_pose", "keypoints": None},
    ]
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    return manifest


def test_bad_clips_are_skipped_and_reported_never_fatal(data, tmp_path, capsys):
    manifest = write_bad_manifest(data, tmp_path)
    report = prepare(manifest, tmp_path / "cache", settings(), TestCodec(0), TEXT, progress=False)
    assert report.built == ["good.safetensors"]
    reasons = {s["id"]: s["reason"] for s in report.skipped}
    assert "too short" in reasons["too_short"]
    assert "no people visible" in reasons["empty_mask"]
    assert "mask/frame count mismatch" in reasons["mismatch"]
    assert "missing file" in reasons["missing"] and "nowhere.mp4" in reasons["missing"]
    assert "cannot read clip" in reasons["unreadable"]
    assert "no pose source" in reasons["no_pose"]
    assert "not JSON" in reasons["?"]
    logged = [json.loads(x) for x in (tmp_path / "cache" / cf.SKIPPED_FILE).read_text().splitlines()]
    assert {x["id"] for x in logged} == set(reasons)
    out = capsys.readouterr().out
    assert "1 built, 0 reused, 7 skipped" in out and "too_short" in out


def test_cli_reports_exit_codes(data, tmp_path, capsys):
    common = ["--codec", "test", "--width", str(W), "--height", str(H), "--random-text-dim", "8", "--no-progress"]
    assert main(["--manifest", str(data), "--out", str(tmp_path / "a"), "--frames", "9", *common]) == 0
    assert (tmp_path / "a" / cf.INDEX_FILE).is_file()
    assert main(["--manifest", str(data), "--out", str(tmp_path / "b"), "--frames", "10", *common]) == 2
    assert "4n+1" in capsys.readouterr().err
    assert main(["--manifest", str(data), "--out", str(tmp_path / "c"), "--frames", "13", *common]) == 1
    assert "no usable samples" in capsys.readouterr().err


def test_precomputed_text_embedding_is_stored_and_custom_prompts_are_skipped(data, tmp_path):
    save_file({"emb": torch.randn(5, 8)}, str(tmp_path / "emb.safetensors"))
    lines = data.read_text().splitlines()
    custom = json.loads(lines[0])
    custom["prompt"] = "two robots waltzing"
    manifest = data.parent / "custom.jsonl"
    manifest.write_text("\n".join([json.dumps(custom)] + lines[1:]) + "\n")
    text = TextSource("file", path=str(tmp_path / "emb.safetensors"))
    report = prepare(manifest, tmp_path / "cache", settings(), TestCodec(0), text, progress=False, log=lambda *_: None)
    assert len(report.built) == 3 and "custom prompt" in report.skipped[0]["reason"]
    emb, header = cf.read_text_embeddings(tmp_path / "cache")
    assert [tuple(e.shape) for e in emb.values()] == [(1, 5, 8)] and header["source"].startswith("file:")


# ---------------------------------------------------------------- atomic writes


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    good = {k: torch.zeros(1) for k in cf.SAMPLE_KEYS}
    path = tmp_path / "x.safetensors"
    cf.write_sample(path, good, {"fingerprint": "a", "trim": 1, "background": 1, "prompt_key": "p",
                                 "sample_id": "x", "meta": {}})
    before = path.read_bytes()

    def half_then_fail(tensors, tmp, metadata):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cf, "_save_file", half_then_fail)
    with pytest.raises(OSError):
        cf.write_sample(path, good, {"fingerprint": "b", "trim": 1, "background": 1, "prompt_key": "p",
                                     "sample_id": "x", "meta": {}})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]
    with pytest.raises(OSError):
        cf.write_sample(tmp_path / "new.safetensors", good, {"fingerprint": "c", "trim": 1, "background": 1,
                                                             "prompt_key": "p", "sample_id": "n", "meta": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_a_write_failure_during_prepare_is_reported_and_leaves_nothing(data, tmp_path, monkeypatch):
    real = cf._save_file

    def fail(tensors, tmp, metadata):
        if "clip_" not in tmp:  # the text embedding file is written first and may succeed
            return real(tensors, tmp, metadata)
        open(tmp, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cf, "_save_file", fail)
    report = run(data, tmp_path)
    assert not report.entries and all("disk full" in s["reason"] for s in report.skipped)
    assert not list(tmp_path.glob("clip_*")) and not list(tmp_path.glob(".*tmp*"))


# ---------------------------------------------------------------- procedural dataset


def test_procedural_dataset_covers_every_input_variant(data):
    entries = [json.loads(x) for x in data.read_text().splitlines()]
    assert [e["id"] for e in entries] == [f"clip_{i:03d}" for i in range(4)]
    root = data.parent
    assert (root / entries[0]["clip"]).suffix == ".mp4" and (root / entries[3]["clip"]).is_dir()
    assert (root / entries[0]["masks"] / "0" / "00000.png").is_file() and entries[1]["masks"].endswith(".npz")
    assert "reference_image" in entries[0] and "reference_frame" in entries[1]
    assert "pose_video" in entries[0] and "keypoints" in entries[1] and "tracks" in entries[1]
    assert [clip_parameters(i)["characters"] for i in range(4)] == [2, 3, 4, 2]


# ---------------------------------------------------------------- ComfyUI's Wan VAE (host)

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


@pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout (and use its Python) "
                    "to run prepare through ComfyUI's Wan 2.1 VAE")
def test_prepare_through_comfyui_wan_vae_with_random_weights(data, tmp_path):
    """The real Wan 2.1 VAE architecture (random weights: ~127M parameters, no download)."""
    from training.codecs import ComfyWanVAECodec, import_comfy

    import_comfy()
    import comfy.ldm.wan.vae

    torch.manual_seed(0)
    net = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    state = {}
    for k, v in net.state_dict().items():  # comfy.ops leaves parameters uninitialised
        if k.endswith("gamma"):
            state[k] = torch.ones_like(v)
        elif v.ndim == 1:
            state[k] = torch.zeros_like(v)
        else:
            state[k] = torch.randn_like(v) / v[0].numel() ** 0.5
    del net
    codec = ComfyWanVAECodec.from_state_dict(state, name="random-wan21-vae")
    frames = torch.rand(1, 32, 48, 3)
    z = codec.encode(frames)
    assert z.shape == (16, 1, 4, 6) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert torch.equal(z, codec.vae.encode(frames)[0].float())
    assert codec.decode(z).shape == (1, 32, 48, 3)

    # one clip (2 characters) at 48x32, 5 frames: the random VAE runs at ~1 s per image on a CPU
    manifest = tmp_path / "one.jsonl"
    line = json.loads(data.read_text().splitlines()[3])
    line = {k: str(data.parent / v) if isinstance(v, str) and v.startswith("clip_003/") else v for k, v in line.items()}
    manifest.write_text(json.dumps(line) + "\n")
    report = prepare(manifest, tmp_path / "cache", settings(width=48, height=32, frames=5, codec_id="comfy:random"),
                     codec, TEXT, progress=False, log=lambda *_: None)
    assert report.built == ["clip_003.safetensors"], report.summary()
    entry = cf.read_sample(tmp_path / "cache" / "clip_003.safetensors")
    assert entry.tensors["latents"].shape == (16, 2, 4, 6)
    assert entry.tensors["vace_frames"].shape == (32, 3 + 2, 4, 6)
    assert torch.isfinite(entry.tensors["vace_frames"]).all()


def test_comfy_codec_refuses_a_vae_of_another_geometry():
    from training.codecs import ComfyWanVAECodec

    class SD15Like:
        latent_channels = 4

        def spacial_compression_encode(self):
            return 8

        def temporal_compression_decode(self):
            return None

    with pytest.raises(AnyCrowdError, match="Wan 2.1 VAE"):
        ComfyWanVAECodec(SD15Like(), name="sd15.safetensors")


def test_comfy_codec_without_comfyui_names_the_fix(monkeypatch):
    from training import codecs

    with pytest.raises(AnyCrowdError, match="--vae"):
        codecs.make_codec("comfy", None)
    with pytest.raises(AnyCrowdError, match="Unknown codec"):
        codecs.make_codec("sdxl")


# ---------------------------------------------------------------- DWPose as pose source


def test_dwpose_models_render_the_control_video_when_a_sample_has_no_pose(data, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx_graphs as g

    from training.sample_builder import extract_pose_video

    models = tmp_path / "models"
    models.mkdir()
    table = g.empty_yolox_table()
    g.plant_box(table, (200, 150, 440, 600), obj=0.95)  # one person (640x640 letterbox px)
    g.yolox_graph(models / "yolox_l.onnx", table)
    locs = np.stack([np.linspace(40, 250, g.K), np.linspace(40, 340, g.K)], 1)
    sx, sy = g.plant_simcc(locs, np.full(g.K, 0.9, np.float32))
    g.pose_table_graph(models / "dw-ll_ucoco_384.onnx", sx[None], sy[None])

    pose = extract_pose_video(np.zeros((2, H, W, 3), np.uint8), models)
    assert pose.shape == (2, H, W, 3) and pose.max() > 0

    line = json.loads(data.read_text().splitlines()[1])
    line = {k: str(data.parent / v) if isinstance(v, str) and "/" in v else v for k, v in line.items()}
    line.pop("keypoints")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    report = run(manifest, tmp_path / "cache", frames=5, pose_models=str(models))
    assert report.built == ["clip_001.safetensors"], report.summary()
    assert cf.read_sample(tmp_path / "cache" / "clip_001.safetensors").header["meta"]["pose_source"] == "dwpose"
