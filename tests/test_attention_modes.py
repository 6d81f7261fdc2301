"""Attention modes: the efficient gathered implementations equal the dense-mask reference
(docs/tsda.md), masked equals global where the binding allows everything, the hook's
dispatch and errors, and no `L x L` tensor is ever built."""

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from anycrowd_core.attention import AnyCrowdAttention, GateBank
from anycrowd_core.attention.dense_reference import dense_forward
from anycrowd_core.bench.attention import ToySelfAttention
from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from random_adapters import random_gates

DIM, HEADS = 16, 2


def random_scene(seed, n, tracks=None, h=4, w=5, frames=9, background=True):
    """Random reference masks and track masks/boxes: overlapping boxes, characters entering
    and leaving (empty frames, boxes partly outside), random one-to-many bindings and
    identities without a track."""
    g = torch.Generator().manual_seed(seed)
    H, W = 16 * h, 16 * w
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")

    def rect(x0, y0, x1, y1):
        return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)

    def rnd(lo, hi):
        return int(torch.randint(lo, hi, (), generator=g))

    def ref_mask():
        x0, y0 = rnd(0, W - 8), rnd(0, H - 8)
        return rect(x0, y0, x0 + rnd(8, W), y0 + rnd(8, H))

    ref = torch.stack([ref_mask() for _ in range(n)])
    m = tracks if tracks is not None else rnd(1, n + 2)
    masks = torch.zeros(m, frames, H, W, dtype=torch.bool)
    for i in range(m):
        x0, y0, bw, bh = rnd(-16, W - 8), rnd(-8, H - 8), rnd(8, W // 2 + 8), rnd(8, H)
        enter, leave = rnd(0, frames // 2), rnd(frames // 2, frames + 1)
        for f in range(enter, leave):
            dx = 3 * f
            masks[i, f] = rect(x0 + dx, y0, x0 + dx + bw, y0 + bh)
    boxes = boxes_from_masks(masks)
    binding = [rnd(0, max(1, n - 1)) for _ in range(m)]  # the last identity never has a track
    return build_token_layout(ref, boxes, binding, background=background, track_masks=masks)


def nontrivial_gates(seed, layers=3):
    return random_gates(DIM, layers, layers, hidden=8, std=0.7, seed=seed)


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return ToySelfAttention(DIM, HEADS, lora_rank=2)


CASES = [(seed, n) for seed, n in zip(range(6), [2, 3, 4, 5, 7, 9])]


@pytest.mark.parametrize("seed,n", CASES)
@pytest.mark.parametrize("branch", ["dit", "vace"])
def test_masked_equals_dense_reference(layer, seed, n, branch):
    layout = random_scene(seed, n, background=seed % 2 == 0)
    x = torch.randn(2, layout.num_tokens, DIM)
    ops = layer.ops(branch, 1)
    got = AnyCrowdAttention(layout, mode="masked")(x, ops)
    want, _ = dense_forward(x, ops, layout, "masked")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed,n", CASES)
@pytest.mark.parametrize("agf", ["gated", "mean", "max"])
@pytest.mark.parametrize("branch", ["dit", "vace"])
def test_tsda_equals_dense_reference(layer, seed, n, agf, branch):
    layout = random_scene(seed, n, background=seed % 3 != 1)
    assert (layout.candidate_count >= 2).any()
    gates = nontrivial_gates(seed)
    x = torch.randn(2, layout.num_tokens, DIM)
    ops = layer.ops(branch, 2)
    got = AnyCrowdAttention(layout, mode="tsda", agf=agf, gates=gates)(x, ops)
    want, _ = dense_forward(x, ops, layout, "tsda", agf, gates.gate(branch, 2))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gated_tsda_depends_on_the_gate(layer):
    layout = random_scene(1, 3)
    x = torch.randn(1, layout.num_tokens, DIM)
    a = AnyCrowdAttention(layout, agf="gated", gates=nontrivial_gates(1))(x, layer.ops())
    b = AnyCrowdAttention(layout, agf="mean")(x, layer.ops())
    assert not torch.allclose(a, b, atol=1e-4)


def test_masked_equals_global_for_one_identity_covering_everything(layer):
    masks = torch.ones(1, 48, 64, dtype=torch.bool)
    boxes = torch.tensor([0.0, 0, 64, 48]).expand(1, 9, 4).clone()
    layout = build_token_layout(masks, boxes, [0], background=False)
    x = torch.randn(2, layout.num_tokens, DIM)
    masked = AnyCrowdAttention(layout, mode="masked")(x, layer.ops())
    full = AnyCrowdAttention(layout, mode="global")(x, layer.ops())
    torch.testing.assert_close(masked, full, atol=1e-5, rtol=1e-5)


def test_masked_differs_from_global_when_identities_are_separated(layer):
    layout = random_scene(2, 3)
    x = torch.randn(1, layout.num_tokens, DIM)
    masked = AnyCrowdAttention(layout, mode="masked")(x, layer.ops())
    full = AnyCrowdAttention(layout, mode="global")(x, layer.ops())
    assert not torch.allclose(masked, full, atol=1e-3)


def test_global_mode_equals_dense_full_attention(layer):
    layout = random_scene(3, 2)
    x = torch.randn(1, layout.num_tokens, DIM)
    got = AnyCrowdAttention(layout, mode="global")(x, layer.ops())
    want, _ = dense_forward(x, layer.ops(), layout, "global")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_layers_outside_the_chosen_branches_use_global_attention(layer):
    layout = random_scene(4, 3)
    x = torch.randn(1, layout.num_tokens, DIM)
    hook = AnyCrowdAttention(layout, mode="tsda", agf="mean", branches=("dit",))
    full = AnyCrowdAttention(layout, mode="global")
    torch.testing.assert_close(hook(x, layer.ops("vace", 0)), full(x, layer.ops("vace", 0)))
    assert not torch.allclose(hook(x, layer.ops("dit", 0)), full(x, layer.ops("dit", 0)), atol=1e-3)


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_batch_elements_are_processed_independently(layer, mode):
    layout = random_scene(5, 4)
    x = torch.randn(3, layout.num_tokens, DIM)
    hook = AnyCrowdAttention(layout, mode=mode, agf="gated", gates=nontrivial_gates(5))
    whole = hook(x, layer.ops("dit", 0))
    for i in range(3):
        torch.testing.assert_close(whole[i:i + 1], hook(x[i:i + 1], layer.ops("dit", 0)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_gradients_reach_lora_and_gate_parameters(mode):
    torch.manual_seed(0)
    layer = ToySelfAttention(DIM, HEADS, lora_rank=2)
    for name in "qkvo":  # a LoRA after some training: both factors non-zero
        torch.nn.init.normal_(layer.lora[name][1].weight, std=0.1)
    gates = nontrivial_gates(0)
    layout = random_scene(0, 3)
    x = torch.randn(1, layout.num_tokens, DIM)
    AnyCrowdAttention(layout, mode=mode, agf="gated", gates=gates)(x, layer.ops("vace", 1)).square().sum().backward()
    for name in "qkvo":
        for p in layer.lora[name].parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    gate_grads = [p.grad for p in gates.vace[1].parameters()]
    if mode == "tsda":
        assert all(gr is not None and gr.abs().sum() > 0 for gr in gate_grads)
    else:
        assert all(gr is None for gr in gate_grads)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_no_sequence_by_sequence_tensor_is_built(mode):
    torch.manual_seed(0)
    layer = ToySelfAttention(8, 1)
    layout = random_scene(1, 4, h=8, w=10, frames=17)
    total = layout.num_tokens
    assert total > 80 * 8  # an L x L tensor would dwarf every legitimate one (<= L x C x C_max)
    x = torch.randn(1, total, 8)
    hook = AnyCrowdAttention(layout, mode=mode, agf="gated", gates=GateBank(8, 1, 1, hidden=4))
    with torch.no_grad(), LargestTensor() as probe:
        hook(x, layer.ops())
    assert probe.largest < total * total // 4


def test_token_count_mismatch_names_the_layout_and_the_fix(layer):
    layout = random_scene(0, 2)
    x = torch.randn(1, layout.num_tokens - 20, DIM)
    with pytest.raises(AnyCrowdError, match=r"= %d tokens, but the dit branch got %d tokens: rebuild the layout"
                       % (layout.num_tokens, layout.num_tokens - 20)):
        AnyCrowdAttention(layout, mode="masked")(x, layer.ops())


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "sparse"}, "Unknown attention mode"),
    ({"agf": "median"}, "Unknown AGF mode"),
    ({"branches": ("dit", "text")}, "Unknown branches"),
])
def test_bad_hook_settings_are_rejected(kwargs, match):
    with pytest.raises(AnyCrowdError, match=match):
        AnyCrowdAttention(random_scene(0, 2), **kwargs)


# --- host plug points: `attend` (a host's attention function) and `after_attention` ---------

def recording_attend(calls):
    from anycrowd_core.attention import sdpa

    def attend(q, k, v):
        calls.append((q.shape[1], k.shape[1]))
        return sdpa(q, k, v)

    return attend


@pytest.mark.parametrize("mode", ["global", "masked", "tsda"])
def test_every_attention_group_runs_through_the_injected_attend(layer, mode):
    layout = random_scene(6, 3)
    x = torch.randn(2, layout.num_tokens, DIM)
    hook = AnyCrowdAttention(layout, mode=mode, agf="gated", gates=nontrivial_gates(6))
    calls = []
    ops = dataclasses.replace(layer.ops("dit", 1), attend=recording_attend(calls))
    assert torch.equal(hook(x, ops), hook(x, layer.ops("dit", 1)))  # default attend is sdpa
    if mode == "global":
        assert calls == [(layout.num_tokens, layout.num_tokens)]
    elif mode == "masked":  # one call per query group; the groups partition the sequence
        plan = hook._plan("masked", x.device)
        assert len(calls) == len(plan.segments) and sum(q for q, _ in calls) == layout.num_tokens
    else:  # stages 1/2 per segment, then stage 3 over the video tokens
        plan = hook._plan("tsda", x.device)
        assert len(calls) == len(plan.segments) + 1
        assert calls[-1] == (layout.num_video_tokens, layout.num_video_tokens)


@pytest.mark.parametrize("mode", ["global", "masked", "tsda"])
def test_after_attention_gets_the_whole_sequence_before_o(layer, mode):
    layout = random_scene(7, 3)
    x = torch.randn(2, layout.num_tokens, DIM)
    hook = AnyCrowdAttention(layout, mode=mode, agf="mean")
    seen = []

    def zero(o, q, k):
        seen.append((o.shape, q, k))
        return torch.zeros_like(o)

    out = hook(x, dataclasses.replace(layer.ops("vace", 0), after_attention=zero))
    (shape, q, k), = seen
    q0, k0, _ = layer.ops("vace", 0).qkv(x)
    assert shape == (2, layout.num_tokens, HEADS, DIM // HEADS)
    assert torch.equal(q, q0) and torch.equal(k, k0)  # the q, k of the layer's input
    assert torch.equal(out, layer.out(torch.zeros(2, layout.num_tokens, HEADS, DIM // HEADS)))


@pytest.mark.parametrize("mode", ["global", "masked", "tsda"])
def test_identity_after_attention_keeps_the_output(layer, mode):
    layout = random_scene(8, 4)
    x = torch.randn(1, layout.num_tokens, DIM)
    hook = AnyCrowdAttention(layout, mode=mode, agf="gated", gates=nontrivial_gates(8))
    plain = hook(x, layer.ops("dit", 0))
    same = hook(x, dataclasses.replace(layer.ops("dit", 0), after_attention=lambda o, q, k: o))
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-6)


def test_gate_copy_on_the_activations_device_is_used(layer):
    """Multi-GPU: the layers use the copy of the gates on their own device, not the original."""
    layout = random_scene(9, 3)
    x = torch.randn(1, layout.num_tokens, DIM)
    copy_ = nontrivial_gates(9)
    original = nontrivial_gates(10).to("meta")  # casting meta weights to the CPU would fail
    hook = AnyCrowdAttention(layout, mode="tsda", agf="gated", gates=original)
    hook.add_gate_copy(copy_)
    want = AnyCrowdAttention(layout, mode="tsda", agf="gated", gates=copy_)(x, layer.ops("dit", 1))
    assert torch.equal(hook(x, layer.ops("dit", 1)), want)
    window_hook = AnyCrowdAttention(layout, mode="tsda", agf="gated", gates=original)  # same gates
    assert window_hook.gate_copies() == [copy_]
    assert torch.equal(window_hook(x, layer.ops("dit", 1)), want)
    del copy_, want
    import gc

    gc.collect()
    assert hook.gate_copies() == []  # held weakly: the host owns the copy
