"""nodes/comfy_attention.py against the attention interface of today's ComfyUI (v0.39,
comfy/ldm/modules/attention.py and comfy/ldm/wan/model.py), simulated here because the host
we can run (0.3.64) predates parts of it. The simulation restates the interface as that
source defines it, in our own words:
- q/k/v arrive as single-use `AttentionTensorContainer`s (`peek()`, `take()`), `[B, L, H*D]`,
  with `heads`, `transformer_options` and `preferred_attention` (the layer's `ComfyAttention`)
  as keyword arguments; the result is `[B, L, H*D]`;
- dispatch order: `transformer_options["optimized_attention_override"]` first (its
  `container_function` if it has one, else it gets `(backend, q, k, v, ...)` as tensors),
  then the layer's `preferred_attention.function` when set, else the backend;
- `attn1_patch` entries are called with {"x", "q", "k", "transformer_options"} after
  attention and before `o`, and return the new x.
"""

import dataclasses
import importlib
import logging
import sys
import types

import pytest
import torch

from anycrowd_core.attention import AnyCrowdAttention, sdpa
from anycrowd_core.bench.attention import ToySelfAttention
from pack import load_pack
from test_attention_modes import DIM, HEADS, random_scene

# through the package name ComfyUI would give us: a top-level `nodes` import would shadow ComfyUI's
# own `nodes` module for every later test in the process
ca = importlib.import_module(f"{load_pack().__name__}.nodes.comfy_attention")


class AttentionTensorContainer:
    """v0.39: single-owner q/k/v wrapper; a backend consumes it with take()."""

    def __init__(self, tensor):
        self.tensor = tensor

    def peek(self):
        if self.tensor is None:
            raise RuntimeError("attention tensor container has already been consumed")
        return self.tensor

    def take(self):
        t = self.peek()
        self.tensor = None
        return t


def full_attention(q, k, v, heads, **kwargs):
    """A backend on `[B, L, H*D]` tensors (the math of every exact ComfyUI backend)."""
    b, s, c = q.shape
    split = [t.unflatten(-1, (heads, c // heads)) for t in (q, k, v)]
    return sdpa(*split).flatten(2)


class SimulatedAttentionModule:
    """`comfy.ldm.modules.attention` as v0.39 behaves for WanSelfAttention's call."""

    AttentionTensorContainer = AttentionTensorContainer

    def __init__(self, backend_name="attention_sage"):
        self.calls = []
        log = self.calls

        def backend(q, k, v, heads, **kwargs):
            log.append(("backend", q.shape[1]))
            return full_attention(q, k, v, heads)

        backend.__name__ = backend_name

        def optimized_attention(q, k, v, heads, transformer_options=None, preferred_attention=None, **kwargs):
            assert all(isinstance(t, AttentionTensorContainer) for t in (q, k, v)), "containers, as Wan passes them"
            kwargs = dict(kwargs, transformer_options=transformer_options)
            override = (transformer_options or {}).get("optimized_attention_override")
            if override is not None:
                if hasattr(override, "container_function"):
                    return override.container_function(q, k, v, heads, **kwargs)
                return override(backend, q.take(), k.take(), v.take(), heads, **kwargs)
            if preferred_attention is not None and preferred_attention.function is not None:
                return preferred_attention.function(q.take(), k.take(), v.take(), heads, **kwargs)
            return backend(q.take(), k.take(), v.take(), heads, **kwargs)

        optimized_attention.__name__ = backend_name
        self.optimized_attention = optimized_attention


class ComfyAttention:
    """v0.39: the per-layer attention slot (`function` None unless a quantised checkpoint sets it)."""

    def __init__(self, function=None):
        self.function = function


def wan_layer(comfy_attention=None):
    """A stand-in for v0.39's WanSelfAttention: only what comfy_attend reads (class module, comfy_attention)."""
    layer = types.SimpleNamespace()
    if comfy_attention is not None:
        layer.comfy_attention = comfy_attention
    return layer


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return ToySelfAttention(DIM, HEADS)


def run(toy, mode, attend=None, after=None, layout=None):
    layout = layout or random_scene(11, 3)
    torch.manual_seed(1)
    x = torch.randn(2, layout.num_tokens, DIM)
    ops = toy.ops("dit", 0)
    if attend is not None or after is not None:
        ops = dataclasses.replace(ops, **({"attend": attend} if attend else {}), after_attention=after)
    return AnyCrowdAttention(layout, mode=mode, agf="mean")(x, ops)


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_a_non_exact_backend_gets_every_group_as_wan_self_attention_calls_it(toy, mode):
    sim = SimulatedAttentionModule("attention_sage")
    attend = ca.comfy_attend(sim, wan_layer(ComfyAttention()), {})
    assert attend is not sdpa
    got = run(toy, mode, attend=attend)
    torch.testing.assert_close(got, run(toy, mode), atol=1e-5, rtol=1e-5)
    assert sim.calls and all(kind == "backend" for kind, _ in sim.calls)


@pytest.mark.parametrize("name", sorted(ca.SDPA_INSTEAD_OF))
def test_exact_backends_keep_torch_sdpa(name):
    assert ca.comfy_attend(SimulatedAttentionModule(name), wan_layer(ComfyAttention()), {}) is sdpa


def test_the_pytorch_backend_runs_through_comfyuis_function(toy):
    """On CUDA ComfyUI runs SDPA under its own kernel priority; on the CPU it is the same kernel."""
    sim = SimulatedAttentionModule("attention_pytorch")
    attend = ca.comfy_attend(sim, wan_layer(), {})
    assert attend is not sdpa
    torch.testing.assert_close(run(toy, "masked", attend=attend), run(toy, "masked"), atol=1e-6, rtol=1e-6)
    assert sim.calls


def test_a_per_layer_attention_function_is_honoured_even_on_an_exact_backend(toy):
    sim, used = SimulatedAttentionModule("attention_sub_quad"), []

    def int8_like(q, k, v, heads, **kwargs):
        used.append(q.shape[1])
        return full_attention(q, k, v, heads)

    attend = ca.comfy_attend(sim, wan_layer(ComfyAttention(int8_like)), {})
    torch.testing.assert_close(run(toy, "masked", attend=attend), run(toy, "masked"), atol=1e-5, rtol=1e-5)
    assert used and not sim.calls


def test_an_override_with_a_container_function_gets_the_containers(toy):
    sim, seen = SimulatedAttentionModule("attention_pytorch"), []

    def override(func, *args, **kwargs):
        raise AssertionError("the container function should be called")

    def containers(q, k, v, heads, **kwargs):
        seen.append(type(q).__name__)
        return full_attention(q.take(), k.take(), v.take(), heads)

    override.container_function = containers
    attend = ca.comfy_attend(sim, wan_layer(), {"optimized_attention_override": override})
    torch.testing.assert_close(run(toy, "tsda", attend=attend), run(toy, "tsda"), atol=1e-5, rtol=1e-5)
    assert seen and set(seen) == {"AttentionTensorContainer"}


def test_an_override_that_fails_on_groups_is_skipped_with_one_warning(toy, caplog):
    sim = SimulatedAttentionModule("attention_sage")
    layout = random_scene(12, 3)

    def radial_like(func, q, k, v, heads, **kwargs):
        if q.shape[1] != layout.num_tokens:
            raise ValueError("sequence length does not match the latent grid")
        return func(q, k, v, heads, **kwargs)

    options = {"optimized_attention_override": radial_like, "other": 1}
    attend = ca.comfy_attend(sim, wan_layer(), options)
    with caplog.at_level(logging.WARNING):
        got = run(toy, "masked", attend=attend, layout=layout)
        run(toy, "masked", attend=attend, layout=layout)
    torch.testing.assert_close(got, run(toy, "masked", layout=layout), atol=1e-5, rtol=1e-5)
    warned = [r.getMessage() for r in caplog.records if "radial_like" in r.getMessage()]
    assert len(warned) == 1 and "ComfyUI's attention backend without it" in warned[0]
    assert "optimized_attention_override" in options  # the run's options are left as they were


def test_the_layer_modules_attention_function_wins_over_the_attention_modules(toy, monkeypatch):
    """Packs that swap Wan's backend replace `optimized_attention` in comfy.ldm.wan.model."""
    home, used = types.ModuleType("simulated_wan_model"), []

    def swapped(q, k, v, heads, **kwargs):
        used.append(q.peek().shape[1])
        return full_attention(q.take(), k.take(), v.take(), heads)

    home.optimized_attention = swapped
    monkeypatch.setitem(sys.modules, "simulated_wan_model", home)
    layer_class = type("WanSelfAttention", (), {"__module__": "simulated_wan_model"})
    sim = SimulatedAttentionModule("attention_pytorch")
    assert ca.layer_attention_function(sim, layer_class()) is swapped
    attend = ca.comfy_attend(sim, layer_class(), {})
    run(toy, "masked", attend=attend)
    assert used and not sim.calls


def test_no_attn1_patch_gives_no_after_attention():
    assert ca.comfy_attn1_patch({}) is None and ca.comfy_attn1_patch({"patches": {"attn1_patch": []}}) is None


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_attn1_patches_run_in_order_with_wan_self_attentions_arguments(toy, mode):
    layout, seen = random_scene(13, 3), []
    options = {"patches": {"attn1_patch": []}}

    def first(args):
        seen.append(("first", sorted(args), args["x"].shape, args["q"].shape, args["transformer_options"] is options))
        return args["x"] * 2

    def second(args):
        seen.append(("second",))
        return args["x"] - 1

    options["patches"]["attn1_patch"] += [first, second]
    got = run(toy, mode, after=ca.comfy_attn1_patch(options), layout=layout)
    n, c = layout.num_tokens, DIM
    assert seen == [("first", ["k", "q", "transformer_options", "x"], (2, n, c), (2, n, HEADS, c // HEADS), True),
                    ("second",)]
    by_hand = run(toy, mode, after=lambda o, q, k: o * 2 - 1, layout=layout)
    torch.testing.assert_close(got, by_hand, atol=1e-6, rtol=1e-6)
