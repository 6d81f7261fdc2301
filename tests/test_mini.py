"""AnyCrowd-Mini: the codec's fitted normalisation, the binding benchmark's scoring, and the
shipped weights (binding on a fixed held-out scene, size, the demo's default model)."""

import json

import pytest
import torch

from anycrowd_core.bench.binding import (
    MODES, eligible_track_frames, eval_scene, evaluate_scene, score_video, setting_binding,
)
from anycrowd_core.codec import TestCodec
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.latent_format import process_in
from anycrowd_core.mini import MINI_CONFIG, MiniCodec, fit_latent_normalisation, load_mini
from anycrowd_core.mini.codec import MINI_LATENT_MEAN, MINI_LATENT_STD
from anycrowd_core.mini.model import WEIGHTS_DIR
from anycrowd_core.scenes import make_scene


def test_mini_codec_constants_are_the_documented_fit():
    mean, std = fit_latent_normalisation()
    assert torch.allclose(mean, torch.tensor(MINI_LATENT_MEAN), atol=6e-5)
    assert torch.allclose(std, torch.tensor(MINI_LATENT_STD), atol=6e-5)


def test_mini_codec_standardises_latents_of_an_unseen_scene():
    scene = make_scene(num_characters=3, num_frames=9, seed=123_456, scenario="swap")
    z = process_in(MiniCodec().encode(scene.video)).flatten(1)  # [16, everything else]
    assert float(z.mean(1).abs().mean()) < 0.4 and 0.85 < float(z.std(1).mean()) < 1.2
    wan_only = process_in(TestCodec().encode(scene.video)).flatten(1)
    assert float(wan_only.var(1).mean()) < 0.05  # what the miniature would see without its own normalisation


def test_mini_codec_round_trip_is_the_test_codecs():
    scene = make_scene(num_characters=2, num_frames=5, seed=5)
    a = MiniCodec().decode(MiniCodec().encode(scene.video))
    b = TestCodec().decode(TestCodec().encode(scene.video))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("count", [2, 4])
def test_decoded_ground_truth_scores_perfectly_and_a_derangement_scores_zero(count):
    scene = eval_scene(count, 1)
    codec = MiniCodec()
    decoded = codec.decode(codec.encode(scene.video))
    right = score_video(scene, decoded, list(range(count)), codec=codec)
    assert right["binding_accuracy"] == 1.0 and right["scored_track_frames"] > 0
    assert right["silhouette_iou"] == 1.0 and right["background_psnr"] == 60.0
    assert right["bleeding"] != right["bleeding"] or right["bleeding"] < 1e-6  # NaN when no boxes overlap
    binding, _ = setting_binding("cross", count, seed=0)
    assert all(b != i for i, b in enumerate(binding))
    wrong = score_video(scene, decoded, binding, codec=codec)
    assert wrong["binding_accuracy"] == 0.0 and wrong["chance"] == 1 / count


def test_eligible_track_frames_exclude_absent_and_hidden_characters():
    scene = make_scene(num_characters=3, num_frames=17, seed=3, scenario="exit_reenter")
    eligible = eligible_track_frames(scene)
    absent = torch.isnan(scene.track_boxes[..., 0])
    assert not eligible[absent].any() and eligible.any()
    hidden = scene.track_masks.flatten(2).sum(-1) < 0.9 * scene.body_area
    assert not eligible[hidden].any()


def test_one_to_many_settings_use_each_identity_for_two_tracks():
    binding, reference = setting_binding("one_to_many", 4, seed=3)
    assert reference == "cross" and sorted(binding) == [0, 0, 1, 1]
    with pytest.raises(AnyCrowdError, match="setting"):
        setting_binding("sideways", 2, seed=0)


# ---------------------------------------------------------------- the shipped weights


def test_shipped_weights_fit_the_mini_config_and_stay_under_20_mb():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert [f.name for f in files] == ["anycrowd_mini_base.safetensors", "anycrowd_mini_gates.safetensors",
                                       "anycrowd_mini_lora.safetensors"]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    mini = load_mini()
    assert mini.base.config == MINI_CONFIG
    lora_changed = [n for n, p in mini.anycrowd.named_parameters()
                    if not torch.equal(p, dict(mini.base.named_parameters())[n])]
    assert any(".self_attn." in n for n in lora_changed) and any(n.startswith("vace_blocks") for n in lora_changed)


@pytest.fixture(scope="module")
def held_out():
    """A fixed held-out crossing scene, cross-driven reference, a permuted binding."""
    scene = eval_scene(3, 0)  # seeds of eval scenes are disjoint from every training seed
    binding, _ = setting_binding("cross", 3, seed=11)
    return scene, binding


def test_tsda_binds_a_held_out_scene_and_beats_global(held_out):
    scene, binding = held_out
    tsda = evaluate_scene(scene, "tsda", binding, seed=11, reference="cross")
    glob = evaluate_scene(scene, "global", binding, seed=11, reference="cross")
    print(f"binding accuracy: tsda {tsda['binding_accuracy']:.3f}, global {glob['binding_accuracy']:.3f}")
    assert tsda["binding_accuracy"] >= 0.85
    assert tsda["binding_accuracy"] > glob["binding_accuracy"] + 0.3
    assert tsda["video"].shape == scene.video.shape and 0 <= float(tsda["video"].min()) <= float(tsda["video"].max()) <= 1


def test_evaluate_scene_refuses_unknown_modes_and_bad_bindings(held_out):
    scene, _ = held_out
    with pytest.raises(AnyCrowdError, match="Unknown mode"):
        evaluate_scene(scene, "tsda-fast")
    with pytest.raises(AnyCrowdError, match="one identity"):
        evaluate_scene(scene, "tsda", [0, 1])
    assert set(MODES) >= {"global", "masked", "tsda", "tsda-mean", "tsda-max", "tsda-holistic"}


def test_demo_runs_the_miniature_by_default(tmp_path, capsys):
    from anycrowd_core.demo import main

    assert main(["--out", str(tmp_path), "--steps", "4"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "AnyCrowd-Mini"
    assert set(summary["binding_accuracy"]) == {"global", "masked", "masked+align", "tsda"}
    for name in ("anycrowd_demo.mp4", "comparison.mp4", "control_pose.mp4", "preview.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "not photorealism" in capsys.readouterr().out
