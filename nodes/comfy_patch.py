"""Patch ComfyUI's native Wan 2.1 VACE MODEL so its self-attention layers run an AnyCrowd
attention mode (tsda / masked / global) without editing ComfyUI and without a second model.

How and why: docs/comfyui_patch.md. comfy.* is imported lazily, inside functions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from anycrowd_core.attention import AnyCrowdAttention, GateBank, SelfAttentionOps
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout

from .comfy_attention import comfy_attend, comfy_attn1_patch
from .context_windows import FOLLOWER_KEY, WINDOW_KEY, follow_context_windows

HOOK_KEY = "anycrowd"  # model_options["transformer_options"][HOOK_KEY] holds the per-run hook
ROPE_KEY = "anycrowd_shifted_rope"  # ... [ROPE_KEY] holds the ShiftedRope of a run with shifted RoPE
ADAPTER_KEY = "anycrowd_adapter"  # ... [ADAPTER_KEY]: what AnyCrowd Load Adapter loaded (shifted_rope, files)
GATES_KEY = "anycrowd_gates"  # additional_models key: ComfyUI loads the gates with the model
BRANCH_CHOICES = {"both": ("dit", "vace"), "dit": ("dit",), "vace": ("vace",)}

# Names for models users plug in by mistake (ComfyUI's model_base class names).
_MODEL_NAMES = {
    "WAN21": "a plain Wan 2.1 model (text/image-to-video, no VACE blocks)",
    "WAN21_Camera": "a Wan 2.1 camera-control model",
    "WAN21_HuMo": "a Wan 2.1 HuMo model",
    "WAN22": "a Wan 2.2 model",
    "WAN22_Animate": "a Wan 2.2 Animate model",
    "WAN22_S2V": "a Wan 2.2 speech-to-video model",
    "Flux": "a Flux model",
    "SDXL": "an SDXL model",
    "SD3": "an SD3 model",
    "BaseModel": "a Stable Diffusion 1.x/2.x model",
    "HunyuanVideo": "a HunyuanVideo model",
    "LTXV": "an LTX-Video model",
}

_LOAD_HINT = (
    "load a Wan 2.1 VACE checkpoint (e.g. wan2.1_vace_1.3B_fp16.safetensors or "
    "wan2.1_vace_14B_fp16.safetensors from models/diffusion_models) with the Load Diffusion Model node "
    "and connect its MODEL output here."
)


def _describe(model) -> str:
    inner = getattr(model, "model", None)
    if inner is None:
        return f"a {type(model).__name__} (not a ComfyUI MODEL)"
    name = type(inner).__name__
    return _MODEL_NAMES.get(name, f"a {name} model")


def check_wan_vace(model) -> None:
    """Raise AnyCrowdError unless `model` is a ComfyUI MODEL wrapping Wan 2.1 VACE
    (a diffusion model with `vace_blocks`)."""
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    if dm is None or not hasattr(dm, "vace_blocks") or not hasattr(dm, "blocks"):
        raise AnyCrowdError(f"AnyCrowd needs a Wan 2.1 VACE model, but got {_describe(model)}: {_LOAD_HINT}")


def check_latent_matches_layout(latent: torch.Tensor, layout: TokenLayout) -> None:
    """Early, readable version of the check the attention hook makes inside sampling:
    `latent` `[B, 16, F, H/8, W/8]` (reference + video latent frames) must have the
    layout's frame count and token grid."""
    frames = layout.num_ref_frames + layout.video_frames
    h, w = layout.grid
    if latent.dim() != 5 or latent.shape[2] != frames or tuple(latent.shape[3:]) != (2 * h, 2 * w):
        got = (
            f"{latent.shape[4] * 8}x{latent.shape[3] * 8} px with {latent.shape[2]} latent frames"
            if latent.dim() == 5
            else f"a latent of shape {tuple(latent.shape)}"
        )
        raise AnyCrowdError(
            f"The layout was built for {layout.frame_size[1]}x{layout.frame_size[0]} px, "
            f"{layout.pixel_frames} frames and {layout.num_ref_frames} reference frames "
            f"({frames} latent frames), but the latent is {got}: build the layout and the latent "
            "with the same AnyCrowd IILR Encode node (same width, height, length and characters)."
        )


class AnyCrowdSelfAttentionForward:
    """Object patch for `diffusion_model.<blocks|vace_blocks>.<i>.self_attn.forward`.

    Patching `forward` (the key other packs patch too), not the module, leaves the layer and
    its q, k, v, o, norm_q, norm_k exactly where they are, so weight keys, LoRA patches and
    low-VRAM casting reach them unchanged, and a later patch of the same key simply wins.
    Without a hook in `transformer_options["anycrowd"]`, in mode "global", or for a branch
    the hook does not cover, it calls `fallback`: what `forward` was before this patch (the
    original bound method, bit-exact, or an earlier pack's patch).
    """

    def __init__(self, module: nn.Module, fallback, branch: str, index: int):
        if isinstance(fallback, AnyCrowdSelfAttentionForward):  # re-patching: one AnyCrowd level
            fallback = fallback.fallback
        self.module, self.fallback = module, fallback
        self.branch, self.index = branch, index

    def __call__(self, x, freqs, transformer_options={}, **kwargs):
        hook, rope = transformer_options.get(HOOK_KEY), transformer_options.get(ROPE_KEY)
        windows = transformer_options.get(FOLLOWER_KEY)
        if windows is not None and WINDOW_KEY in transformer_options:  # ComfyUI's context windows
            hook, rope = windows.follow(transformer_options[WINDOW_KEY])
        if rope is not None:  # every layer and mode, "global" and the fallback included
            freqs = rope.freqs(freqs)
        if hook is None or hook.mode == "global" or self.branch not in hook.branches:
            return self.fallback(x, freqs, transformer_options=transformer_options, **kwargs)
        return hook(x, self._ops(freqs, transformer_options))

    def _ops(self, freqs, transformer_options) -> SelfAttentionOps:
        import comfy.ldm.modules.attention as attention
        from comfy.ldm.flux.math import apply_rope1

        m = self.module
        n, d = m.num_heads, m.head_dim

        def qkv(tokens):
            b, s = tokens.shape[:2]
            q = apply_rope1(m.norm_q(m.q(tokens)).view(b, s, n, d), freqs)
            k = apply_rope1(m.norm_k(m.k(tokens)).view(b, s, n, d), freqs)
            return q, k, m.v(tokens).view(b, s, n, d)

        def out(o):
            return m.o(o.flatten(-2))

        return SelfAttentionOps(
            qkv=qkv, out=out, branch=self.branch, index=self.index,
            attend=comfy_attend(attention, m, transformer_options),
            after_attention=comfy_attn1_patch(transformer_options),
        )


class ShiftedRope:
    """RealisDance-DiT's shifted RoPE in ComfyUI's Wan: the rotary table of the layout's token
    grid with the reference frames beside the video grid (`shifted_reference_positions`),
    built with the model's own `rope_embedder` as its `rope_encode` builds the default one,
    and cached per device, dtype and batch."""

    def __init__(self, layout: TokenLayout, rope_embedder):
        from anycrowd_core.wan import shifted_reference_positions

        self.embedder = rope_embedder
        frames = layout.num_ref_frames + layout.video_frames
        self.positions = shifted_reference_positions(layout.num_ref_frames, frames, *layout.grid)
        self._cache: dict = {}

    def freqs(self, freqs: torch.Tensor) -> torch.Tensor:
        if freqs.shape[1] != len(self.positions):
            raise AnyCrowdError(
                f"Shifted RoPE was set up for {len(self.positions)} tokens (the layout) but the model runs "
                f"{freqs.shape[1]}: build the layout and the latent with the same AnyCrowd IILR Encode node "
                "(ComfyUI's context windows are followed only when a native sampler samples the patched MODEL)."
            )
        key = (freqs.device, freqs.dtype, freqs.shape)
        if key not in self._cache:
            # float32 ids (the table's dtype): exact positions, where bf16 would round rows above 256
            ids = self.positions.to(device=freqs.device, dtype=freqs.dtype)[None]
            table = self.embedder(ids).movedim(1, 2).to(freqs.dtype)
            self._cache = {key: table.expand(freqs.shape[0], *table.shape[1:])}
        return self._cache[key]


def adapter_record(model) -> dict:
    """What AnyCrowd Load Adapter recorded on a MODEL (family, expert, lora, gates, shifted
    RoPE); {} if none."""
    options = getattr(model, "model_options", None) or {}
    return options.get("transformer_options", {}).get(ADAPTER_KEY) or {}


def adapter_shifted_rope(model) -> bool:
    """Whether the adapter loaded into `model` (AnyCrowd Load Adapter) was trained with
    shifted RoPE; False for a stock model."""
    return bool(adapter_record(model).get("shifted_rope", False))


def check_gates(gates: GateBank, dm) -> None:
    """AnyCrowdError unless `gates` is a GateBank that fits the diffusion model `dm`
    (width, layer counts)."""
    if not isinstance(gates, GateBank):
        raise AnyCrowdError(
            f"Expected AnyCrowd AGF gates, got {type(gates).__name__}: connect the gates output "
            "of AnyCrowd Load Adapter, or leave it unconnected."
        )
    want = (dm.dim, len(dm.blocks), len(dm.vace_blocks))
    got = (gates.dim, len(gates.dit), len(gates.vace))
    if got != want:
        raise AnyCrowdError(
            f"The AGF gates were trained for width {got[0]} with {got[1]} DiT and {got[2]} VACE layers, "
            f"but this model has width {want[0]} with {want[1]} DiT and {want[2]} VACE layers: "
            "load gates trained for this model size (1.3B vs 14B), or leave gates unconnected."
        )


def gates_patcher(gates: GateBank, hook: AnyCrowdAttention, load_device, offload_device):
    """A ComfyUI ModelPatcher for the AGF gates, fit for multi-GPU sampling (newer ComfyUI):
    `deepclone_multigpu` rebuilds every additional model of the MODEL from its
    `cached_patcher_init` factory for each extra GPU. Ours deep-copies the gates and
    registers the copy with the run's hook, so layers on that GPU use that GPU's gates."""
    import comfy.model_patcher

    patcher = comfy.model_patcher.ModelPatcher(gates, load_device=load_device, offload_device=offload_device)
    patcher.cached_patcher_init = (gates_patcher_copy, (gates, hook, load_device, offload_device))
    return patcher


def gates_patcher_copy(gates: GateBank, hook: AnyCrowdAttention, load_device, offload_device, disable_dynamic=False):
    """`cached_patcher_init` factory: a fresh patcher holding a copy of `gates` (on the offload
    device; ComfyUI loads it where the clone runs). `disable_dynamic` is accepted as
    ComfyUI's `clone` passes it; the gates patcher is never dynamic."""
    copy_ = copy.deepcopy(gates).to(offload_device)
    hook.add_gate_copy(copy_)
    return gates_patcher(copy_, hook, load_device, offload_device)


def patch_model(
    model,
    layout: TokenLayout,
    mode: str = "masked",
    agf: str = "gated",
    gates: GateBank | None = None,
    branches: Sequence[str] | str = ("dit", "vace"),
    shifted_rope: bool | None = None,
):
    """A clone of the ComfyUI MODEL `model` whose DiT and VACE self-attention layers run
    `mode` ("tsda", "masked" or "global") for `layout`; `model` itself stays untouched.

    agf: "gated" / "mean" / "max" fusion in tsda; gates: trained AGF gates (None = untrained,
    i.e. mean); branches: ("dit", "vace") or a subset (also "both" / "dit" / "vace");
    shifted_rope: reference frames at RealisDance-DiT's shifted RoPE positions (None: as the
    adapter loaded by AnyCrowd Load Adapter was trained, off for a stock model).
    """
    check_wan_vace(model)
    if isinstance(branches, str):
        if branches not in BRANCH_CHOICES:
            raise AnyCrowdError(f"Unknown branches {branches!r}: choose one of {list(BRANCH_CHOICES)}.")
        branches = BRANCH_CHOICES[branches]
    if not isinstance(layout, TokenLayout):
        raise AnyCrowdError(
            f"Expected an AnyCrowd token layout, got {type(layout).__name__}: connect the layout "
            "output of the AnyCrowd IILR Encode node."
        )
    dm = model.model.diffusion_model
    if gates is not None:
        check_gates(gates, dm)
    hook = AnyCrowdAttention(layout, mode=mode, agf=agf, gates=gates, branches=branches)

    patched = model.clone()
    for branch, blocks_name in (("dit", "blocks"), ("vace", "vace_blocks")):
        for i in range(len(getattr(dm, blocks_name))):
            key = f"diffusion_model.{blocks_name}.{i}.self_attn"
            # get_model_object sees earlier object patches: the layer (possibly replaced by
            # another pack) and its forward (possibly patched by another pack) as they are now
            module = patched.get_model_object(key)
            # not `module.forward`: while another clone is loaded that may be its patch
            fallback = patched.object_patches.get(f"{key}.forward", type(module).forward.__get__(module))
            patched.add_object_patch(f"{key}.forward", AnyCrowdSelfAttentionForward(module, fallback, branch, i))
    patched.model_options["transformer_options"][HOOK_KEY] = hook
    if shifted_rope is None:
        shifted_rope = adapter_shifted_rope(model)
    if shifted_rope:
        patched.model_options["transformer_options"][ROPE_KEY] = ShiftedRope(layout, dm.rope_embedder)
    else:
        patched.model_options["transformer_options"].pop(ROPE_KEY, None)
    follow_context_windows(patched, hook, patched.model_options["transformer_options"].get(ROPE_KEY))
    if gates is not None:
        # the patcher only moves the diffusion model; as an additional model the gates are
        # loaded to the sampling device with it (GatingBlock still casts dtype per call)
        patched.set_additional_models(GATES_KEY, [gates_patcher(gates, hook, model.load_device, model.offload_device)])
    else:
        patched.remove_additional_models(GATES_KEY)
    return patched
