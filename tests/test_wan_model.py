"""Specification of the core Wan 2.1 VACE DiT: checkpoint layout, forward semantics, plug point."""

import json
from pathlib import Path

import pytest
import torch

from anycrowd_core.attention.ops import global_attention, sdpa
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan import WanVaceConfig, WanVaceModel, apply_rope, grid_positions, rope_axes, rope_cos_sin
from tiny_wan import tiny_config, tiny_inputs, tiny_model

# key -> shape of the released Wan 2.1 VACE 1.3B / 14B checkpoints (read from their headers),
# kept in the repository so a plain clone runs these tests
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "wan21_vace_state_dict_shapes.json"


@pytest.fixture(scope="module")
def released_shapes():
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("name", ["wan2.1-vace-1.3b", "wan2.1-vace-14b"])
def test_state_dict_keys_and_shapes_equal_the_released_checkpoints(released_shapes, name):
    with torch.device("meta"):
        model = WanVaceModel(WanVaceConfig.preset(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == released_shapes[name]["keys"]


@pytest.mark.parametrize("name", ["wan2.1-vace-1.3b", "wan2.1-vace-14b"])
def test_config_is_inferred_from_checkpoint_shapes(released_shapes, name):
    meta = {k: torch.empty(s, device="meta") for k, s in released_shapes[name]["keys"].items()}
    cfg = WanVaceConfig.from_state_dict(meta)
    assert cfg == WanVaceConfig.preset(name)
    fixture_cfg = released_shapes[name]["config"]
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.vace_layers) == tuple(
        fixture_cfg[k] for k in ("dim", "num_heads", "num_layers", "vace_layers")
    )


def test_vace_blocks_feed_every_kth_dit_block():
    assert WanVaceConfig.preset("1.3b").vace_block_for_dit_block == {2 * n: n for n in range(15)}
    assert WanVaceConfig.preset("14b").vace_block_for_dit_block == {5 * n: n for n in range(8)}
    assert tiny_config().vace_block_for_dit_block == {0: 0, 2: 1}


def test_scalar_timestep_is_shared_by_the_batch():
    model = tiny_model()
    inputs = tiny_inputs(batch=2)
    with torch.no_grad():
        expected = model(**dict(inputs, t=torch.tensor([300.0, 300.0])))
        assert torch.equal(model(**dict(inputs, t=300.0)), expected)


def test_forward_returns_latent_shaped_velocity_for_batches_and_several_contexts():
    model = tiny_model()
    out = model(**tiny_inputs(batch=2, contexts=3, frames=2, height=6, width=4), vace_strength=[1.0, 0.5, 0.0])
    assert out.shape == (2, 16, 2, 6, 4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_a_context_with_strength_zero_has_no_effect():
    model = tiny_model()
    two = tiny_inputs(contexts=2, seed=3)
    one = dict(two, vace_context=two["vace_context"][0])
    with torch.no_grad():
        # float32 rounding only: batching two contexts in the VACE patch embedding may pick another kernel
        torch.testing.assert_close(model(**two, vace_strength=[0.7, 0.0]), model(**one, vace_strength=0.7), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(**two, vace_strength=[0.7, 0.3]), model(**one, vace_strength=0.7), atol=1e-3)


def test_per_frame_timesteps_equal_scalar_timestep_when_all_frames_share_it():
    model = tiny_model()
    inputs = tiny_inputs(batch=2, frames=3)
    per_frame = dict(inputs, t=inputs["t"][:, None].expand(2, 3).contiguous())
    with torch.no_grad():
        # float32 rounding only: the time MLP runs on B*F rows instead of B
        torch.testing.assert_close(model(**per_frame), model(**inputs), rtol=1e-5, atol=1e-5)


def test_per_frame_timesteps_modulate_each_frame_separately():
    model = tiny_model()
    inputs = tiny_inputs(batch=1, frames=3)
    t = torch.tensor([[0.0, 600.0, 600.0]])
    with torch.no_grad():
        mixed = model(**dict(inputs, t=t))
        uniform = model(**dict(inputs, t=torch.tensor([600.0])))
    assert not torch.allclose(mixed[:, :, 0], uniform[:, :, 0], atol=1e-3)  # frame 0 sees t=0


def test_hook_equal_to_global_attention_is_bit_identical_and_sees_every_layer():
    model = tiny_model()
    inputs = tiny_inputs(contexts=2)
    calls = []

    def hook(x, ops):
        calls.append((ops.branch, ops.index, x.shape[1]))
        return global_attention(x, ops)

    with torch.no_grad():
        expected = model(**inputs)
        got = model(**inputs, attention=hook)
    assert torch.equal(got, expected)
    tokens = 3 * 2 * 3  # frames x (4/2) x (6/2)
    dit = [("dit", i, tokens) for i in range(4)]
    vace = [("vace", n, tokens) for n in range(2)]
    # DiT block 0, then VACE block 0 for each context, DiT 1, DiT 2, VACE 1 x2, DiT 3
    assert calls == [dit[0], vace[0], vace[0], dit[1], dit[2], vace[1], vace[1], dit[3]]


def test_hook_receives_working_projections_for_token_subsets():
    # A hook may attend within subsets (as TSDA does); per-frame attention must differ
    # from global attention and equal running the same frame alone through ops.
    model = tiny_model()
    inputs = tiny_inputs(frames=2)

    def per_frame(x, ops):
        q, k, v = ops.qkv(x)
        n = x.shape[1] // 2
        outs = [sdpa(q[:, s : s + n], k[:, s : s + n], v[:, s : s + n]) for s in (0, n)]
        return ops.out(torch.cat(outs, dim=1))

    with torch.no_grad():
        assert not torch.allclose(model(**inputs, attention=per_frame), model(**inputs), atol=1e-4)


def test_gradient_checkpointing_gives_identical_outputs_and_gradients():
    inputs = tiny_inputs(contexts=2)
    results = []
    for checkpointing in (False, True):
        model = tiny_model()
        model.enable_gradient_checkpointing(checkpointing)
        out = model(**inputs, vace_strength=[1.0, 0.5])
        (out.square().mean()).backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out0, grads0), (out1, grads1) = results
    assert torch.equal(out0, out1)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=0, atol=1e-7, msg=name)
    assert grads0["vace_blocks.0.before_proj.weight"].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite_and_close_to_float32(dtype):
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.no_grad():
        reference = model(**inputs)
        model.to(dtype)
        assert model.blocks[0].self_attn.q.weight.dtype == dtype
        assert model.patch_embedding.weight.dtype == torch.float32  # as in ComfyUI
        assert model.vace_patch_embedding.weight.dtype == torch.float32
        out = model(**{k: v.to(dtype) for k, v in inputs.items()})
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert ((out.float() - reference).norm() / reference.norm()).item() < 0.05


def test_rope_positions_only_matter_relatively():
    model = tiny_model()
    inputs = tiny_inputs(frames=2)
    positions = grid_positions(2, 2, 3)
    with torch.no_grad():
        base = model(**inputs, rope_positions=positions)
        shifted = model(**inputs, rope_positions=positions + torch.tensor([5, 3, 7]))
        torch.testing.assert_close(base, model(**inputs), rtol=0, atol=0)
    torch.testing.assert_close(shifted, base, rtol=0, atol=2e-5)


def test_rope_splits_head_channels_like_wan_and_rotates():
    assert rope_axes(128) == (44, 42, 42)
    assert rope_axes(16) == (8, 4, 4)
    x = torch.randn(1, 6, 2, 16)
    cos, sin = rope_cos_sin(grid_positions(1, 2, 3), 16)
    rotated = apply_rope(x, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))  # rotations keep length
    torch.testing.assert_close(rotated[:, 0], x[:, 0], rtol=0, atol=0)  # position (0,0,0) is identity


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda i: dict(i, vace_context=i["vace_context"][:, :32]), "VACE context must be"),
        (lambda i: dict(i, t=torch.zeros(1, 2)), "Timestep shape"),
        (lambda i: dict(i, context=i["context"][..., :16]), "Text context must be"),
        (lambda i: dict(i, x=i["x"][:, :, :, :3]), "multiple of the patch"),
        (lambda i: dict(i, vace_strength=[1.0, 1.0]), "VACE strengths"),
    ],
)
def test_bad_inputs_raise_anycrowd_error_naming_the_problem(change, message):
    model = tiny_model()
    with pytest.raises(AnyCrowdError, match=message):
        model(**change(tiny_inputs()))


def test_invalid_config_raises_anycrowd_error():
    with pytest.raises(AnyCrowdError, match="not divisible"):
        tiny_config(num_heads=5)
    with pytest.raises(AnyCrowdError, match="vace_layers"):
        tiny_config(vace_layers=5)
