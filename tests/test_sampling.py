"""Specification of anycrowd_core.sampling: Wan flow schedule, adapters, CFG and samplers."""

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError, SamplingCancelled
from anycrowd_core.sampling import (
    SAMPLERS,
    cfg_denoiser,
    flow_denoiser,
    flow_sigmas,
    make_noise,
    sample,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    shift_sigma,
    sigma_to_timestep,
)

# Toy data distribution N(MU, S^2) per element. Its ideal flow-matching denoiser is
# E[x0 | x_sigma], and the probability-flow ODE maps noise eps exactly to MU + S * eps.
MU, S = 0.7, 0.5


def gaussian_denoiser(x, sigma):
    sigma = float(sigma)
    a = 1.0 - sigma
    return MU + a * S * S / (a * a * S * S + sigma * sigma) * (x - a * MU)


def toy_noise(n=10000):
    return torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def rms_error(sampler, steps, shift):
    eps = toy_noise()
    out = sampler(gaussian_denoiser, eps.clone(), flow_sigmas(steps, shift).double())
    return (out - (MU + S * eps)).pow(2).mean().sqrt().item()


# ----------------------------------------------------------------------------- schedule


def test_flow_sigmas_matches_hand_computed_shifted_values():
    # t = 1, .75, .5, .25 -> 5t / (1 + 4t)
    expected = torch.tensor([1.0, 0.9375, 2.5 / 3.0, 0.625, 0.0])
    assert torch.allclose(flow_sigmas(4, shift=5.0), expected, atol=1e-7, rtol=0)
    assert torch.allclose(flow_sigmas(2, shift=3.0), torch.tensor([1.0, 0.75, 0.0]), atol=1e-7, rtol=0)


def test_flow_sigmas_shift_one_is_linear():
    assert torch.allclose(flow_sigmas(10, shift=1.0), torch.linspace(1.0, 0.0, 11), atol=1e-6, rtol=0)


def test_flow_sigmas_use_comfyui_simple_table_indices_when_steps_do_not_divide_1000():
    # ComfyUI "simple": entry 1000 - floor(i * 1000/steps) of the 1000-entry table.
    assert torch.allclose(flow_sigmas(3, 1.0), torch.tensor([1.0, 0.667, 0.334, 0.0]), atol=1e-7, rtol=0)
    assert torch.allclose(flow_sigmas(7, 1.0)[1:4], torch.tensor([0.858, 0.715, 0.572]), atol=1e-7, rtol=0)


def test_flow_sigmas_are_float32_decreasing_and_end_at_zero():
    for steps in (1, 3, 20, 50):
        for shift in (1.0, 3.0, 5.0, 8.0):
            sig = flow_sigmas(steps, shift)
            assert sig.dtype == torch.float32 and sig.shape == (steps + 1,)
            assert sig[0] == 1.0 and sig[-1] == 0.0
            assert bool((sig[1:] < sig[:-1]).all())


def test_flow_sigmas_denoise_is_tail_of_longer_schedule():
    assert torch.equal(flow_sigmas(10, 5.0, denoise=0.5), flow_sigmas(20, 5.0)[-11:])
    assert torch.equal(flow_sigmas(10, 5.0, denoise=0.3), flow_sigmas(33, 5.0)[-11:])
    assert flow_sigmas(10, 5.0, denoise=0.5)[0].item() == pytest.approx(2.5 / 3.0, abs=1e-7)
    assert flow_sigmas(10, 5.0, denoise=0.0).numel() == 0


def test_flow_sigmas_rejects_bad_steps_and_shift():
    with pytest.raises(AnyCrowdError, match="steps"):
        flow_sigmas(0)
    with pytest.raises(AnyCrowdError, match="shift"):
        flow_sigmas(10, shift=-1.0)


def test_shift_sigma_and_timestep():
    assert shift_sigma(0.5, 5.0) == pytest.approx(2.5 / 3.0)
    assert shift_sigma(0.25, 1.0) == 0.25
    assert sigma_to_timestep(0.625) == 625.0


# ----------------------------------------------------------------------------- adapters


def test_flow_denoiser_recovers_x0_from_velocity_and_feeds_t_per_sample():
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 3, generator=gen), torch.randn(2, 4, 3, generator=gen)
    sigma = torch.tensor(0.3)
    seen = []

    def velocity_model(x, t):
        seen.append(t)
        return eps - x0  # the exact velocity of this (x0, eps) pair

    x = (1 - sigma) * x0 + sigma * eps
    assert torch.allclose(flow_denoiser(velocity_model)(x, sigma), x0, atol=1e-6)
    assert seen[0].shape == (2,) and torch.allclose(seen[0], torch.tensor([300.0, 300.0]))


def test_cfg_applies_guidance_formula():
    cond = lambda x, s: 2 * x
    uncond = lambda x, s: x + 1
    x = torch.tensor([1.0, 3.0])
    out = cfg_denoiser(cond, uncond, 3.0)(x, torch.tensor(0.5))
    # u + 3 (c - u): x=1 -> 2 + 3*0 = 2; x=3 -> 4 + 3*2 = 10
    assert torch.allclose(out, torch.tensor([2.0, 10.0]))


def test_cfg_scale_one_never_runs_uncond():
    calls = []
    uncond = lambda x, s: calls.append(1) or x
    out = cfg_denoiser(lambda x, s: 2 * x, uncond, 1.0)(torch.ones(3), torch.tensor(0.5))
    assert calls == [] and torch.equal(out, 2 * torch.ones(3))


def test_cfg_batched_matches_two_calls():
    cond = lambda x, s: x * x
    uncond = lambda x, s: x - s
    batches = []

    def batched(x2, s):
        batches.append(x2.shape[0])
        b = x2.shape[0] // 2
        return torch.cat([cond(x2[:b], s), uncond(x2[b:], s)])

    x, s = torch.randn(3, 5, generator=torch.Generator().manual_seed(2)), torch.tensor(0.4)
    two = cfg_denoiser(cond, uncond, 4.5)(x, s)
    one = cfg_denoiser(cond, uncond, 4.5, batched=batched)(x, s)
    assert batches == [6] and torch.allclose(one, two)


def test_cfg_without_uncond_model_is_a_user_error():
    with pytest.raises(AnyCrowdError, match="unconditional"):
        cfg_denoiser(lambda x, s: x, None, 5.0)


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_straight_line_flow_reaches_target_exactly(name):
    # A denoiser that always predicts the true x0 of a point mass: the flow is a straight
    # line, so every step of every sampler lands exactly on the path.
    target = torch.tensor([0.25, -1.5, 3.0], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    for sigmas in (torch.tensor([1.0, 0.0]), flow_sigmas(7, 5.0)):
        out = SAMPLERS[name](lambda x, s: target, x.clone(), sigmas.double())
        assert torch.allclose(out, target, atol=1e-12, rtol=0)


def test_euler_reaches_point_target_in_one_step():
    target = torch.tensor([0.5, -0.5])
    out = sample_euler(lambda x, s: target, torch.tensor([3.0, 7.0]), torch.tensor([1.0, 0.0]))
    assert torch.equal(out, target)


@pytest.mark.parametrize("name,tol", [("euler", 0.03), ("heun", 0.01), ("dpmpp_2m", 0.01)])
def test_many_steps_map_noise_to_gaussian_data(name, tol):
    eps = toy_noise()
    out = SAMPLERS[name](gaussian_denoiser, eps.clone(), flow_sigmas(100, 5.0).double())
    assert (out - (MU + S * eps)).pow(2).mean().sqrt().item() < tol
    assert out.mean().item() == pytest.approx(MU, abs=0.02)
    assert out.std().item() == pytest.approx(S, abs=0.02)


def test_second_order_samplers_beat_euler_at_few_steps():
    euler = rms_error(sample_euler, 10, 1.0)
    heun = rms_error(sample_heun, 10, 1.0)
    dpm = rms_error(sample_dpmpp_2m, 10, 1.0)
    assert heun < euler / 4 and dpm < euler / 4
    # also on Wan's shifted schedule, where the large last step limits everyone
    assert rms_error(sample_heun, 20, 5.0) < 0.7 * rms_error(sample_euler, 20, 5.0)
    assert rms_error(sample_dpmpp_2m, 20, 5.0) < 0.7 * rms_error(sample_euler, 20, 5.0)


def test_sampler_errors_shrink_with_more_steps():
    for sampler in SAMPLERS.values():
        assert rms_error(sampler, 80, 5.0) < rms_error(sampler, 20, 5.0)


@pytest.mark.parametrize("name,evals", [("euler", 6), ("heun", 11), ("dpmpp_2m", 6)])
def test_callback_runs_once_per_step_and_model_eval_counts(name, evals):
    calls, seen = [], []

    def model(x, s):
        calls.append(float(s))
        return gaussian_denoiser(x, s)

    cb = lambda step, total, x, den: seen.append((step, total, x.shape, den.shape))
    SAMPLERS[name](model, toy_noise(8), flow_sigmas(6, 5.0).double(), callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert all(s[1] == 6 and s[2] == (8,) and s[3] == (8,) for s in seen)
    assert len(calls) == evals


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_cancel_raises_before_the_next_model_call(name):
    calls, checks = [], []

    def model(x, s):
        calls.append(1)
        return gaussian_denoiser(x, s)

    def cancel():
        checks.append(1)
        return len(checks) == 3

    with pytest.raises(SamplingCancelled):
        SAMPLERS[name](model, toy_noise(4), flow_sigmas(6, 5.0).double(), cancel=cancel)
    assert len(calls) == 2 and len(checks) == 3


def test_sampling_cancelled_is_not_a_user_error():
    assert not issubclass(SamplingCancelled, AnyCrowdError)


# ----------------------------------------------------------------------------- sample()


def test_sample_is_bit_identical_under_a_seed_and_differs_across_seeds():
    sig = flow_sigmas(8, 5.0)
    a = sample(gaussian_denoiser, (2, 16, 3, 4, 4), sig, "dpmpp_2m", seed=42)
    b = sample(gaussian_denoiser, (2, 16, 3, 4, 4), sig, "dpmpp_2m", seed=42)
    c = sample(gaussian_denoiser, (2, 16, 3, 4, 4), sig, "dpmpp_2m", seed=43)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_make_noise_matches_torch_manual_seed_stream_like_comfyui():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        ref = torch.randn(1, 16, 2, 3, 5)
    assert torch.equal(make_noise((1, 16, 2, 3, 5), 123), ref)
    assert make_noise((2, 2), 0, dtype=torch.float64).dtype == torch.float64


def test_sample_starts_from_renoised_latent_for_partial_denoise():
    starts = []

    def model(x, s):
        starts.append(x.clone())
        return torch.zeros_like(x)

    noise, latent = torch.full((3,), 2.0), torch.full((3,), 4.0)
    sigmas = flow_sigmas(4, 5.0, denoise=0.5)
    sample(model, noise, sigmas, "euler", latent=latent)
    s0 = float(sigmas[0])
    assert torch.allclose(starts[0], noise * s0 + latent * (1 - s0))


def test_sample_with_empty_schedule_returns_latent():
    latent = torch.arange(4.0)
    out = sample(gaussian_denoiser, torch.zeros(4), flow_sigmas(5, denoise=0.0), latent=latent)
    assert torch.equal(out, latent)


def test_sample_rejects_unknown_sampler_and_missing_seed():
    with pytest.raises(AnyCrowdError, match="unknown sampler"):
        sample(gaussian_denoiser, (2,), flow_sigmas(3), "lms", seed=0)
    with pytest.raises(AnyCrowdError, match="seed"):
        sample(gaussian_denoiser, (2,), flow_sigmas(3), "euler")


def test_sample_rejects_latent_of_wrong_shape():
    with pytest.raises(AnyCrowdError, match="latent shape"):
        sample(gaussian_denoiser, (2, 3), flow_sigmas(3), seed=0, latent=torch.zeros(3, 2))


def test_cumulative_guidance_is_one_to_alls_formula_batched_or_not():
    from anycrowd_core.sampling import cumulative_cfg_denoiser

    x = torch.randn(2, 3)
    u, p, f = (lambda x, s: x * 0 + 1.0), (lambda x, s: x * 0 + 3.0), (lambda x, s: x * 0 + 4.0)
    g = cumulative_cfg_denoiser(u, p, f, 2.0, 0.5)
    assert torch.allclose(g(x, torch.tensor(0.5)), torch.full_like(x, 1 + 2 * (3 - 1) + 0.5 * (4 - 3)))

    def batched(xs, s):
        assert xs.shape[0] == 3 * x.shape[0]
        return torch.cat([u(x, s), p(x, s), f(x, s)])

    gb = cumulative_cfg_denoiser(u, p, f, 2.0, 0.5, batched=batched)
    assert torch.equal(gb(x, torch.tensor(0.5)), g(x, torch.tensor(0.5)))
