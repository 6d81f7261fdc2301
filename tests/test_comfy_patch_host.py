"""The TSDA patch on ComfyUI's own Wan 2.1 VACE MODEL (real host, COMFYUI_PATH set):
global mode is bit-exact, masked/tsda run in both branches, CFG batching and several VACE
contexts reach the hook, LoRA composes in either order, other clones stay untouched."""

import importlib
from collections import Counter

import pytest
import torch

from anycrowd_core.attention import AnyCrowdAttention, GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from comfy_host import load_pack_with_comfy, requires_comfyui, tiny_vace_patcher, tiny_vace_state_dict
from random_adapters import random_gates

pytestmark = requires_comfyui
H = W = 64  # pixels: 4x4 tokens per latent frame
PIXEL_FRAMES = 5  # 2 latent video frames


def make_layout(height=H, width=W, frames=PIXEL_FRAMES):
    """Two identities (left/right halves) whose boxes overlap in the middle, plus background."""
    ref = torch.zeros(2, height, width, dtype=torch.bool)
    ref[0, :, : width // 2] = True
    ref[1, :, width // 2 :] = True
    boxes = torch.tensor([[[0, 0, 40, height]] * frames, [[24, 0, width, height]] * frames], dtype=torch.float32)
    return build_token_layout(ref, boxes, [0, 1])


@pytest.fixture(scope="module")
def cp(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.comfy_patch")


@pytest.fixture(scope="module")
def layout():
    return make_layout()


class Inputs:
    """A latent for `layout` and the conditioning WanVaceToVideo would build (contexts VACE streams)."""

    def __init__(self, layout, contexts=1, seed=0):
        g = torch.Generator().manual_seed(seed)
        frames = layout.num_ref_frames + layout.video_frames
        shape = (1, 16, frames, 2 * layout.grid[0], 2 * layout.grid[1])
        self.latent = torch.randn(shape, generator=g)
        self.noise = torch.randn(shape, generator=g)
        vace = {
            "vace_frames": [torch.randn(1, 32, *shape[2:], generator=g) for _ in range(contexts)],
            "vace_mask": [torch.rand(1, 64, *shape[2:], generator=g) for _ in range(contexts)],
            "vace_strength": [1.0, 0.6][:contexts],
        }
        self.vace = vace
        self.positive = [[torch.randn(1, 7, 4096, generator=g), dict(vace)]]
        # same text length as positive (T5 pads to 512 in real use), so CFG batches them
        self.negative = [[torch.randn(1, 7, 4096, generator=g), dict(vace)]]


def apply_model(comfy, patcher, inp: Inputs, sigma=0.7):
    """One denoiser call of the loaded MODEL (object patches applied as in sampling), with the
    extra conds (vace_context, vace_strength) built by the model's own extra_conds."""
    comfy.model_management.load_models_gpu([patcher])
    return run_loaded(patcher, inp, sigma)


def run_loaded(patcher, inp: Inputs, sigma=0.7):
    model = patcher.model
    conds = model.extra_conds(noise=inp.latent, cross_attn=inp.positive[0][0], device=inp.latent.device, **inp.vace)
    kwargs = {k: v.cond for k, v in conds.items()}
    options = patcher.model_options["transformer_options"].copy()
    with torch.no_grad():
        return model.apply_model(inp.latent, torch.tensor([sigma]), transformer_options=options, **kwargs)


def sample_step(comfy, patcher, inp: Inputs, cfg=3.0):
    """One KSampler step (euler, CFG: cond and uncond batched together)."""
    return comfy.sample.sample(
        patcher, inp.noise, 1, cfg, "euler", "simple", inp.positive, inp.negative, inp.latent,
        disable_pbar=True, seed=0,
    )


class SpyAttention(AnyCrowdAttention):
    """Records (branch, index, x shape) of every call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, x, ops):
        self.calls.append((ops.branch, ops.index, tuple(x.shape)))
        return super().__call__(x, ops)


def lora_state_dict(seed=1, rank=4, dim=256):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for target in ("blocks.0.self_attn.q", "vace_blocks.1.self_attn.v"):
        sd[f"diffusion_model.{target}.lora_A.weight"] = 0.3 * torch.randn(rank, dim, generator=g)
        sd[f"diffusion_model.{target}.lora_B.weight"] = 0.3 * torch.randn(dim, rank, generator=g)
        sd[f"diffusion_model.{target}.alpha"] = torch.tensor(float(rank))
    return sd


def with_lora(comfy, patcher, sd):
    model, _ = comfy.sd.load_lora_for_models(patcher, None, sd, 1.0, 0.0)
    return model


def gates_for(model, seed=0, hidden=16):
    dm = model.model.diffusion_model
    return random_gates(dm.dim, len(dm.blocks), len(dm.vace_blocks), hidden=hidden, seed=seed)


def test_comfy_loader_gives_a_vace_model_that_passes_the_check(cp, model):
    assert type(model.model.diffusion_model).__name__ == "VaceWanModel"
    cp.check_wan_vace(model)


def test_plain_wan_t2v_model_is_refused_in_plain_words(comfy, cp):
    sd = {k: v for k, v in tiny_vace_state_dict(seed=0).items() if ".vace_" not in k}
    t2v = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})
    assert type(t2v.model).__name__ == "WAN21"
    with pytest.raises(AnyCrowdError, match="needs a Wan 2.1 VACE model, but got a plain Wan 2.1 model"):
        cp.patch_model(t2v, make_layout())


@pytest.mark.parametrize("contexts", [1, 2])
def test_global_mode_is_bit_exact_through_apply_model(comfy, cp, model, layout, contexts):
    inp = Inputs(layout, contexts=contexts)
    expected = apply_model(comfy, model, inp)
    patched = cp.patch_model(model, layout, mode="global")
    assert torch.equal(apply_model(comfy, patched, inp), expected)


def test_global_mode_is_bit_exact_through_a_sampling_step(comfy, cp, model, layout):
    inp = Inputs(layout)
    expected = sample_step(comfy, model, inp)
    assert torch.equal(sample_step(comfy, cp.patch_model(model, layout, mode="global"), inp), expected)


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_binding_modes_run_in_both_branches_and_change_the_output(comfy, cp, model, layout, mode):
    inp = Inputs(layout)
    plain = sample_step(comfy, model, inp)
    patched = cp.patch_model(model, layout, mode=mode)
    spy = SpyAttention(layout, mode=mode)
    patched.model_options["transformer_options"]["anycrowd"] = spy
    out = sample_step(comfy, patched, inp)
    assert torch.isfinite(out).all()
    assert (out - plain).abs().max() > 1e-3
    assert {(b, i) for b, i, _ in spy.calls} == {("dit", i) for i in range(4)} | {("vace", j) for j in range(2)}


def test_each_branch_alone_differs_from_both(comfy, cp, model, layout):
    inp = Inputs(layout)
    outs = {b: apply_model(comfy, cp.patch_model(model, layout, mode="masked", branches=b), inp)
            for b in ("both", "dit", "vace")}
    assert not torch.equal(outs["dit"], outs["both"]) and not torch.equal(outs["vace"], outs["both"])
    assert not torch.equal(outs["dit"], outs["vace"])


def test_hook_sees_cond_and_uncond_batched_and_every_vace_context(comfy, cp, model, layout):
    inp = Inputs(layout, contexts=2)
    patched = cp.patch_model(model, layout, mode="masked")
    spy = SpyAttention(layout, mode="masked")
    patched.model_options["transformer_options"]["anycrowd"] = spy
    sample_step(comfy, patched, inp)
    shape = (2, layout.num_tokens, 256)  # CFG: [cond, uncond] in one batch
    dit = [c for c in spy.calls if c[0] == "dit"]
    vace = [c for c in spy.calls if c[0] == "vace"]
    assert [c[1] for c in dit] == [0, 1, 2, 3]
    assert [c[1] for c in vace] == [0, 0, 1, 1]  # each VACE block runs once per context
    assert all(c[2] == shape for c in spy.calls)


def test_lora_takes_effect_on_a_patched_model_in_either_order(comfy, cp, model, layout):
    inp = Inputs(layout)
    lora = lora_state_dict()
    patched = cp.patch_model(model, layout, mode="masked")
    patch_then_lora = with_lora(comfy, patched, lora)
    lora_then_patch = cp.patch_model(with_lora(comfy, model, lora), layout, mode="masked")
    targets = {"diffusion_model.blocks.0.self_attn.q.weight", "diffusion_model.vace_blocks.1.self_attn.v.weight"}
    assert set(patch_then_lora.patches) == set(lora_then_patch.patches) == targets  # none silently dropped
    without = apply_model(comfy, patched, inp)
    a = apply_model(comfy, patch_then_lora, inp)
    b = apply_model(comfy, lora_then_patch, inp)
    assert (a - without).abs().max() > 1e-3
    assert torch.equal(a, b)


def test_lora_on_a_global_patch_equals_lora_alone(comfy, cp, model, layout):
    inp = Inputs(layout)
    lora = lora_state_dict()
    expected = apply_model(comfy, with_lora(comfy, model, lora), inp)
    got = apply_model(comfy, with_lora(comfy, cp.patch_model(model, layout, mode="global"), lora), inp)
    assert torch.equal(got, expected)


def test_low_vram_partial_load_keeps_lora_and_patch(comfy, cp, layout):
    # lowvram_model_memory=1: every layer casts its weights per call and applies the LoRA as a
    # weight function, reaching the original q/v modules through our wrapper
    inp = Inputs(layout)
    patcher = with_lora(comfy, cp.patch_model(tiny_vace_patcher(seed=2), layout, mode="tsda"), lora_state_dict())
    full = apply_model(comfy, patcher, inp)
    comfy.model_management.unload_all_models()
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
    try:
        assert patcher.model.model_lowvram and patcher.model.lowvram_patch_counter == 2
        partial = run_loaded(patcher, inp)
    finally:
        patcher.unpatch_model()
    assert torch.equal(partial, full)


def test_patching_a_clone_leaves_the_original_untouched(comfy, cp, model, layout):
    inp = Inputs(layout)
    before = sample_step(comfy, model, inp)
    patched = cp.patch_model(model, layout, mode="tsda")
    patched_out = sample_step(comfy, patched, inp)
    after = sample_step(comfy, model, inp)
    assert torch.equal(after, before) and not torch.equal(patched_out, before)
    assert model.object_patches == {} and "anycrowd" not in model.model_options["transformer_options"]
    assert type(model.model.diffusion_model.blocks[0].self_attn).__name__ == "WanSelfAttention"
    assert all(k.endswith(".self_attn.forward") for k in patched.object_patches)


def test_repatching_replaces_the_mode(comfy, cp, model, layout):
    inp = Inputs(layout)
    twice = cp.patch_model(cp.patch_model(model, layout, mode="tsda"), layout, mode="global")
    assert torch.equal(apply_model(comfy, twice, inp), apply_model(comfy, model, inp))
    patch = twice.object_patches["diffusion_model.blocks.0.self_attn.forward"]
    assert patch.fallback.__func__ is type(patch.module).forward  # the original, one AnyCrowd level


def test_another_packs_forward_patch_composes_and_nothing_outlives_the_run(comfy, cp, model, layout):
    """Packs such as KJNodes object-patch `...self_attn.forward` (a method bound to the
    original layer): before ours it becomes our fallback, after ours it wins; unloading
    leaves the base model's layers running their own forward."""
    inp = Inputs(layout)
    plain = apply_model(comfy, model, inp)
    key = "diffusion_model.blocks.0.self_attn"
    calls = []
    layer = model.get_model_object(key)

    def other_forward(x, freqs, transformer_options={}, **kw):
        calls.append(1)
        return type(layer).forward(layer, x, freqs, transformer_options=transformer_options, **kw)

    first = model.clone()
    first.add_object_patch(f"{key}.forward", other_forward)
    ours = cp.patch_model(first, layout, mode="global")
    assert torch.equal(apply_model(comfy, ours, inp), plain) and calls
    calls.clear()
    after = cp.patch_model(model, layout, mode="masked").clone()
    after.add_object_patch(f"{key}.forward", other_forward)
    apply_model(comfy, after, inp)
    assert calls  # the later patch of the same key wins, deterministically
    comfy.model_management.unload_all_models()
    calls.clear()
    assert torch.equal(apply_model(comfy, model, inp), plain) and not calls
    assert "forward" not in vars(layer) or vars(layer)["forward"].__func__ is type(layer).forward


def test_layout_for_another_resolution_gives_a_readable_error_from_sampling(comfy, cp, model):
    inp = Inputs(make_layout())
    patched = cp.patch_model(model, make_layout(height=96), mode="masked")
    msg = r"built for 64x96, 5 frames .* = 120 tokens, but the dit branch got 80 tokens: rebuild the layout"
    with pytest.raises(AnyCrowdError, match=msg):
        sample_step(comfy, patched, inp)


def test_trained_gates_change_tsda_and_load_with_the_model(comfy, cp, model, layout):
    inp = Inputs(layout)
    gates = gates_for(model)
    gated = cp.patch_model(model, layout, mode="tsda", agf="gated", gates=gates)
    assert [m.model for m in gated.get_additional_models()] == [gates]
    mean = apply_model(comfy, cp.patch_model(model, layout, mode="tsda", agf="mean"), inp)
    untrained = apply_model(comfy, cp.patch_model(model, layout, mode="tsda", agf="gated"), inp)
    assert torch.equal(untrained, mean)  # no gates: the gated mode equals mean fusion
    assert (apply_model(comfy, gated, inp) - mean).abs().max() > 1e-4


def test_gates_for_another_model_size_are_refused(cp, model, layout):
    wrong = GateBank(256, 30, 15, hidden=8)
    with pytest.raises(AnyCrowdError, match="1.3B vs 14B"):
        cp.patch_model(model, layout, mode="tsda", gates=wrong)


def test_node_returns_a_patched_clone(comfy, model, layout):
    pack = load_pack_with_comfy()
    node_mod = importlib.import_module(f"{pack.__name__}.nodes.node_tsda_patch")
    (patched,) = node_mod.AnyCrowdTSDAPatch().patch(model, layout, "tsda", "max", "vace")
    hook = patched.model_options["transformer_options"]["anycrowd"]
    assert (hook.mode, hook.agf, hook.branches, hook.layout) == ("tsda", "max", ("vace",), layout)
    assert patched is not model and len(patched.object_patches) == 6


@pytest.mark.parametrize("mode", ["global", "masked", "tsda"])
def test_shifted_rope_patch_equals_the_core_model_at_the_shifted_positions(comfy, cp, model, layout, mode):
    """patch_model(shifted_rope=True) gives ComfyUI's Wan the reference positions the trainer
    used (beside the video grid), in every mode: its output equals the core model's."""
    from comfy_host import tiny_vace_config
    from tiny_wan import tiny_inputs

    from anycrowd_core.wan import load_wan_vace, shifted_reference_positions

    cfg = tiny_vace_config()
    core = load_wan_vace(tiny_vace_state_dict(seed=0), dtype=torch.float32, num_heads=cfg.num_heads)
    frames = layout.num_ref_frames + layout.video_frames
    h, w = layout.grid
    inputs = tiny_inputs(cfg, frames=frames, height=2 * h, width=2 * w, seed=3)
    patched = cp.patch_model(model, layout, mode=mode, shifted_rope=True)
    comfy.model_management.load_models_gpu([patched])
    dm = patched.model.diffusion_model
    options = patched.model_options["transformer_options"]
    with torch.no_grad():
        theirs = dm(inputs["x"], inputs["t"], inputs["context"], vace_context=inputs["vace_context"][:, None],
                    vace_strength=[1.0], transformer_options=options)
        positions = shifted_reference_positions(layout.num_ref_frames, frames, h, w)
        ours = core(**inputs, attention=AnyCrowdAttention(layout, mode), rope_positions=positions)
        unshifted = core(**inputs, attention=AnyCrowdAttention(layout, mode))
    assert torch.allclose(theirs, ours, atol=1e-4), float((theirs - ours).abs().max())
    assert (theirs - unshifted).abs().max() > 1e-3


def test_shifted_rope_follows_the_adapter_and_refuses_another_token_count(comfy, cp, model, layout):
    adapted = model.clone()
    adapted.model_options["transformer_options"][cp.ADAPTER_KEY] = {"shifted_rope": True}
    on = cp.patch_model(adapted, layout, mode="masked")
    off = cp.patch_model(model, layout, mode="masked")
    assert isinstance(on.model_options["transformer_options"].get(cp.ROPE_KEY), cp.ShiftedRope)
    assert cp.ROPE_KEY not in off.model_options["transformer_options"]
    rope = on.model_options["transformer_options"][cp.ROPE_KEY]
    with pytest.raises(AnyCrowdError, match="context windows"):
        rope.freqs(torch.zeros(1, len(rope.positions) - 16, 1, 8, 2, 2))


def test_apply_shift_equals_comfyuis_model_sampling_sd3_node(comfy, cp, model, layout):
    """The shift is set without instantiating the core node class, with the same result."""
    import importlib

    runtime = importlib.import_module(cp.__name__.replace("comfy_patch", "comfy_runtime"))
    advanced = importlib.import_module("comfy_extras.nodes_model_advanced")
    ours = runtime.apply_shift(model, 5.0)
    theirs = advanced.ModelSamplingSD3().patch(model, 5.0)[0]
    a, b = ours.get_model_object("model_sampling"), theirs.get_model_object("model_sampling")
    assert torch.equal(a.sigmas, b.sigmas) and a.shift == b.shift == 5.0 and a.multiplier == b.multiplier
    assert ours is not model and "model_sampling" not in model.object_patches
    inp = Inputs(make_layout())
    assert torch.equal(sample_step(comfy, ours, inp), sample_step(comfy, theirs, inp))


# --- ComfyUI's attention function, attn1_patch, multi-GPU gates (issue 13) ------------------

class Attn1Recorder:
    """An attn1_patch as v0.39's WanSelfAttention calls it: one dict, returns the new x."""

    def __init__(self, scale=1.0):
        self.scale, self.calls = scale, []

    def __call__(self, args):
        self.calls.append({k: (tuple(v.shape) if torch.is_tensor(v) else v) for k, v in args.items()})
        return args["x"] * self.scale


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_attn1_patch_runs_in_every_patched_layer_as_wan_self_attention_calls_it(comfy, cp, model, layout, mode):
    inp = Inputs(layout)
    plain = apply_model(comfy, cp.patch_model(model, layout, mode=mode), inp)
    patched = cp.patch_model(model, layout, mode=mode)
    keep = Attn1Recorder()
    patched.set_model_attn1_patch(keep)
    torch.testing.assert_close(apply_model(comfy, patched, inp), plain, atol=1e-5, rtol=1e-5)
    n = layout.num_tokens
    assert len(keep.calls) == 4 + 2  # every DiT and VACE self-attention of one forward
    for call in keep.calls:
        assert set(call) == {"x", "q", "k", "transformer_options"}
        assert (call["x"], call["q"], call["k"]) == ((1, n, 256), (1, n, 2, 128), (1, n, 2, 128))
    scaled = cp.patch_model(model, layout, mode=mode)
    scaled.set_model_attn1_patch(Attn1Recorder(scale=0.0))
    assert (apply_model(comfy, scaled, inp) - plain).abs().max() > 1e-3


def test_the_cpu_hosts_sub_quad_backend_keeps_torch_sdpa(comfy, cp, model):
    import comfy.ldm.modules.attention as attention

    from anycrowd_core.attention import sdpa

    ca = importlib.import_module(cp.__name__.replace("comfy_patch", "comfy_attention"))
    layer = model.model.diffusion_model.blocks[0].self_attn
    assert ca.layer_attention_function(attention, layer).__name__ == "attention_sub_quad"  # CPU host default
    assert ca.comfy_attend(attention, layer, {}) is sdpa


@pytest.mark.parametrize("mode", ["masked", "tsda"])
def test_with_the_pytorch_backend_the_groups_run_through_comfyui_and_the_output_is_unchanged(
        comfy, cp, model, layout, mode, monkeypatch):
    """attention_pytorch goes through ComfyUI's function (its kernel priority on CUDA); on the CPU
    that is the very SDPA kernel, so the output is bit-equal to the groups on our SDPA (which
    equals the core model, test_shifted_rope_patch_equals_the_core_model...)."""
    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan_model

    ca = importlib.import_module(cp.__name__.replace("comfy_patch", "comfy_attention"))
    inp = Inputs(layout)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape[1])
        return attention.attention_pytorch(*args, **kwargs)

    counted.__name__ = "attention_pytorch"
    monkeypatch.setattr(wan_model, "optimized_attention", counted)  # cross-attention uses it too
    monkeypatch.setattr(ca, "SDPA_INSTEAD_OF", ca.SDPA_INSTEAD_OF | {"attention_pytorch"})
    on_sdpa = apply_model(comfy, cp.patch_model(model, layout, mode=mode, agf="mean"), inp)
    group_calls = [n for n in calls if n < layout.num_tokens]
    monkeypatch.undo()
    monkeypatch.setattr(wan_model, "optimized_attention", counted)
    through_comfy = apply_model(comfy, cp.patch_model(model, layout, mode=mode, agf="mean"), inp)
    assert torch.equal(through_comfy, on_sdpa)
    assert not group_calls  # first run: groups on our SDPA
    assert any(n < layout.num_tokens for n in calls)  # the identity groups went through it


def test_an_attention_override_runs_every_group_of_the_binding_modes(comfy, cp, model, layout):
    inp = Inputs(layout)
    plain = apply_model(comfy, cp.patch_model(model, layout, mode="masked"), inp)
    lengths = []

    def override(func, *args, **kwargs):
        lengths.append(args[0].shape[1])
        return func(*args, **kwargs)

    patched = cp.patch_model(model, layout, mode="masked")
    patched.model_options["transformer_options"]["optimized_attention_override"] = override
    got = apply_model(comfy, patched, inp)
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)  # ComfyUI's sub_quad vs torch sdpa
    segments = patched.model_options["transformer_options"][cp.HOOK_KEY]._plan("masked", torch.device("cpu")).segments
    groups = [q.stop - q.start if isinstance(q, slice) else len(q) for q, _ in segments]
    n = layout.num_tokens  # the 6 cross-attentions (4 DiT + 2 VACE blocks) query all n tokens
    assert Counter(lengths) == Counter(groups * 6 + [n] * 6)  # every group of every layer, once


def test_an_override_that_needs_the_whole_sequence_is_skipped_with_one_warning(comfy, cp, model, layout, caplog):
    inp = Inputs(layout)
    plain = apply_model(comfy, cp.patch_model(model, layout, mode="tsda", agf="mean"), inp)
    n = layout.num_tokens

    def whole_sequence_only(func, *args, **kwargs):
        if args[0].shape[1] != n:
            raise RuntimeError(f"shape '[1, 5, 4, 6, -1]' is invalid for input of size {args[0].numel()}")
        return func(*args, **kwargs)

    patched = cp.patch_model(model, layout, mode="tsda", agf="mean")
    patched.model_options["transformer_options"]["optimized_attention_override"] = whole_sequence_only
    with caplog.at_level("WARNING"):
        got = apply_model(comfy, patched, inp)
        apply_model(comfy, patched, inp)
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if "whole_sequence_only" in r.getMessage()]
    assert len(warnings) == 1 and "cannot run on AnyCrowd's identity groups" in warnings[0]


def test_gates_patcher_rebuilds_a_fresh_copy_as_multigpu_deepclones_need(comfy, cp, model, layout):
    """v0.39 `ModelPatcher.deepclone_multigpu` calls every additional model's
    `cached_patcher_init[0](*cached_patcher_init[1])` (and `clone` may add disable_dynamic=True)
    and needs a patcher holding its own, untainted weights."""
    gates = gates_for(model)
    patched = cp.patch_model(model, layout, mode="tsda", gates=gates)
    (patcher,) = patched.get_additional_models_with_key(cp.GATES_KEY)
    init = patcher.cached_patcher_init
    assert len(init) == 2 and callable(init[0])
    hook = patched.model_options["transformer_options"][cp.HOOK_KEY]
    for kwargs in ({}, {"disable_dynamic": True}):
        fresh = init[0](*init[1], **kwargs)
        assert isinstance(fresh, comfy.model_patcher.ModelPatcher) and fresh.model is not gates
        assert (fresh.load_device, fresh.offload_device) == (patcher.load_device, patcher.offload_device)
        assert fresh.cached_patcher_init is not None  # a deep clone can be deep-cloned again
        theirs, ours = fresh.model.state_dict(), gates.state_dict()
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(fresh.model.parameters(), gates.parameters()))
        assert any(c is fresh.model for c in hook.gate_copies())  # layers on the copy's device use it
