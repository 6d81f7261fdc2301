"""The one place where AnyCrowd nodes call into ComfyUI (comfy.*, latent_preview, comfy_extras).

Every ComfyUI import is lazy, inside a function, so node classes import and their
ComfyUI-free parts run in tests without ComfyUI. Pieces with a plain-torch equivalent
(conditioning edits, resizing) fall back to it; sampling needs ComfyUI and says so.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from anycrowd_core.boxes import center_crop_region
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan.lora_merge import lora_modules

# Flow-matching shift of ComfyUI's Wan 2.1 model config (supported_models.WAN21_T2V, inherited
# by WAN21_Vace): sampling_settings = {"shift": 8.0}, ModelSamplingDiscreteFlow multiplier 1000.
WAN21_DEFAULT_SHIFT = 8.0

# Used for the sampler/scheduler widgets only when ComfyUI is not loaded (tests, docs).
FALLBACK_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_sde", "uni_pc", "lcm", "res_multistep")
FALLBACK_SCHEDULERS = ("simple", "normal", "karras", "exponential", "sgm_uniform", "beta", "ddim_uniform")


def _loaded(name: str):
    """A ComfyUI module if ComfyUI is importable, else None (never raises)."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def require_comfy(name: str, what: str):
    """Import a ComfyUI module or raise an AnyCrowdError saying `what` needs ComfyUI."""
    module = _loaded(name)
    if module is None:
        raise AnyCrowdError(
            f"{what} needs ComfyUI ({name} is not importable): run it inside ComfyUI, or use the "
            "headless pipeline (anycrowd_core.pipeline.animate) outside it."
        )
    return module


def sampler_names() -> tuple[list[str], list[str]]:
    """(sampler names, scheduler names) as ComfyUI's KSampler offers them.

    Read from an already imported comfy.samplers only: INPUT_TYPES must never trigger
    ComfyUI's device probing in a process that has not set ComfyUI up.
    """
    samplers = sys.modules.get("comfy.samplers")
    if samplers is None:
        return list(FALLBACK_SAMPLERS), list(FALLBACK_SCHEDULERS)
    return list(samplers.KSampler.SAMPLERS), list(samplers.KSampler.SCHEDULERS)


class _NoProgress:
    def __init__(self, total: int):
        self.total, self.current = total, 0

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.current = value

    def update(self, value: int) -> None:
        self.current += value


def progress_bar(total: int):
    """comfy.utils.ProgressBar(total), or a silent stand-in without ComfyUI."""
    utils = _loaded("comfy.utils")
    return utils.ProgressBar(total) if utils is not None else _NoProgress(total)


def check_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (no-op without ComfyUI)."""
    mm = sys.modules.get("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def conditioning_set_values(conditioning: list, values: dict, append: bool = False) -> list:
    """New CONDITIONING with `values` set in each entry's options dict (the input is not mutated).

    CONDITIONING is a list of `[tensor, options]`; with append=True a list value is added
    after an existing list under the same key (how several VACE inputs stack), which is
    what ComfyUI's node_helpers.conditioning_set_values does (checked in the host tests).
    """
    out = []
    for entry in conditioning:
        tensor, options = entry[0], dict(entry[1])
        for key, value in values.items():
            previous = options.get(key) if append else None
            options[key] = value if previous is None else previous + value
        out.append([tensor, options])
    return out


def resize_frames(frames: Tensor, width: int, height: int, mode: str = "bilinear") -> Tensor:
    """Center-crop to the target aspect and resize `[T, H, W, C]` to `[T, height, width, C]`.

    The same geometry as comfy.utils.common_upscale(..., crop="center") that WanVaceToVideo
    uses (crop offsets: anycrowd_core.boxes.center_crop_region); ComfyUI's own function is
    used when it is importable so the pixels match the native node exactly.
    """
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    x = frames.movedim(-1, 1)
    utils = _loaded("comfy.utils")
    if utils is not None:
        return utils.common_upscale(x, width, height, mode, "center").movedim(1, -1)
    y0, x0, ch, cw = center_crop_region(int(frames.shape[1]), int(frames.shape[2]), height, width)
    x = x[:, :, y0 : y0 + ch, x0 : x0 + cw]
    return F.interpolate(x, size=(height, width), mode=mode).movedim(1, -1)


def resize_masks(masks: Tensor, width: int, height: int, mode: str = "bilinear") -> Tensor:
    """`[N, H, W]` masks -> `[N, height, width]` with the same center crop as resize_frames."""
    return resize_frames(masks[..., None].float(), width, height, mode)[..., 0]


def load_diffusion_model(path, what: str):
    """A MODEL from a diffusion-model file through ComfyUI's own loader, as Load Diffusion Model
    (UNETLoader) loads it (`comfy.sd.load_diffusion_model`: model detection, key prefixes,
    ModelPatcher), in float32. Raises an AnyCrowdError if ComfyUI does not recognise the file."""
    sd = require_comfy("comfy.sd", what)
    try:
        return sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})
    except RuntimeError as e:
        raise AnyCrowdError(f"ComfyUI could not load {path} as a diffusion model ({str(e).splitlines()[0]}): "
                            "the file is damaged or not a Wan 2.1 VACE checkpoint; restore it.") from e


def apply_lora(model: Any, lora: dict, strength: float):
    """A clone of `model` with the LoRA patched in by ComfyUI's own mechanism: the same
    `comfy.sd.load_lora_for_models(model, None, lora, strength, 0)` call the native
    LoraLoaderModelOnly makes. Raises if any module of the LoRA found no weight to patch."""
    sd = require_comfy("comfy.sd", "Applying an AnyCrowd LoRA")
    patched, _ = sd.load_lora_for_models(model, None, lora, strength, 0)
    missing = sorted(f"diffusion_model.{p}.weight" for p in lora_modules(lora)
                     if f"diffusion_model.{p}.weight" not in patched.patches)
    if missing:
        raise AnyCrowdError(
            f"{len(missing)} LoRA module(s) match no weight of this model (e.g. {missing[0]}): the LoRA was made "
            "for another model layout. Load the Wan 2.1 VACE model it was trained on."
        )
    return patched


_SHIFTED_SAMPLING = None


def apply_shift(model: Any, shift: float):
    """A clone of `model` sampling with flow shift `shift`: the same `model_sampling` object
    patch ComfyUI's ModelSamplingSD3 node adds (discrete flow + CONST, multiplier 1000), set
    here without instantiating that node class (core nodes are being moved to the V3 node
    schema, where calling `ModelSamplingSD3().patch` no longer works)."""
    global _SHIFTED_SAMPLING
    sampling = require_comfy("comfy.model_sampling", "Setting the sampling shift")
    if _SHIFTED_SAMPLING is None:
        class ModelSamplingShifted(sampling.ModelSamplingDiscreteFlow, sampling.CONST):
            pass

        _SHIFTED_SAMPLING = ModelSamplingShifted
    shifted = _SHIFTED_SAMPLING(model.model.model_config)
    shifted.set_parameters(shift=float(shift), multiplier=1000)
    out = model.clone()
    out.add_object_patch("model_sampling", shifted)
    return out


def _start_sampling(model: Any, latent: dict, seed: int, preview_steps: int, preview_from: int,
                    total: int | None = None):
    """What every sampling path does before its first step, as nodes.common_ksampler: check
    Cancel, the latent's channels, the seeded noise (comfy.sample.prepare_noise) and the
    preview/progress callback. Returns (latent image, noise, callback_from): callback_from(k)
    is the step callback of a part starting at step k; it reports against `total` steps, or
    against the sampler's own count when None."""
    comfy_sample = require_comfy("comfy.sample", "AnyCrowd Sampler")
    latent_preview = require_comfy("latent_preview", "AnyCrowd Sampler")
    check_interrupted()
    latent_image = comfy_sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy_sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    preview = latent_preview.prepare_callback(model, preview_steps)

    def callback_from(offset: int):
        def callback(step, x0, x, total_steps):
            # main.py's progress hook checks Cancel too, but only when the server installed it
            # (not in headless executors or tests); checking here makes Cancel reliable.
            check_interrupted()
            preview(offset + step, x0[:, :, preview_from:], x, total_steps if total is None else total)
        return callback

    return latent_image, noise, callback_from


def sample(
    model: Any,
    latent: dict,
    *,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: list,
    negative: list,
    denoise: float = 1.0,
    preview_from: int = 0,
    guider=None,
) -> Tensor:
    """Sample a LATENT with ComfyUI's machinery, like nodes.common_ksampler: same noise
    (comfy.sample.prepare_noise), same preview/progress callback (latent_preview), plus a
    Cancel check after every step so cancelling works without the server's progress hook.
    `preview_from`: first latent frame the live preview shows (skip the reference frames:
    ComfyUI's previewer shows a video latent's first frame). `guider`: a GUIDER used
    instead of plain CFG (cumulative guidance), on KSampler's schedule and sampler."""
    comfy_sample = require_comfy("comfy.sample", "AnyCrowd Sampler")
    utils = require_comfy("comfy.utils", "AnyCrowd Sampler")
    latent_image, noise, callback_from = _start_sampling(model, latent, seed, steps, preview_from)
    callback = callback_from(0)
    if guider is not None:
        return sample_with_guider(model, guider, noise, latent_image, steps=steps, sampler_name=sampler_name,
                                  scheduler=scheduler, denoise=denoise, noise_mask=latent.get("noise_mask"),
                                  callback=callback, disable_pbar=not utils.PROGRESS_BAR_ENABLED, seed=seed)
    return comfy_sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
        denoise=denoise, noise_mask=latent.get("noise_mask"), callback=callback,
        disable_pbar=not utils.PROGRESS_BAR_ENABLED, seed=seed,
    )


def sample_two_experts(
    high: Any,
    low: Any,
    latent: dict,
    *,
    switch_boundary: float,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: list,
    negative: list,
    denoise: float = 1.0,
    preview_from: int = 0,
    guiders: tuple = (None, None),
) -> tuple[Tensor, int]:
    """Wan 2.2's two experts on one sigma schedule: the high-noise expert `high` runs the steps
    whose sigma is >= switch_boundary, the low-noise expert `low` the rest (nodes/wan22_experts.py).
    Returns (samples, switch step). The two parts are the calls a KSamplerAdvanced chain makes
    (common_ksampler: seeded noise, start 0 / end switch with the leftover noise; then no added
    noise, start switch to the end): the result equals that chain exactly. `guiders`: one GUIDER
    per expert (cumulative guidance), run on the same schedule slices; None for plain CFG."""
    from .wan22_experts import expert_switch_step

    comfy_sample = require_comfy("comfy.sample", "AnyCrowd Sampler")
    samplers = require_comfy("comfy.samplers", "AnyCrowd Sampler")
    utils = require_comfy("comfy.utils", "AnyCrowd Sampler")
    mm = require_comfy("comfy.model_management", "AnyCrowd Sampler")
    check_interrupted()
    schedules = [samplers.KSampler(m, steps=steps, device=m.load_device, sampler=sampler_name, scheduler=scheduler,
                                   denoise=denoise, model_options=m.model_options).sigmas.cpu() for m in (high, low)]
    if schedules[0].shape != schedules[1].shape or not torch.equal(*schedules):
        raise AnyCrowdError(
            "The two experts sample with different sigma schedules (their shifts differ, e.g. a ModelSamplingSD3 on "
            "one only): set shift on AnyCrowd Sampler, which applies it to both, or give both the same shift."
        )
    sigmas, total = schedules[0], len(schedules[0]) - 1
    switch = expert_switch_step(sigmas, switch_boundary)
    # one progress bar over both parts: every step reports against the whole schedule's total
    latent_image, noise, callback_from = _start_sampling(high, latent, seed, total, preview_from, total=total)
    disable_pbar, noise_mask = not utils.PROGRESS_BAR_ENABLED, latent.get("noise_mask")
    x, first = latent_image, True
    for model, guider, start, end in ((high, guiders[0], 0, switch), (low, guiders[1], switch, total)):
        if start == end:
            continue
        # only the first part adds noise (KSamplerAdvanced add_noise enable, then disable)
        part_noise = noise if first else torch.zeros(latent_image.size(), dtype=latent_image.dtype,
                                                      layout=latent_image.layout, device="cpu")
        if guider is None:
            x = comfy_sample.sample(
                model, part_noise, steps, cfg, sampler_name, scheduler, positive, negative, x, denoise=denoise,
                disable_noise=not first, start_step=start, last_step=end, force_full_denoise=end == total,
                noise_mask=noise_mask, callback=callback_from(start), disable_pbar=disable_pbar, seed=seed,
            )
        else:  # KSampler.sample's slicing of the same schedule, through the guider
            x = guider.sample(part_noise, x, samplers.sampler_object(sampler_name), sigmas[start:end + 1].to(model.load_device),
                              denoise_mask=noise_mask, callback=callback_from(start), disable_pbar=disable_pbar,
                              seed=seed).to(mm.intermediate_device())
        first = False
    return x, switch


def sample_with_guider(model: Any, guider, noise: Tensor, latent_image: Tensor, *, steps: int, sampler_name: str,
                       scheduler: str, denoise: float, noise_mask, callback, disable_pbar: bool, seed: int) -> Tensor:
    """comfy.sample.sample with `guider` in place of plain CFG: KSampler's schedule (steps,
    scheduler, denoise) and sampler, as SamplerCustomAdvanced would run them."""
    samplers = require_comfy("comfy.samplers", "AnyCrowd sampling")
    mm = require_comfy("comfy.model_management", "AnyCrowd sampling")
    sigmas = samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                               scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    out = guider.sample(noise, latent_image, samplers.sampler_object(sampler_name), sigmas, denoise_mask=noise_mask,
                        callback=callback, disable_pbar=disable_pbar, seed=seed)
    return out.to(mm.intermediate_device())


_CUMULATIVE_GUIDER = None


def cumulative_guider(model: Any, positive: list, middle: list, negative: list, pose_scale: float, ref_scale: float):
    """A GUIDER (a comfy.samplers.CFGGuider) for One-to-All's cumulative guidance:
    u + pose_scale * (p - u) + ref_scale * (f - p), with u from `negative`, p from `middle`
    (pose only) and f from `positive`, the three evaluated as one batch by calc_cond_batch."""
    global _CUMULATIVE_GUIDER
    samplers = require_comfy("comfy.samplers", "AnyCrowd Cumulative CFG")
    if _CUMULATIVE_GUIDER is None:
        class CumulativeGuider(samplers.CFGGuider):
            def set_conds(self, positive, middle, negative):
                self.inner_set_conds({"positive": positive, "middle": middle, "negative": negative})

            def predict_noise(self, x, timestep, model_options={}, seed=None):
                conds = [self.conds.get("negative"), self.conds.get("middle"), self.conds.get("positive")]
                u, p, f = samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
                return u + (p - u) * self.pose_scale + (f - p) * self.ref_scale

        _CUMULATIVE_GUIDER = CumulativeGuider
    guider = _CUMULATIVE_GUIDER(model)
    guider.set_conds(positive, middle, negative)
    guider.pose_scale, guider.ref_scale = float(pose_scale), float(ref_scale)
    guider.cfg = 1.0  # read by some samplers (cfg_pp) and previews; the scales above are what apply
    return guider


def empty_latent(batch_size: int, shape: tuple[int, ...]) -> Tensor:
    """Zeros `[batch_size, *shape]` on ComfyUI's intermediate device (CPU without ComfyUI)."""
    mm = sys.modules.get("comfy.model_management")
    device = mm.intermediate_device() if mm is not None else torch.device("cpu")
    return torch.zeros((batch_size, *shape), device=device)
