"""Flow-matching sampling for the headless path: Wan's shifted sigma schedule, the
velocity -> x0 adapter, classifier-free guidance and k-diffusion-style ODE samplers.

Conventions (rectified flow, as in Wan 2.1): x_sigma = (1 - sigma) * x0 + sigma * eps with
sigma in [0, 1]; the network predicts the velocity eps - x0 at timestep t = 1000 * sigma.
Every sampler takes an x0-predicting `denoiser(x, sigma)` (k-diffusion's "denoised") and
walks x down the decreasing `sigmas`, so the samplers never know the model is a flow model.
The ComfyUI node does not use this module (ComfyUI samples with its own KSampler); it is
written to give the same schedules and noise as ComfyUI so both paths agree. See
docs/sampling.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .errors import AnyCrowdError, SamplingCancelled

# Wan (and ComfyUI's ModelSamplingDiscreteFlow) feed the network t = sigma * 1000 and keep a
# table of 1000 discrete sigmas; the "simple" scheduler picks its steps from that table.
TIMESTEP_MULTIPLIER = 1000
NUM_TRAIN_TIMESTEPS = 1000

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`denoiser(x [B, ...], sigma 0-dim tensor) -> x0 prediction [B, ...]`."""

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""`callback(step, total, x, denoised)`: step = steps completed (1..total), x after the step."""


# ----------------------------------------------------------------------------- schedule


def shift_sigma(sigma, shift: float):
    """Wan/SD3 timestep shift sigma' = s*sigma / (1 + (s-1)*sigma) (Esser et al. 2024, eq. 23).

    Shift > 1 spends more of the steps at high noise, which large video models need.
    Works on floats and tensors.
    """
    if shift == 1.0:
        return sigma
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigma_to_timestep(sigma):
    """Network timestep for a flow sigma: t = 1000 * sigma (Wan and ComfyUI convention)."""
    return sigma * TIMESTEP_MULTIPLIER


def _full_flow_sigmas(steps: int, shift: float) -> torch.Tensor:
    # Step i starts at table entry t_i = 1000 - floor(i * 1000/steps), i.e. exactly
    # 1 - i/steps when steps divides 1000. The float quotient (not an integer division) is
    # deliberate: it reproduces the table indices ComfyUI's "simple" scheduler picks, so the
    # two paths give the same sigmas for step counts that do not divide 1000 as well.
    stride = NUM_TRAIN_TIMESTEPS / steps
    table_t = [NUM_TRAIN_TIMESTEPS - int(i * stride) for i in range(steps)]
    sig = [shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift) for t in table_t] + [0.0]
    return torch.tensor(sig, dtype=torch.float32)


def flow_sigmas(steps: int, shift: float = 5.0, denoise: float = 1.0) -> torch.Tensor:
    """Wan flow-matching schedule: float32 `[steps + 1]`, decreasing, first <= 1, last = 0.

    Reproduces ComfyUI's `ModelSamplingDiscreteFlow(shift)` with the "simple" scheduler
    (what `ModelSamplingSD3`/Wan workflows use; values agree to float32 rounding): a linear
    schedule 1, 1 - 1/steps, ..., 1/steps, 0 in sigma, each value passed through
    `shift_sigma`. With denoise < 1 it returns, like ComfyUI's KSampler, the last
    `steps + 1` sigmas of the schedule for `int(steps / denoise)` steps (img2img / re-noising
    an existing latent); denoise <= 0 gives an empty schedule (nothing to sample).
    """
    if int(steps) != steps or steps < 1:
        raise AnyCrowdError(f"steps must be a positive integer, got {steps!r}; use e.g. 20-50.")
    if not (shift > 0 and math.isfinite(shift)):
        raise AnyCrowdError(f"shift must be a positive number, got {shift!r}; Wan uses 3.0-8.0 (5.0 default).")
    steps = int(steps)
    if denoise > 0.9999:
        return _full_flow_sigmas(steps, shift)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    return _full_flow_sigmas(int(steps / denoise), shift)[-(steps + 1):]


# ----------------------------------------------------------------------------- model adapters


def flow_denoiser(velocity_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Denoiser:
    """Wrap a velocity model `v(x [B, ...], t [B] in 0..1000) -> eps - x0` as an x0 denoiser.

    From x = (1 - sigma) x0 + sigma eps and v = eps - x0 follows x0 = x - sigma * v (ComfyUI's
    CONST.calculate_denoised). Per-frame timesteps (clean reference frames) would be added
    here by passing a `[B, T]` t instead of `[B]`.
    """

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        t = sigma_to_timestep(sigma.to(torch.float32)).reshape(()).expand(x.shape[0])
        v = velocity_model(x, t)
        return x - sigma.to(v.dtype) * v

    return denoiser


def cfg_denoiser(
    cond_denoiser: Denoiser,
    uncond_denoiser: Denoiser | None,
    scale: float,
    *,
    batched: Denoiser | None = None,
) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022) on x0 predictions: u + scale * (c - u).

    At scale == 1 only the conditional model runs (the result is c exactly). If `batched`
    is given it is used instead of two calls: `batched(cat([x, x]), sigma)` must return the
    conditional prediction in the first B rows and the unconditional one in the last B,
    which is faster on a GPU (ComfyUI batches cond and uncond the same way).
    """
    if scale == 1.0:
        return cond_denoiser
    if uncond_denoiser is None and batched is None:
        raise AnyCrowdError(
            f"cfg scale {scale} needs an unconditional (negative prompt) model; "
            "pass uncond_denoiser or set cfg to 1.0."
        )

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if batched is not None:
            cond, uncond = batched(torch.cat([x, x]), sigma).chunk(2)
        else:
            cond = cond_denoiser(x, sigma)
            uncond = uncond_denoiser(x, sigma)
        return uncond + (cond - uncond) * scale

    return denoiser


def cumulative_cfg_denoiser(
    uncond: Denoiser,
    pose: Denoiser,
    full: Denoiser,
    pose_scale: float,
    ref_scale: float,
    *,
    batched: Denoiser | None = None,
) -> Denoiser:
    """Cumulative classifier-free guidance (One-to-All, after InstructPix2Pix, Brooks et al.
    2023): u + pose_scale * (p - u) + ref_scale * (f - p), with u the unconditional, p the
    pose-conditioned and f the reference-plus-pose prediction (x0 space).

    Costs three model evaluations per step. If `batched` is given it is used instead:
    `batched(cat([x, x, x]), sigma)` returns (u, p, f) stacked in that order along the batch.
    pose_scale = ref_scale = 1 reduces to f exactly, but still evaluates all three.
    """
    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if batched is not None:
            u, p, f = batched(torch.cat([x, x, x]), sigma).chunk(3)
        else:
            u, p, f = uncond(x, sigma), pose(x, sigma), full(x, sigma)
        return u + (p - u) * pose_scale + (f - p) * ref_scale

    return denoiser


def _guard(denoiser: Denoiser, cancel: Callable[[], bool] | None) -> Denoiser:
    # Checking before (not after) each evaluation means a cancel costs at most the model call
    # already running, and no work is started once cancellation was requested.
    if cancel is None:
        return denoiser

    def guarded(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if cancel():
            raise SamplingCancelled("sampling cancelled")
        return denoiser(x, sigma)

    return guarded


def _check_sigmas(sigmas: torch.Tensor) -> None:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise AnyCrowdError("sigmas must be a 1-D tensor (use flow_sigmas(steps, shift)).")
    values = sigmas.detach().float().cpu()
    if not torch.isfinite(values).all() or (values < 0).any():
        raise AnyCrowdError(f"sigmas must be finite and >= 0, got {values.tolist()}; use flow_sigmas(steps, shift).")
    if len(values) > 1 and not (values[1:] < values[:-1]).all():
        # every step divides by its starting sigma and integrates towards the next one
        raise AnyCrowdError(
            f"sigmas must run strictly downwards (noisy to clean, e.g. 1.0 ... 0.0), got {values.tolist()}; "
            "use flow_sigmas(steps, shift), or reverse a list written upwards."
        )


# ----------------------------------------------------------------------------- samplers


# One step of a sampler: (model, x, denoised, sigmas, i) -> x at sigmas[i + 1], where
# denoised = model(x, sigmas[i]) was already evaluated by the loop.
Step = Callable[[Denoiser, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _sampling_loop(step: Step, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                   callback: Callback | None, cancel: Callable[[], bool] | None) -> torch.Tensor:
    """What every sampler shares: the sigma checks, the cancel guard before every model
    evaluation, one denoised prediction per interval, `step`, and the callback after it."""
    _check_sigmas(sigmas)
    model = _guard(denoiser, cancel)
    total = len(sigmas) - 1
    for i in range(total):
        denoised = model(x, sigmas[i])
        x = step(model, x, denoised, sigmas, i)
        if callback is not None:
            callback(i + 1, total, x, denoised)
    return x


def _euler_step(model: Denoiser, x: torch.Tensor, denoised: torch.Tensor, sigmas: torch.Tensor, i: int) -> torch.Tensor:
    s, s_next = float(sigmas[i]), float(sigmas[i + 1])
    return x + (x - denoised) * ((s_next - s) / s)


def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 callback: Callback | None = None, cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Euler method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the
    Heun correction). For a flow model d = (x - x0)/sigma is the velocity, so this is the
    plain rectified-flow Euler sampler (ComfyUI "euler")."""
    return _sampling_loop(_euler_step, denoiser, x, sigmas, callback, cancel)


def _heun_step(model: Denoiser, x: torch.Tensor, denoised: torch.Tensor, sigmas: torch.Tensor, i: int) -> torch.Tensor:
    s, s_next = float(sigmas[i]), float(sigmas[i + 1])
    d = (x - denoised) / s
    x_euler = x + d * (s_next - s)
    if s_next == 0:
        return x_euler
    d_next = (x_euler - model(x_euler, sigmas[i + 1])) / s_next
    return x + (d + d_next) * (0.5 * (s_next - s))


def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                callback: Callback | None = None, cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1/2 with S_churn = 0); the step
    to sigma = 0 is an Euler step, where the derivative is undefined (ComfyUI "heun").
    Costs two model evaluations per step except the last."""
    return _sampling_loop(_heun_step, denoiser, x, sigmas, callback, cancel)


def _half_log_snr(sigma: float) -> float:
    """lambda = log(alpha/sigma) = log((1 - sigma)/sigma) for the flow path alpha = 1 - sigma."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    callback: Callback | None = None, cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2) for the flow path
    alpha = 1 - sigma, with lambda = log((1 - sigma)/sigma).

    Update: x' = (sigma'/sigma) x + alpha' (1 - e^-h) D, h = lambda' - lambda, where D is the
    denoised of this step, or (1 + 1/2r) D - (1/2r) D_prev with r = h_prev / h once a previous
    step exists. The first step and the step to sigma = 0 are first order (there h is
    infinite). The first-order coefficient alpha'(1 - e^-h) equals 1 - sigma'/sigma, the
    same as ComfyUI's "dpmpp_2m"; ComfyUI measures r in log(sigma) instead of the flow's
    lambda, so its 2nd-order correction differs slightly from this one for flow models.
    """
    previous = {}  # the last step's denoised and h (the multistep memory)

    def step(model: Denoiser, x: torch.Tensor, denoised: torch.Tensor, sigmas: torch.Tensor, i: int) -> torch.Tensor:
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        lam, lam_next = _half_log_snr(s), _half_log_snr(s_next)
        h = lam_next - lam
        if not previous or s_next == 0 or not math.isfinite(previous["h"]):
            # A first-order step whose previous interval was infinite (starting at sigma = 1)
            # would give r = inf, i.e. no correction: the same as first order.
            d = denoised
        else:
            r = previous["h"] / h
            d = denoised * (1 + 1 / (2 * r)) - previous["denoised"] * (1 / (2 * r))
        previous.update(denoised=denoised, h=h)
        # (sigma'/sigma) x + (1 - sigma'/sigma) d is the exact alpha'(1 - e^-h) form, written
        # without lambda so it stays finite at sigma = 1 and sigma' = 0.
        ratio = s_next / s
        return x * ratio + d * (1 - ratio)

    return _sampling_loop(step, denoiser, x, sigmas, callback, cancel)


SAMPLERS = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}
"""Sampler name (ComfyUI's KSampler names) -> sampler function."""


# ----------------------------------------------------------------------------- entry point


def make_noise(shape: Sequence[int], seed: int, *, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from `seed`, then moved to `device`.

    Drawing on the CPU makes a seed give the same noise on every GPU and on CPU; the stream
    is that of `torch.manual_seed(seed)` followed by one `torch.randn(shape)`, which is what
    ComfyUI's `prepare_noise` draws for a float32 latent, so seeds carry over.
    """
    if seed is None or int(seed) != seed:
        raise AnyCrowdError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0.")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype)


def sample(
    denoiser: Denoiser,
    noise: torch.Tensor | Sequence[int],
    sigmas: torch.Tensor,
    sampler: str = "euler",
    *,
    seed: int | None = None,
    latent: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    callback: Callback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Sample a clean latent from noise; returns x at sigmas[-1] (0 for a full schedule).

    `noise` is either a shape (the noise is then drawn by `make_noise(shape, seed)`) or a
    ready noise tensor (seed unused). The start point is sigma0 * noise + (1 - sigma0) * latent
    with `latent` zeros by default, as ComfyUI's CONST noise scaling does; for a full
    schedule sigma0 = 1 and x_T is the noise itself. Pass `latent` with a
    `flow_sigmas(..., denoise < 1)` schedule to re-noise and refine an existing latent.
    """
    if sampler not in SAMPLERS:
        raise AnyCrowdError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    _check_sigmas(sigmas)
    if isinstance(noise, torch.Tensor):
        noise = noise.to(device=device if device is not None else noise.device, dtype=dtype)
    else:
        noise = make_noise(noise, seed, device=device, dtype=dtype)
    if latent is None:
        latent = torch.zeros_like(noise)
    elif latent.shape != noise.shape:
        raise AnyCrowdError(
            f"latent shape {tuple(latent.shape)} differs from the noise shape {tuple(noise.shape)}; "
            "encode the input video at the generation size and frame count."
        )
    else:
        latent = latent.to(device=noise.device, dtype=dtype)
    if len(sigmas) < 2:
        return latent  # denoise = 0: nothing to do
    s0 = float(sigmas[0])
    x = noise * s0 + latent * (1.0 - s0)
    return SAMPLERS[sampler](denoiser, x, sigmas, callback=callback, cancel=cancel)
