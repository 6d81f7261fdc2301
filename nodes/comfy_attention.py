"""ComfyUI's attention as the core's plug points for AnyCrowd's patched Wan self-attention:
`comfy_attend` (the `attend` every attention group runs through) and `comfy_attn1_patch`
(the `after_attention` hook), called the way ComfyUI's own `WanSelfAttention.forward` calls
them. Why and what was checked against which ComfyUI source: docs/comfyui_patch.md.

Pure functions of the objects passed in: the caller hands over ComfyUI's attention module,
so this file imports nothing from ComfyUI and the v0.39 interface can be tested by simulation.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import torch
from torch import Tensor

from anycrowd_core.attention import sdpa

# ComfyUI backends that compute exact softmax attention and were measured slower than torch's
# SDPA on our groups (benchmarks/comfy_patch_overhead.py, docs/benchmarks.md): their groups
# run on torch SDPA. `attention_pytorch` is not among them: on CUDA it runs SDPA under ComfyUI's
# own kernel priority (comfy.ops.scaled_dot_product_attention), on the CPU it is the same kernel.
# Every other backend (pytorch, sage, sage3, flash, xformers, comfy_kitchen_int8, anything
# registered later), a per-layer attention function and an `optimized_attention_override` run
# through ComfyUI's function, so the user's choice holds.
SDPA_INSTEAD_OF = frozenset({"attention_basic", "attention_split", "attention_sub_quad"})

OVERRIDE_KEY = "optimized_attention_override"
_warned: set[str] = set()
_RECOVERABLE = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError)


def warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` comes up in this process."""
    if key not in _warned:
        _warned.add(key)
        logging.warning("AnyCrowd: %s", message)


def layer_attention_function(attention_module, layer) -> Callable:
    """The attention function `layer`'s own forward calls: the `optimized_attention` of the
    module that defines the layer's class (comfy.ldm.wan.model, where packs that swap the
    backend for Wan put theirs), else the attention module's."""
    home = sys.modules.get(type(layer).__module__)
    return getattr(home, "optimized_attention", None) or attention_module.optimized_attention


def comfy_attend(attention_module, layer, transformer_options: dict) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """`attend(q, k, v)` on `[B, L', H, D]` for one patched layer: ComfyUI's attention function
    with WanSelfAttention's arguments (q/k/v `[B, L', H*D]`, `heads`, `transformer_options`,
    its per-layer `preferred_attention` and tensor containers where the host has them), or
    torch's SDPA where ComfyUI's choice is an exact backend measured slower (SDPA_INSTEAD_OF).

    An `optimized_attention_override` that fails on a group (it may expect the whole
    sequence) is skipped for that group, with one warning; the backend still runs.
    """
    override = transformer_options.get(OVERRIDE_KEY)
    preferred = getattr(layer, "comfy_attention", None)  # v0.39: per-layer (e.g. int8) attention
    per_layer = getattr(preferred, "function", None)
    function = layer_attention_function(attention_module, layer)
    if override is None and per_layer is None and getattr(function, "__name__", None) in SDPA_INSTEAD_OF:
        return sdpa
    container = getattr(attention_module, "AttentionTensorContainer", None)
    extra = {} if preferred is None else {"preferred_attention": preferred}

    def call(q: Tensor, k: Tensor, v: Tensor, options: dict) -> Tensor:
        b, s, n, d = q.shape
        args = tuple(t.reshape(b, t.shape[1], n * d) for t in (q, k, v))
        if container is not None:  # single-use wrappers, as WanSelfAttention passes them
            args = tuple(container(t) for t in args)
        o = function(*args, heads=n, transformer_options=options, **extra)
        if not isinstance(o, Tensor) or tuple(o.shape) != (b, s, n * d):
            got = tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__
            raise ValueError(f"attention returned {got} for a group of {s} tokens, expected {(b, s, n * d)}")
        return o.unflatten(-1, (n, d))

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if override is None:
            return call(q, k, v, transformer_options)
        try:
            return call(q, k, v, transformer_options)
        except torch.OutOfMemoryError:
            raise
        except _RECOVERABLE as e:
            name = getattr(override, "__qualname__", type(override).__name__)
            warn_once(
                f"override {name}",
                f"the attention override {name} in this MODEL (optimized_attention_override) cannot run on "
                f"AnyCrowd's identity groups ({e}); those groups use ComfyUI's attention backend without it. "
                "Plain Wan layers and AnyCrowd's global mode still use the override."
            )
            options = {key: value for key, value in transformer_options.items() if key != OVERRIDE_KEY}
            return call(q, k, v, options)

    return attend


def comfy_attn1_patch(transformer_options: dict) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    """`after_attention(o, q, k)` applying `transformer_options["patches"]["attn1_patch"]` as
    WanSelfAttention.forward does (v0.39): each patch gets {"x": attention result `[B, L, C]`,
    "q", "k": `[B, L, H, D]` rotated, "transformer_options"} and returns the new x; then `o`.
    None when no attn1_patch is set."""
    patches = transformer_options.get("patches", {}).get("attn1_patch")
    if not patches:
        return None

    def after_attention(o: Tensor, q: Tensor, k: Tensor) -> Tensor:
        b, s, n, d = o.shape
        x = o.reshape(b, s, n * d)
        for p in patches:
            x = p({"x": x, "q": q, "k": k, "transformer_options": transformer_options})
        return x.unflatten(-1, (n, d))

    return after_attention
