"""training.dataset.CachedSamples: the cache read back as TrainingSample objects whose layout
equals one built with the track masks directly, deterministic, with clear errors for
missing, outdated or inconsistent caches."""

import json
import pickle
import shutil
from dataclasses import fields

import pytest
import torch
from safetensors.torch import save_file

from anycrowd_core.codec import TestCodec
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from anycrowd_core.scenes import make_scene
from training import cache_format as cf
from training.dataset import CachedSamples, TrainingSample
from training.prepare import prepare
from training.prepare_settings import PrepareSettings
from training.procedural_dataset import clip_parameters, generate
from training.prompt_embeddings import TextSource

H, W, FRAMES = 64, 96, 9


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    manifest = generate(root / "data", clips=4, frames=FRAMES, height=H, width=W, seed=0)
    settings = PrepareSettings(width=W, height=H, frames=FRAMES)
    report = prepare(manifest, root / "cache", settings, TestCodec(0), TextSource("random", dim=8, length=4),
                     progress=False, log=lambda *_: None)
    assert len(report.built) == 4
    return root / "cache"


@pytest.fixture
def samples(cache):
    with pytest.warns(UserWarning, match="RANDOM TEXT EMBEDDING"):
        return CachedSamples(cache)


def scene_of(index):
    p = clip_parameters(index)
    return make_scene(num_characters=p["characters"], num_frames=FRAMES, height=H, width=W,
                      seed=p["seed"], scenario=p["scenario"])


def assert_layouts_equal(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        elif f.name == "video_groups":
            assert [(ids, t.tolist()) for ids, t in x] == [(ids, t.tolist()) for ids, t in y]
        elif isinstance(x, tuple) and x and isinstance(x[0], torch.Tensor):
            assert all(torch.equal(p, q) for p, q in zip(x, y)) and len(x) == len(y), f.name
        else:
            assert x == y, f.name


def test_samples_have_the_documented_shapes(samples):
    assert len(samples) == 4 and samples.text_dim == 8
    s = samples[1]
    n = clip_parameters(1)["characters"]
    r, t_lat = n + 1, (FRAMES - 1) // 4 + 1
    assert isinstance(s, TrainingSample)
    assert s.latents.shape == (16, t_lat, H // 8, W // 8)
    assert s.vace_context.shape == (96, r + t_lat, H // 8, W // 8) and s.trim == r
    assert s.reference_latents.shape == (16, r, H // 8, W // 8)
    assert s.text_embedding.shape == (1, 4, 8) and s.vace_strength == 1.0
    assert s.layout.num_identities == n and s.layout.video_frames == t_lat and s.layout.soft_labels is not None
    assert s.meta["sample_id"] == "clip_001" and s.meta["file"] == "clip_001.safetensors"


def test_mask_channels_are_zero_for_references_and_one_for_video(samples):
    s = samples[0]
    assert torch.equal(s.vace_context[32:, : s.trim], torch.zeros_like(s.vace_context[32:, : s.trim]))
    assert torch.equal(s.vace_context[32:, s.trim :], torch.ones_like(s.vace_context[32:, s.trim :]))


def test_layout_equals_one_built_with_the_track_masks_directly(samples, cache):
    """Clip 3 is stored at its own size (no resize), so the scene's exact track masks apply."""
    scene = scene_of(3)
    s = samples[3]
    stored = cf.read_sample(cache / "clip_003.safetensors").tensors
    direct = build_token_layout(stored["reference_masks"].bool(), stored["track_boxes"],
                                list(range(scene.num_characters)), track_masks=scene.track_masks)
    assert_layouts_equal(s.layout, direct)
    assert (s.layout.candidate_count >= 2).any()  # overlaps exist, so the soft labels matter


def test_items_are_deterministic_and_picklable(samples):
    a, b = samples[2], samples[2]
    assert torch.equal(a.latents, b.latents) and torch.equal(a.vace_context, b.vace_context)
    assert_layouts_equal(a.layout, b.layout)
    c = pickle.loads(pickle.dumps(a))  # DataLoader workers send items between processes
    assert torch.equal(c.layout.soft_labels, a.layout.soft_labels)


def test_dtype_casts_latents_and_context(cache):
    with pytest.warns(UserWarning):
        s = CachedSamples(cache, dtype=torch.bfloat16)[0]
    assert s.latents.dtype == torch.bfloat16 and s.vace_context.dtype == torch.bfloat16


def test_a_missing_cache_names_the_prepare_command(tmp_path):
    with pytest.raises(AnyCrowdError, match="training.prepare"):
        CachedSamples(tmp_path)


def test_an_outdated_cache_index_asks_for_a_rebuild(cache, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(cache, copy)
    index = json.loads((copy / cf.INDEX_FILE).read_text())
    index["format_version"] = 0
    (copy / cf.INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(AnyCrowdError, match="re-run"):
        CachedSamples(copy)


def test_tampered_candidates_are_detected(cache, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(cache, copy)
    path = copy / "clip_000.safetensors"
    entry = cf.read_sample(path)
    tensors = dict(entry.tensors)
    tensors["candidates"] = torch.zeros_like(tensors["candidates"])
    save_file(tensors, str(path), metadata={**entry.header, "meta": json.dumps(entry.header["meta"])})
    with pytest.warns(UserWarning):
        ds = CachedSamples(copy)
    with pytest.raises(AnyCrowdError, match="does not match the stored candidates"):
        ds[0]
    ds.check_layout = False
    assert ds[0].layout.soft_labels.shape == tensors["soft_labels"].shape
