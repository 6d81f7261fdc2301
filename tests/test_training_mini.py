"""The trainer's miniature features: `data.source: scenes` (procedural scenes in memory with
the miniature's codec), `model.training: full` (every base weight trains, the model is
exported as a loadable checkpoint), and a loss that falls within a few steps on that data."""

import pytest
import torch

from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.mini.seeds import EVAL_SEED_BASE, TRAIN_SEED_LIMIT
from anycrowd_core.wan import load_wan_vace
from training.config import load_config
from training.scene_samples import SceneSamples, scene_specs
from training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU
SMALL = {"frames": [5], "widths": [96], "height": 64, "min_characters": 1, "max_characters": 2,
         "scenarios": ["crossing", "swap"], "cross_driven": 0.5}


def mini_config(tmp_path, *overrides):
    base = [
        "model.base=random-tiny", "model.training=full", "model.attention=global", "data.source=scenes",
        "data.procedural_samples=4", "data.scenes.frames=[5]", "data.scenes.widths=[96]", "data.scenes.height=64",
        "data.scenes.max_characters=2", "train.progress=false", "train.tensorboard=false", "train.max_steps=3",
        "conditioning.text_dropout=0", "conditioning.reference_dropout=0", f"output.dir={tmp_path}",
    ]
    return load_config(None, base + list(overrides))


def test_scene_specs_are_a_pure_function_of_the_seed_and_stay_below_evaluation_seeds():
    a = scene_specs(50, seed=3, **SMALL)
    assert a == scene_specs(50, seed=3, **SMALL)
    assert a != scene_specs(50, seed=4, **SMALL)
    assert all(s.seed < TRAIN_SEED_LIMIT < EVAL_SEED_BASE for s in a)
    assert {s.characters for s in a} == {1, 2} and {s.scenario for s in a} == {"crossing", "swap"}
    assert 10 < sum(s.cross_driven for s in a) < 40
    with pytest.raises(AnyCrowdError, match="evaluation scene seeds"):
        scene_specs(200_000, seed=49, **SMALL)


def test_scene_samples_are_deterministic_and_cross_driven_ones_move_the_identities():
    specs = [s for s in scene_specs(12, seed=0, **SMALL) if s.characters == 2]
    data = SceneSamples(specs, text_dim=32)
    again = SceneSamples(specs, text_dim=32)
    for i, spec in enumerate(specs):
        a, b = data[i], again[i]
        assert torch.equal(a.latents, b.latents) and torch.equal(a.vace_context, b.vace_context)
        assert a.trim == 3 and a.layout.soft_labels is not None
        assert a.text_embedding.shape == (1, 1, 32) and not a.text_embedding.any()
    moved = [spec.cross_driven for spec in specs]
    assert True in moved and False in moved


def test_full_training_updates_every_weight_and_exports_a_loadable_model(tmp_path):
    trainer = Trainer(mini_config(tmp_path, "train.max_steps=2", "optim.lr=1e-3"))
    trainer.setup()
    before = {n: p.detach().clone() for n, p in trainer._unwrapped().wan.named_parameters()}
    summary = trainer.train()
    after = dict(trainer._unwrapped().wan.named_parameters())
    assert all(p.requires_grad for p in after.values())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert len(changed) > 0.9 * len(before)  # a few parameters (e.g. unused modulation rows) may get no gradient
    assert set(summary["outputs"]) == {"model"}
    model = load_wan_vace(summary["outputs"]["model"], num_heads=trainer.wan_cfg.num_heads)
    for n, p in model.named_parameters():
        assert torch.equal(p, after[n].detach().float()), n


def test_full_training_with_gated_tsda_also_exports_gates(tmp_path):
    summary = Trainer(mini_config(tmp_path, "model.attention=tsda", "train.max_steps=1", "model.gate_hidden=8")).train()
    assert set(summary["outputs"]) == {"model", "gates"}


def test_full_training_refuses_half_precision_base_weights(tmp_path):
    with pytest.raises(AnyCrowdError, match="fp32"):
        mini_config(tmp_path, "model.dtype=bf16")


def test_scene_data_settings_are_validated(tmp_path):
    with pytest.raises(AnyCrowdError, match="4n\\+1"):
        mini_config(tmp_path, "data.scenes.frames=[6]")
    with pytest.raises(AnyCrowdError, match="scenarios"):
        mini_config(tmp_path, "data.scenes.scenarios=[spiral]")
    with pytest.raises(AnyCrowdError, match="cross_driven"):
        mini_config(tmp_path, "data.scenes.cross_driven=1.5")


def test_loss_falls_within_a_few_steps_on_the_miniatures_data(tmp_path):
    cfg = mini_config(tmp_path, "train.max_steps=30", "optim.lr=2e-3", "timesteps.distribution=uniform",
                      "train.val_sigmas=[0.3,0.6]")
    trainer = Trainer(cfg)
    trainer.setup()
    before = trainer.evaluate([0, 1, 2, 3])
    trainer.train()
    after = trainer.evaluate([0, 1, 2, 3])
    print(f"fixed-noise loss {before['loss']:.4f} -> {after['loss']:.4f}")
    assert after["loss"] < 0.7 * before["loss"]
