"""The headless pipeline end to end on a tiny random model, and the demo CLI."""

import json

import pytest
import torch

from anycrowd_core.codec import TestCodec
from anycrowd_core.demo import demo_model, main as demo_main
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.pipeline import AnimationInputs, SamplingSettings, animate
from anycrowd_core.errors import SamplingCancelled
from anycrowd_core.scenes import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=5, height=64, width=96, seed=3)


@pytest.fixture(scope="module")
def model():
    return demo_model(seed=0)


def inputs_for(scene, binding=None):
    return AnimationInputs(
        reference_image=scene.reference_image,
        reference_masks=scene.reference_masks,
        control_video=scene.pose_video,
        track_boxes=scene.track_boxes,
        binding=binding,
    )


def text(model, seed):
    return torch.randn(1, 8, model.config.text_dim, generator=torch.Generator().manual_seed(seed))


def run(model, scene, **overrides):
    settings = SamplingSettings(**{"steps": 2, "cfg": 2.0, **overrides})
    return animate(model, TestCodec(), inputs_for(scene), text(model, 1), text(model, 2), settings)


@pytest.mark.parametrize("mode", ["tsda", "masked", "global"])
def test_pipeline_produces_frames_of_the_control_video_size(model, scene, mode):
    result = run(model, scene, mode=mode)
    assert result.frames.shape == scene.pose_video.shape
    assert torch.isfinite(result.frames).all()
    assert result.frames.min() >= 0 and result.frames.max() <= 1
    # reference frames are trimmed: latents cover only the video frames
    assert result.latents.shape == (16, 2, 8, 12)
    assert result.conditioning.trim == 3  # two identities + background


def test_pipeline_is_deterministic_under_a_seed(model, scene):
    a = run(model, scene, seed=7, mode="tsda")
    b = run(model, scene, seed=7, mode="tsda")
    c = run(model, scene, seed=8, mode="tsda")
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)


def test_attention_modes_change_the_result(model, scene):
    results = {m: run(model, scene, mode=m, seed=1).latents for m in ("tsda", "masked", "global")}
    assert not torch.allclose(results["tsda"], results["global"])
    assert not torch.allclose(results["masked"], results["global"])


def test_cancel_stops_sampling(model, scene):
    settings = SamplingSettings(steps=3, cfg=1.0)
    with pytest.raises(SamplingCancelled):
        animate(model, TestCodec(), inputs_for(scene), text(model, 1), None, settings, cancel=lambda: True)


def test_track_identity_count_mismatch_suggests_a_binding(model, scene):
    three_tracks = torch.cat([scene.track_boxes, scene.track_boxes[:1]])
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, three_tracks)
    with pytest.raises(AnyCrowdError, match=r"binding=\[0, 1, 0\]"):
        animate(model, TestCodec(), inputs, text(model, 1), None, SamplingSettings(steps=1, cfg=1.0))


def test_one_to_many_binding_runs(model, scene):
    three_tracks = torch.cat([scene.track_boxes, scene.track_boxes[:1]])
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, three_tracks, [0, 1, 0])
    result = animate(model, TestCodec(), inputs, text(model, 1), None, SamplingSettings(steps=1, cfg=1.0))
    assert result.info["binding"] == [0, 1, 0]


def test_cfg_without_negative_is_refused(model, scene):
    with pytest.raises(AnyCrowdError, match="negative"):
        animate(model, TestCodec(), inputs_for(scene), text(model, 1), None, SamplingSettings(steps=1, cfg=4.0))


def test_demo_cli_writes_video_preview_and_summary(tmp_path, capsys):
    code = demo_main([
        "--out", str(tmp_path), "--model", "random", "--characters", "2", "--frames", "5",
        "--height", "64", "--width", "96", "--steps", "1",
    ])
    assert code == 0
    for name in ("anycrowd_demo.mp4", "control_pose.mp4", "preview.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["identities"] == 2
    assert "randomly initialised" in capsys.readouterr().out


def test_demo_cli_reports_bad_sizes_without_traceback(tmp_path, capsys):
    code = demo_main(["--out", str(tmp_path), "--frames", "6", "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "4n+1" in err and "--frames 5 or --frames 9" in err


def test_boxes_for_another_frame_count_are_refused_before_any_encoding(model, scene):
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes[:, :3])
    with pytest.raises(AnyCrowdError, match=r"track_boxes must be \[M, T, 4\] with T = 5"):
        animate(model, TestCodec(), inputs, text(model, 1), None, SamplingSettings(steps=1, cfg=1.0))


def test_shifted_rope_sampling_uses_the_reference_positions_beside_the_grid(monkeypatch):
    """SamplingSettings.shifted_rope hands the model RealisDance-DiT's positions (references
    beside the video grid, video from time 0); off, the model keeps its own grid."""
    from anycrowd_core.codec import TestCodec
    from anycrowd_core.pipeline import AnimationInputs, SamplingSettings, animate
    from anycrowd_core.scenes import make_scene
    from anycrowd_core.wan import shifted_reference_positions
    from tiny_wan import tiny_config, tiny_model

    model = tiny_model(tiny_config(text_dim=8))
    seen = []
    real = model.forward

    def forward(*args, rope_positions=None, **kwargs):
        seen.append(rope_positions)
        return real(*args, rope_positions=rope_positions, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    scene = make_scene(num_characters=2, num_frames=5, height=48, width=64, seed=0, scenario="crossing")
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes)
    text = torch.zeros(1, 4, 8)
    outputs = {}
    for shifted in (False, True):
        seen.clear()
        result = animate(model, TestCodec(), inputs, text, None, SamplingSettings(steps=2, cfg=1.0, shifted_rope=shifted))
        outputs[shifted] = result.frames
        frames, h, w = result.conditioning.noise_latent_shape[1:]
        if shifted:
            want = shifted_reference_positions(result.conditioning.trim, frames, h // 2, w // 2)
            assert len(seen) == 2 and all(torch.equal(p, want) for p in seen)
        else:
            assert seen == [None, None]
    assert not torch.equal(outputs[False], outputs[True])


def _cumulative_case():
    from anycrowd_core.codec import TestCodec
    from anycrowd_core.pipeline import AnimationInputs
    from anycrowd_core.scenes import make_scene
    from tiny_wan import tiny_config, tiny_model

    model = tiny_model(tiny_config(text_dim=8))
    scene = make_scene(num_characters=2, num_frames=5, height=48, width=64, seed=0, scenario="crossing")
    inputs = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes)
    gen = torch.Generator().manual_seed(3)
    return model, TestCodec(), inputs, torch.randn(1, 4, 8, generator=gen), torch.randn(1, 4, 8, generator=gen)


def test_cumulative_guidance_runs_three_conditions_with_neutral_references_and_control(monkeypatch):
    """uncond: negative text, no control, no references; pose: positive text, control, neutral
    references; full: everything. Batched into one call of 3 when the texts have one shape."""
    from anycrowd_core.pipeline import SamplingSettings, animate

    model, codec, inputs, positive, negative = _cumulative_case()
    calls = []
    real = model.forward

    def forward(x, t, context, vace_context, **kwargs):
        calls.append((context.clone(), vace_context.clone()))
        return real(x, t, context, vace_context, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    result = animate(model, codec, inputs, positive, negative,
                     SamplingSettings(steps=1, guidance="cumulative", pose_scale=2.0, ref_scale=1.5))
    (context, vace), = calls
    r, full = result.conditioning.trim, result.conditioning.vace_context
    assert torch.equal(context, torch.cat([negative, positive, positive]))
    assert vace[0, :32].abs().sum() == 0 and torch.equal(vace[0, 32:], full[32:])  # no references, no control
    assert vace[1, :32, :r].abs().sum() == 0 and torch.equal(vace[1, :, r:], full[:, r:])  # pose only
    assert torch.equal(vace[2], full)
    assert result.info["guidance"] == "cumulative"


def test_cumulative_guidance_batched_equals_separate_calls_and_unit_scales_give_the_full_prediction(monkeypatch):
    from anycrowd_core import pipeline
    from anycrowd_core.pipeline import SamplingSettings, animate

    model, codec, inputs, positive, negative = _cumulative_case()
    settings = SamplingSettings(steps=2, guidance="cumulative", pose_scale=2.0, ref_scale=1.5)
    batched = animate(model, codec, inputs, positive, negative, settings).latents
    real = pipeline.cumulative_cfg_denoiser
    monkeypatch.setattr(pipeline, "cumulative_cfg_denoiser", lambda *a, batched=None: real(*a))
    separate = animate(model, codec, inputs, positive, negative, settings).latents
    assert torch.allclose(separate, batched, atol=1e-5) and separate.abs().max() > 0
    unit = SamplingSettings(steps=2, guidance="cumulative", pose_scale=1.0, ref_scale=1.0)
    plain = SamplingSettings(steps=2, cfg=1.0)
    assert torch.allclose(animate(model, codec, inputs, positive, negative, unit).latents,
                          animate(model, codec, inputs, positive, negative, plain).latents, atol=1e-5)


def test_guidance_step_benchmark_prints_all_three_variants(capsys):
    import json

    from anycrowd_core.bench import guidance

    assert guidance.main(["--size", "mini", "--steps", "2", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["seconds_per_step"]) == set(guidance.VARIANTS)
    assert result["ratio_to_plain_cfg"]["plain cfg"] == 1.0
