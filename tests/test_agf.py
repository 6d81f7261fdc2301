"""Adaptive Gated Fusion: Gating Block, GateBank, the fusion variants and the AGF loss
(paper Eq. 4-5, appendix D; docs/tsda.md)."""

import pytest
import torch

from anycrowd_core.attention import AnyCrowdAttention, GateBank, GatingBlock, agf_loss, fuse_candidates
from anycrowd_core.attention.dense_reference import dense_forward
from anycrowd_core.bench.attention import ToySelfAttention
from anycrowd_core.boxes import boxes_from_masks
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import build_token_layout
from random_adapters import random_gates

DIM = 16


def overlapping_scene(frames=5):
    """Two identities whose tracks overlap in the middle of a 64x48 frame, plus a third
    identity without a track; track masks give the soft labels."""
    masks = torch.zeros(2, frames, 48, 64, dtype=torch.bool)
    for f in range(frames):
        masks[0, f, 4:44, 2 + 2 * f:36 + 2 * f] = True
        masks[1, f, 8:48, 24 - f:60 - f] = True
    ref = torch.zeros(3, 48, 64, dtype=torch.bool)
    ref[0, :, :32], ref[1, :, 32:], ref[2, 16:40, 16:48] = True, True, True
    return build_token_layout(ref, boxes_from_masks(masks), [0, 1], track_masks=masks)


def toy_gates():
    """Acting gates for 2 DiT + 2 VACE layers of the toy width."""
    return random_gates(DIM, 2, 2, hidden=8)


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return ToySelfAttention(DIM, 2)


def test_gate_bank_state_dict_keys_follow_branch_and_layer():
    keys = set(GateBank(DIM, 2, 1, hidden=4).state_dict())
    assert keys == {
        "dit.0.norm.weight", "dit.0.norm.bias", "dit.0.fc1.weight", "dit.0.fc1.bias", "dit.0.fc2.weight",
        "dit.1.norm.weight", "dit.1.norm.bias", "dit.1.fc1.weight", "dit.1.fc1.bias", "dit.1.fc2.weight",
        "vace.0.norm.weight", "vace.0.norm.bias", "vace.0.fc1.weight", "vace.0.fc1.bias", "vace.0.fc2.weight",
    }


def test_untrained_gate_scores_all_candidates_equally():
    scores = GatingBlock(DIM, 8)(torch.randn(3, 5, DIM))
    assert torch.equal(scores, torch.zeros(3, 5))


def test_gate_is_cast_to_the_input_dtype():
    gate = toy_gates().gate("dit", 0)
    x = torch.randn(4, 3, DIM, dtype=torch.float64)
    scores = gate(x)
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores.float(), gate(x.float()), atol=1e-5, rtol=1e-5)


def test_missing_gate_layer_is_a_clear_error():
    with pytest.raises(AnyCrowdError, match="has 2 'vace' gates but layer vace.5"):
        toy_gates().gate("vace", 5)


def test_fusion_variants_on_a_hand_made_token():
    cands = torch.tensor([[[[1.0, 4.0], [3.0, 0.0], [9.0, 9.0]],  # token 0: 2 valid candidates
                           [[5.0, 6.0], [7.0, 7.0], [7.0, 7.0]]]])  # token 1: only the first
    valid = torch.tensor([[True, True, False], [True, False, False]])
    mean, logw = fuse_candidates(cands, valid, "mean", None)
    assert mean.tolist() == [[[2.0, 2.0], [5.0, 6.0]]]
    assert torch.allclose(logw.exp() * valid, torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]))
    mx, none = fuse_candidates(cands, valid, "max", None)
    assert mx.tolist() == [[[3.0, 4.0], [5.0, 6.0]]] and none is None


def test_gated_fusion_is_the_softmax_of_gate_scores():
    gate = GatingBlock(2, 4)
    torch.nn.init.normal_(gate.fc2.weight)
    cands = torch.randn(1, 1, 3, 2)
    valid = torch.tensor([[True, True, True]])
    fused, logw = fuse_candidates(cands, valid, "gated", gate)
    w = torch.softmax(gate(cands), -1)
    torch.testing.assert_close(logw.exp(), w)
    torch.testing.assert_close(fused, (w[..., None] * cands).sum(2))


def test_untrained_gated_tsda_equals_mean_fusion(layer):
    layout = overlapping_scene()
    x = torch.randn(1, layout.num_tokens, DIM)
    gated = AnyCrowdAttention(layout, agf="gated", gates=GateBank(DIM, 1, 1, hidden=8))(x, layer.ops())
    mean = AnyCrowdAttention(layout, agf="mean")(x, layer.ops())
    torch.testing.assert_close(gated, mean, atol=1e-6, rtol=1e-6)


def test_agf_loss_is_cross_entropy_against_soft_labels():
    logw = torch.log(torch.tensor([[[0.25, 0.75, 1.0], [0.5, 0.5, 1.0]]]))
    labels = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]])
    valid = torch.tensor([[[True, True, False], [True, True, False]]])
    loss = agf_loss(logw.masked_fill(~valid, 0), labels, valid)
    expected = (-torch.log(torch.tensor(0.25)) - torch.log(torch.tensor(0.5))) / 2
    torch.testing.assert_close(loss, expected)


def test_recorded_agf_loss_matches_dense_reference_and_trains_the_gates(layer):
    layout = overlapping_scene()
    assert (layout.candidate_count >= 2).sum() > 4
    gates = toy_gates()
    hook = AnyCrowdAttention(layout, agf="gated", gates=gates, record_agf_loss=True)
    x = torch.randn(2, layout.num_tokens, DIM)
    hook(x, layer.ops("dit", 0))
    hook(x, layer.ops("vace", 1))
    want = torch.stack([dense_forward(x, layer.ops(b, i), layout, "tsda", "gated", gates.gate(b, i))[1]
                        for b, i in [("dit", 0), ("vace", 1)]]).mean()
    loss = hook.agf_loss()
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    loss.backward()
    for block in (gates.dit[0], gates.vace[1]):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    assert all(p.grad is None for p in gates.dit[1].parameters())  # layer never ran
    hook.reset()
    assert hook.agf_loss().item() == 0.0


def test_agf_loss_needs_soft_labels_and_gates():
    layout = overlapping_scene()
    no_labels = build_token_layout(torch.ones(1, 48, 64, dtype=torch.bool), torch.zeros(1, 5, 4), [0])
    with pytest.raises(AnyCrowdError, match="track_masks"):
        AnyCrowdAttention(no_labels, gates=toy_gates(), record_agf_loss=True)
    with pytest.raises(AnyCrowdError, match="agf='gated' and pass a GateBank"):
        AnyCrowdAttention(layout, agf="mean", gates=toy_gates(), record_agf_loss=True)
    with pytest.raises(AnyCrowdError, match="agf='gated' and pass a GateBank"):
        AnyCrowdAttention(layout, record_agf_loss=True)
