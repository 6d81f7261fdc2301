"""Long-video samplers on a tiny random model: token replace (clean context at t = 0,
bit-identical through sampling, frames joined once) and sliding windows (overlap
accumulation, equality with `animate` for one window), progress and cancel."""

import pytest
import torch
from torch import nn

from anycrowd_core.codec import TestCodec
from anycrowd_core.demo import demo_model
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.latent_format import process_in
from anycrowd_core.long_video import plan_latent_windows, plan_segments, slice_inputs
from anycrowd_core.long_video_run import decode_chunked
from anycrowd_core.long_video_sampling import animate_long
from anycrowd_core.pipeline import AnimationInputs, SamplingSettings, animate
from anycrowd_core.errors import SamplingCancelled
from anycrowd_core.scenes import make_scene

H, W = 64, 96


@pytest.fixture(scope="module")
def model():
    return demo_model(seed=0)


@pytest.fixture(scope="module")
def scene():
    return make_scene(num_characters=2, num_frames=17, height=H, width=W, seed=3)


def inputs_of(scene, frames=None):
    t = frames or scene.num_frames
    return AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video[:t], scene.track_boxes[:, :t])


def text(seed):
    return torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(seed))


class Spy(nn.Module):
    """Records every model call (x, t, vace_context, hook) and delegates."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, context, vace_context, vace_strength=1.0, attention=None, rope_positions=None):
        self.calls.append(dict(x=x.clone(), t=t.clone(), vace=vace_context.clone(), hook=attention,
                               rope=rope_positions))
        return self.inner(x, t, context, vace_context, vace_strength=vace_strength, attention=attention,
                          rope_positions=rope_positions)


class IndexCodec(TestCodec):
    """TestCodec whose decode returns frames that name their origin: every pixel of frame i
    of decode call c is (c * 100 + i + 1) / 10_000. Records what it encodes."""

    def __init__(self):
        super().__init__()
        self.decodes, self.encoded = 0, []

    def encode(self, frames):
        self.encoded.append(frames.clone())
        return super().encode(frames)

    def decode(self, latent):
        n = 4 * (latent.shape[1] - 1) + 1
        ids = (self.decodes * 100 + torch.arange(n, dtype=torch.float64) + 1) / 10_000
        self.decodes += 1
        return ids.view(n, 1, 1, 1).expand(n, latent.shape[2] * 8, latent.shape[3] * 8, 3).float()


def origin(frame):
    code = round(float(frame[0, 0, 0]) * 10_000) - 1
    return code // 100, code % 100  # (decode call = segment, frame index in the segment)


# ----------------------------------------------------------------------------- token replace


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_token_replace_keeps_context_latents_bit_identical_and_clean(model, scene, sampler):
    spy, seen = Spy(model), []
    settings = SamplingSettings(steps=3, cfg=2.0, sampler=sampler, mode="tsda")
    result = animate_long(spy, TestCodec(), inputs_of(scene), text(1), text(2), settings,
                          segment_frames=9, overlap_frames=5,
                          callback=lambda i, step, total, x, d: seen.append((i, x.clone(), d.clone())))
    r = 3  # two identities + background reference frames
    codec = TestCodec()
    for seg in result.plan[1:]:
        ctx = process_in(codec.encode(result.frames[seg.start:seg.start + seg.context_frames]))
        assert ctx.shape[1] == seg.context_latent_frames == 2
        steps = [(x, d) for i, x, d in seen if i == seg.index]
        assert len(steps) == 3
        for x, d in steps:  # the solver state and the prediction: exactly the context
            assert torch.equal(x[0, :, r:r + 2], ctx)
            assert torch.equal(d[0, :, r:r + 2], ctx)
    # segment 0 runs the plain scalar-t path; later segments give the context t = 0, the
    # reference and generated frames the sampler's t
    per_segment = 2 * (5 if sampler == "heun" else 3)  # cfg: cond + uncond per evaluation
    assert all(c["t"].ndim == 1 for c in spy.calls[:per_segment])
    assert len(spy.calls) == 3 * per_segment
    for c in spy.calls[per_segment:]:
        t = c["t"][0]
        assert (t[r:r + 2] == 0).all() and (t[:r] == t[-1]).all() and (t[r + 2:] == t[-1]).all() and t[-1] > 0


def test_the_model_sees_the_previous_output_as_context(model, scene):
    spy = Spy(model)
    codec = IndexCodec()
    settings = SamplingSettings(steps=1, cfg=1.0, mode="masked")
    result = animate_long(spy, codec, inputs_of(scene), text(1), None, settings, segment_frames=9, overlap_frames=5)
    seg = result.plan[1]
    expected = process_in(TestCodec().encode(result.frames[seg.start:seg.start + 5]))
    (call,) = [c for c in spy.calls if c["t"].ndim == 2][:1]
    assert torch.equal(call["x"][0, :, 3:5], expected)
    # the encoded context is the output frames 4..8, which segment 0 produced
    contexts = [e for e in codec.encoded if e.shape[0] == 5]  # controls have 9 frames
    assert [[origin(f) for f in e] for e in contexts] == [
        [(0, 4), (0, 5), (0, 6), (0, 7), (0, 8)],  # segment 1's context: segment 0's frames 4..8
        # segment 2's: output frames 8..12; frame 8 was kept from segment 0, not segment 1
        [(0, 8), (1, 5), (1, 6), (1, 7), (1, 8)],
    ]


@pytest.mark.parametrize("frames,seg_frames,overlap", [(17, 9, 5), (14, 9, 1), (2, 81, 5), (30, 13, 5), (1, 9, 5)])
def test_joined_output_has_every_frame_once_in_order(model, frames, seg_frames, overlap):
    scene = make_scene(num_characters=2, num_frames=33, height=H, width=W, seed=3)
    codec = IndexCodec()
    settings = SamplingSettings(steps=1, cfg=1.0, mode="global")
    result = animate_long(model, codec, inputs_of(scene, frames), text(1), None, settings,
                          segment_frames=seg_frames, overlap_frames=overlap)
    assert result.frames.shape == (frames, H, W, 3)
    stride = seg_frames - overlap
    for f in range(frames):  # independent of the planner: segment s starts at s * stride
        s = 0 if f < seg_frames else 1 + (f - seg_frames) // stride
        assert origin(result.frames[f]) == (s, f - s * stride), f
    assert codec.decodes == len(result.plan)


def test_references_are_encoded_once_for_all_segments(model, scene):
    codec = IndexCodec()
    result = animate_long(model, codec, inputs_of(scene), text(1), None, SamplingSettings(steps=1, cfg=1.0),
                          segment_frames=9, overlap_frames=5)
    assert len(result.plan) == 3
    assert len([e for e in codec.encoded if e.shape[0] == 1]) == 3  # 2 identities + background, once


def test_first_segment_equals_animate_on_its_frames(model, scene):
    settings = SamplingSettings(steps=2, cfg=2.0, mode="tsda", seed=5)
    long = animate_long(model, TestCodec(), inputs_of(scene), text(1), text(2), settings,
                        segment_frames=9, overlap_frames=5)
    first = animate(model, TestCodec(), slice_inputs(inputs_of(scene), long.plan[0]), text(1), text(2), settings)
    assert torch.equal(long.frames[:9], first.frames)


def test_segment_with_an_absent_identity_samples_with_an_empty_identity(model):
    scene = make_scene(num_characters=2, num_frames=45, height=H, width=W, seed=0, scenario="exit_reenter")
    absent = torch.isnan(scene.track_boxes[0]).any(-1)
    for mode in ("tsda", "masked"):
        spy = Spy(model)
        result = animate_long(spy, TestCodec(), inputs_of(scene), text(1), None,
                              SamplingSettings(steps=1, cfg=1.0, mode=mode), segment_frames=9, overlap_frames=1)
        hooks = [c["hook"] for c in spy.calls]
        segs = [s for s in result.plan if absent[s.start:s.stop].all()]
        assert segs
        for s in segs:
            assert hooks[s.index].layout.vid_tokens[0].numel() == 0
        assert torch.isfinite(result.frames).all()


def test_token_replace_progress_counts_every_step_of_every_segment(model, scene):
    events = []
    animate_long(model, TestCodec(), inputs_of(scene), text(1), None, SamplingSettings(steps=2, cfg=1.0),
                 segment_frames=9, overlap_frames=5, progress=events.append)
    assert [(e.index, e.step) for e in events] == [(s, k) for s in range(3) for k in (1, 2)]
    assert [e.done for e in events] == list(range(1, 7)) and {e.total for e in events} == {6}


@pytest.mark.parametrize("strategy", ["token_replace", "sliding_window"])
def test_cancel_stops_between_steps(model, scene, strategy):
    spy = Spy(model)
    with pytest.raises(SamplingCancelled):
        animate_long(spy, TestCodec(), inputs_of(scene), text(1), None, SamplingSettings(steps=3, cfg=1.0),
                     strategy=strategy, segment_frames=9, overlap_frames=5 if strategy == "token_replace" else 4,
                     cancel=lambda: len(spy.calls) >= 3)
    assert len(spy.calls) == 3  # no model call once cancel() said yes


# ----------------------------------------------------------------------------- sliding windows


@pytest.mark.parametrize("ramp", [False, True])
def test_a_window_covering_the_clip_equals_animate(model, scene, ramp):
    settings = SamplingSettings(steps=2, cfg=2.0, mode="tsda", seed=4)
    plain = animate(model, TestCodec(), inputs_of(scene), text(1), text(2), settings)
    long = animate_long(model, TestCodec(), inputs_of(scene), text(1), text(2), settings,
                        strategy="sliding_window", segment_frames=81, ramp=ramp)
    assert len(long.plan) == 1
    assert torch.equal(long.latents, plain.latents)
    assert torch.equal(long.frames, plain.frames)


class ConstantVelocity(nn.Module):
    """v = (index of the window in its denoiser sweep + 1), counted per call; records calls."""

    def __init__(self, windows):
        super().__init__()
        self.p, self.windows, self.calls = nn.Parameter(torch.zeros(())), windows, []

    def forward(self, x, t, context, vace_context, vace_strength=1.0, attention=None, rope_positions=None):
        self.calls.append(dict(frames=x.shape[2], vace=vace_context.clone(), hook=attention))
        return torch.full_like(x, float((len(self.calls) - 1) % self.windows + 1))


@pytest.mark.parametrize("ramp", [False, True])
def test_overlapping_predictions_are_averaged_by_update_count(scene, ramp):
    # 17 frames = 5 latent frames, windows of 2 latent frames (5 px) with overlap 1 -> 4 windows
    plan = plan_latent_windows(5, 2, 1)
    stub = ConstantVelocity(len(plan))
    result = animate_long(stub, TestCodec(), inputs_of(scene), text(1), None,
                          SamplingSettings(steps=1, cfg=1.0, shift=1.0, seed=9), strategy="sliding_window",
                          segment_frames=5, overlap_frames=4, ramp=ramp)
    assert [(w.start, w.stop) for w in result.plan] == [(w.start, w.stop) for w in plan]
    # one Euler step from sigma 1 to 0 lands on the averaged x0 = noise - mean(v)
    num, den = torch.zeros(3 + 5), torch.zeros(3 + 5)
    for w in plan:
        weight = torch.cat([torch.ones(3), w.weights(ramp)])
        frames = list(range(3)) + [3 + f for f in range(w.start, w.stop)]
        num[frames] += weight * (w.index + 1)
        den[frames] += weight
    noise = torch.randn((1, 16, 8, H // 8, W // 8), generator=torch.Generator().manual_seed(9))[0, :, 3:]
    expected = noise - (num / den)[3:].view(1, 5, 1, 1)
    assert torch.allclose(process_in(result.latents), expected, atol=1e-5)
    # every window evaluated once per step, each with all reference frames in front
    assert [c["frames"] for c in stub.calls] == [3 + 2] * 4
    refs = stub.calls[0]["vace"][0, :, :3]
    assert all(torch.equal(c["vace"][0, :, :3], refs) for c in stub.calls)


def test_sliding_window_progress_and_vace_slices(model, scene):
    events, spy = [], Spy(model)
    result = animate_long(spy, TestCodec(), inputs_of(scene), text(1), None, SamplingSettings(steps=2, cfg=1.0),
                          strategy="sliding_window", segment_frames=9, overlap_frames=4, progress=events.append)
    n = len(result.plan)
    assert n == 2 and result.frames.shape == (17, H, W, 3)
    assert [e.done for e in events] == list(range(1, 2 * n + 1)) and {e.total for e in events} == {2 * n}
    assert [(e.index, e.step) for e in events] == [(i, s) for s in (1, 2) for i in range(n)]
    # each window's VACE context is the matching slice of the whole clip's context
    full = animate(model, TestCodec(), inputs_of(scene), text(1), None, SamplingSettings(steps=1, cfg=1.0))
    ctx = full.conditioning.vace_context
    for c, w in zip(spy.calls, result.plan):
        assert torch.equal(c["vace"][0], torch.cat([ctx[:, :3], ctx[:, 3 + w.start:3 + w.stop]], 1))


def test_chunked_decode_equals_one_decode_for_the_test_codec():
    z = torch.randn(16, 7, 4, 6, generator=torch.Generator().manual_seed(0))
    codec = TestCodec()
    whole = codec.decode(z)
    for chunk in (1, 2, 3, 7):
        assert torch.equal(decode_chunked(codec, z, chunk), whole)


def test_unknown_strategy_and_short_tracks_are_refused(model, scene):
    with pytest.raises(AnyCrowdError, match="token_replace"):
        animate_long(model, TestCodec(), inputs_of(scene), text(1), None, SamplingSettings(cfg=1.0), strategy="x")
    bad = AnimationInputs(scene.reference_image, scene.reference_masks, scene.pose_video, scene.track_boxes[:, :9])
    with pytest.raises(AnyCrowdError, match="track the whole driving video"):
        animate_long(model, TestCodec(), bad, text(1), None, SamplingSettings(cfg=1.0))


def test_benchmark_fit_and_lengths():
    from anycrowd_core.bench.long_video import _frames_for, linear_fit

    assert [_frames_for(k, 81, 5) for k in (2, 4, 6, 8)] == [157, 309, 461, 613]
    assert [len(plan_segments(_frames_for(k, 81, 5))) for k in (2, 4, 6, 8)] == [2, 4, 6, 8]
    fit = linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert fit["slope_s_per_frame"] == pytest.approx(2) and fit["intercept_s"] == pytest.approx(1)
    assert fit["r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["token_replace", "sliding_window"])
def test_cumulative_guidance_runs_in_both_long_video_strategies(model, scene, strategy):
    """Unit scales give the plain cfg-1 video (u + (p - u) + (f - p) = f); other scales differ."""
    def run(**kw):
        settings = SamplingSettings(steps=2, mode="masked", **kw)
        return animate_long(model, TestCodec(), inputs_of(scene, 13), text(1), text(2), settings,
                            strategy=strategy, segment_frames=9, overlap_frames=5).frames

    plain = run(cfg=1.0)
    assert torch.allclose(run(guidance="cumulative", pose_scale=1.0, ref_scale=1.0), plain, atol=1e-4)
    guided = run(guidance="cumulative", pose_scale=2.0, ref_scale=1.5)
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 1e-3


@pytest.mark.parametrize("strategy", ["token_replace", "sliding_window"])
def test_the_core_sampler_refuses_a_face_stream_before_any_model_call(model, scene, strategy):
    """The shared loops carry a face stream (the ComfyUI node's second VACE context); the core
    DiT takes one VACE context, so its sampler says so instead of dropping the stream."""
    from anycrowd_core.decoupler import decouple_instances
    from anycrowd_core.long_video import LongVideoSettings
    from anycrowd_core.long_video_run import LongVideoInputs, run_sliding_window, run_token_replace
    from anycrowd_core.long_video_sampling import CoreClipSampler

    spy = Spy(model)
    inputs = LongVideoInputs(decouple_instances(scene.reference_image, scene.reference_masks), scene.pose_video,
                             scene.track_boxes, [0, 1], face=scene.video)
    sampler = CoreClipSampler(spy, text(0), None, SamplingSettings(steps=1, cfg=1.0), strategy)
    run = run_token_replace if strategy == "token_replace" else run_sliding_window
    with pytest.raises(AnyCrowdError, match="no face stream"):
        run(sampler, TestCodec(), inputs, LongVideoSettings(strategy, 9, 5))
    assert spy.calls == []
