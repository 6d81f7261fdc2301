"""Training noise levels sigma in [0, 1] (Wan timestep = 1000 * sigma) for flow matching.

Uniform, logit-normal and shifted distributions, and RealisDance-DiT's low-noise warmup
(§3.2, Eq. 2-3), which skews sampling towards small sigma early in fine-tuning.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError

from .config import TIMESTEP_DISTRIBUTIONS, TimestepConfig


def shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """sigma' = s*sigma / (1 + (s-1)*sigma) (the flow-matching shift, as in sampling)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def warmup_strength(step: int, warmup_steps: int, alpha: float) -> float:
    """c = f(i) * T_max^2 of RealisDance-DiT Eq. 3: alpha * 2 (tau - i) / tau for i <= tau, else 0.

    In units of sigma = x / T_max the warmup density of Eq. 2 is p(u) = 1 + c (1/2 - u)
    on [0, 1]: c = 0 is uniform, c = 2 (alpha = 1 at step 0) falls linearly from 2 to 0.
    A negative alpha gives c < 0, the mirrored density rising towards high noise.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 0.0
    return alpha * 2.0 * (warmup_steps - step) / warmup_steps


def warmup_quantile(v: Tensor, c: float) -> Tensor:
    """Inverse CDF of p(u) = 1 + c (1/2 - u), |c| <= 2: maps uniform v in [0, 1) to u in [0, 1].

    CDF G(u) = u + (c/2)(u - u^2); solving G(u) = v gives the smaller root below.
    """
    if c == 0.0:
        return v
    b = 1 + c / 2
    return (b - torch.sqrt(torch.clamp(b * b - 2 * c * v, min=0))) / c


def sample_sigmas(
    n: int,
    generator: torch.Generator,
    schedule: TimestepConfig | None = None,
    *,
    step: int = 0,
    **schedule_fields,
) -> Tensor:
    """`[n]` float32 sigmas in [0, 1] drawn on the CPU from `generator`, at training step `step`.

    schedule: the distribution and warmup, a `TimestepConfig` (or its fields as keywords:
    distribution, shift, logit_mean, logit_std, warmup_steps, warmup_alpha; the defaults are
    its defaults). A uniform quantile v is first skewed by the low-noise warmup (identity once
    step >= warmup_steps), then mapped through the distribution's quantile function:
    uniform: u; logit_normal: sigmoid(mean + std * Phi^-1(u)); shifted: shift_sigma(u, shift).
    So with warmup the paper's density applies exactly to `uniform`, and the other
    distributions are skewed towards low noise by the same quantile warp.
    """
    if schedule is not None and schedule_fields:
        raise TypeError("sample_sigmas takes a TimestepConfig or its fields as keywords, not both")
    ts = schedule if schedule is not None else TimestepConfig(**schedule_fields)
    distribution, shift, logit_mean, logit_std = ts.distribution, ts.shift, ts.logit_mean, ts.logit_std
    warmup_steps, warmup_alpha = ts.warmup_steps, ts.warmup_alpha
    if distribution not in TIMESTEP_DISTRIBUTIONS:
        raise AnyCrowdError(f"Unknown timestep distribution {distribution!r}; choose one of {TIMESTEP_DISTRIBUTIONS}.")
    v = torch.rand(n, generator=generator, dtype=torch.float64)
    u = warmup_quantile(v, warmup_strength(step, warmup_steps, warmup_alpha))
    if distribution == "logit_normal":
        eps = 1e-7  # keep erfinv finite at the ends
        z = math.sqrt(2) * torch.erfinv(2 * u.clamp(eps, 1 - eps) - 1)
        sigma = torch.sigmoid(logit_mean + logit_std * z)
    elif distribution == "shifted":
        sigma = shift_sigma(u, shift)
    else:
        sigma = u
    return sigma.clamp(0, 1).to(torch.float32)
