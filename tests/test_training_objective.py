"""What the trainer optimises: the flow-matching loss covers exactly the video latent frames
after the references (and after token-replaced frames), `loss.agf_weight` scales the AGF
term of the loss that is back-propagated, gradient accumulation averages its micro-batch
gradients, and the optimiser really runs with the warmup / cosine learning rates.

Each test reads the numbers the optimiser sees (its gradients and param_groups at the
moment `step()` is called) or the loss `compute_loss` returns, and checks them against
values computed here independently of the trainer's own bookkeeping.
"""

import math

import pytest
import torch
import torch.nn.functional as F

# shared tiny-data helpers of the trainer tests
from test_training_run import config, make_samples
from training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU


@pytest.fixture(scope="module")
def samples():
    return make_samples(3)


def quiet(tmp_path, *overrides):
    """Tiny config without dropout (deterministic conditioning) and without clipping."""
    return config(tmp_path, "conditioning.text_dropout=0", "conditioning.reference_dropout=0",
                  "optim.max_grad_norm=null", "train.checkpoint_every=0", *overrides)


def trainable(trainer) -> dict[str, torch.nn.Parameter]:
    params = dict(trainer._unwrapped().named_parameters())
    return {n: params[n] for n in trainer.param_names}


def spy_on_optimizer(trainer, *, apply: bool = True) -> list[dict]:
    """Record, at every optimiser step, the learning rate of each param group and a copy of
    every trainable gradient (None where unset). apply=False skips the update itself, so the
    weights stay those the gradients were computed at."""
    records = []
    params = trainable(trainer)
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        records.append({
            "lrs": [g["lr"] for g in trainer.optimizer.param_groups],
            "grads": {n: None if p.grad is None else p.grad.detach().clone() for n, p in params.items()},
        })
        if apply:
            return real_step(*args, **kwargs)
        return None

    trainer.optimizer.step = step
    return records


def spy_on_batches(trainer) -> list:
    """Record every training batch make_batch draws."""
    batches = []
    real = trainer.make_batch

    def make_batch(sample, **kwargs):
        b = real(sample, **kwargs)
        if kwargs.get("train"):
            batches.append(b)
        return b

    trainer.make_batch = make_batch
    return batches


def grads_of(trainer, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss / d trainable parameters, zeros where the parameter does not take part."""
    params = trainable(trainer)
    names = list(params)
    got = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(params[n]) if g is None else g.detach() for n, g in zip(names, got)}


def dense(grads: dict) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if g is not None}


def assert_grads_close(actual: dict, expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for n, e in expected.items():
        a = actual[n] if actual[n] is not None else torch.zeros_like(e)
        assert torch.allclose(a, e, rtol=1e-5, atol=1e-9), (
            f"{n}: max |diff| {float((a - e).abs().max()):.3e}, max |expected| {float(e.abs().max()):.3e}")


class FixedOutput:
    """Stand-in for the trainer's module: returns a given velocity (and zero AGF loss)."""

    def __init__(self, v: torch.Tensor):
        self.v = v

    def __call__(self, *args, **kwargs):
        return self.v, self.v.new_zeros(())


def _fm_with_output(trainer, monkeypatch, batch, v):
    monkeypatch.setattr(trainer, "module", FixedOutput(v))
    _, fm, _ = trainer.compute_loss(batch)
    monkeypatch.undo()
    return float(fm)


def _check_loss_region(trainer, monkeypatch, batch, first: int) -> None:
    """fm is the MSE over latent frames first: exactly; nothing before `first` counts,
    every frame from `first` on does."""
    frames = batch.target.shape[2]
    assert 0 < first < frames
    v = torch.randn(batch.target.shape, generator=torch.Generator().manual_seed(3))
    fm = _fm_with_output(trainer, monkeypatch, batch, v)
    expected = float(((v[:, :, first:] - batch.target[:, :, first:]) ** 2).mean())
    assert fm == pytest.approx(expected, rel=1e-6)

    # the excluded frames: model output and target there do not matter at all
    v_ref = v.clone()
    v_ref[:, :, :first] += 100.0
    assert _fm_with_output(trainer, monkeypatch, batch, v_ref) == fm
    target_before = batch.target.clone()
    batch.target[:, :, :first] -= 50.0
    try:
        assert _fm_with_output(trainer, monkeypatch, batch, v) == fm
    finally:
        batch.target.copy_(target_before)

    # each frame in the loss does
    for f in range(first, frames):
        v_vid = v.clone()
        v_vid[:, :, f] += 1.0
        assert _fm_with_output(trainer, monkeypatch, batch, v_vid) > fm + 1e-3


# ---------------------------------------------------------------- 1. which frames are in the loss


def test_flow_matching_loss_excludes_the_reference_frames(tmp_path, samples, monkeypatch):
    trainer = Trainer(quiet(tmp_path), dataset=samples)
    trainer.setup()
    s = samples[0]
    r = int(s.trim)
    assert r > 0 and s.latents.shape[1] >= 2
    batch = trainer.make_batch(s, train=False, sigma=0.5, noise_seed=7)
    assert batch.target.shape[2] == r + s.latents.shape[1]
    _check_loss_region(trainer, monkeypatch, batch, r)

    # and with the real model: fm is the MSE of its velocity on the video frames only
    with torch.no_grad():
        _, fm, _ = trainer.compute_loss(batch)
        v, _ = trainer.module(batch.x_t, batch.t, batch.context, batch.vace_context, layout=batch.layout,
                              mode=trainer.cfg.model.attention, agf=trainer.cfg.model.agf,
                              vace_strength=batch.vace_strength, rope_positions=batch.rope_positions)
    video_only = F.mse_loss(v[:, :, r:], batch.target[:, :, r:])
    everything = F.mse_loss(v, batch.target)
    assert float(fm) == pytest.approx(float(video_only), rel=1e-5)
    assert abs(float(everything) - float(video_only)) > 1e-3 * float(video_only)  # the check can tell them apart


def test_flow_matching_loss_excludes_token_replaced_frames(tmp_path, samples, monkeypatch):
    k = 1
    trainer = Trainer(quiet(tmp_path, "conditioning.token_replace_prob=1", f"conditioning.token_replace_frames={k}"),
                      dataset=samples)
    trainer.setup()
    s = samples[0]
    r = int(s.trim)
    assert s.latents.shape[1] > k  # at least one noised video frame stays in the loss
    batch = trainer.make_batch(s, train=True)
    # the replaced frames are clean (t = 0) and must not be learned: the loss starts after them
    assert torch.equal(batch.x_t[0, :, r : r + k], s.latents[:, :k].float())
    _check_loss_region(trainer, monkeypatch, batch, r + k)


# ---------------------------------------------------------------- 2. loss.agf_weight


def _overlapping_layout(layout) -> bool:
    return layout.soft_labels is not None and any(len(ids) >= 2 for ids, _ in layout.video_groups)


def test_agf_weight_scales_the_agf_term_of_the_loss(tmp_path, samples):
    s = samples[0]
    assert _overlapping_layout(s.layout)  # two characters whose boxes cross: AGF has something to fuse
    results = {}
    for w in (0.0, 0.5, 2.0):
        trainer = Trainer(quiet(tmp_path / str(w), f"loss.agf_weight={w}"), dataset=samples)
        trainer.setup()
        assert trainer.train_gates  # tsda + gated
        batch = trainer.make_batch(s, train=False, sigma=0.4, noise_seed=11)
        with torch.no_grad():
            results[w] = [float(x) for x in trainer.compute_loss(batch)]
    for w, (total, fm, agf) in results.items():
        assert total == pytest.approx(fm + w * agf, rel=1e-6, abs=1e-9), w
    fm0, fm_half, fm_two = (results[w][1] for w in (0.0, 0.5, 2.0))
    assert fm0 == pytest.approx(fm_half, rel=1e-6) and fm0 == pytest.approx(fm_two, rel=1e-6)  # same weights, batch
    agf_half, agf_two = results[0.5][2], results[2.0][2]
    assert agf_half > 1e-3 and agf_half == pytest.approx(agf_two, rel=1e-6)
    assert results[0.0][0] == pytest.approx(fm0, rel=1e-6)  # weight 0: the total is the flow-matching loss
    assert results[2.0][0] - results[0.5][0] == pytest.approx(1.5 * agf_half, rel=1e-4)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # update skipped
def test_training_step_backpropagates_fm_plus_weighted_agf(tmp_path, samples):
    w = 0.5
    trainer = Trainer(quiet(tmp_path, f"loss.agf_weight={w}", "train.max_steps=1"), dataset=samples)
    trainer.setup()
    steps, batches = spy_on_optimizer(trainer, apply=False), spy_on_batches(trainer)
    trainer.train()
    assert len(steps) == 1 and len(batches) == 1
    _, fm, agf = trainer.compute_loss(batches[0])
    assert float(agf.detach()) > 1e-3
    assert trainer.history[0]["loss"] == pytest.approx(float(fm.detach()) + w * float(agf.detach()), rel=1e-5)
    expected = grads_of(trainer, fm + w * agf)
    assert_grads_close(steps[0]["grads"], expected)
    # the AGF term matters for the gates' gradient: without it the step would differ
    _, fm_only, _ = trainer.compute_loss(batches[0])
    without = grads_of(trainer, fm_only)
    gate = [n for n in expected if n.startswith("gates.")]
    assert gate and any(not torch.allclose(expected[n], without[n], rtol=1e-3, atol=1e-7) for n in gate)


# ---------------------------------------------------------------- 3. gradient accumulation


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # update skipped
def test_gradient_accumulation_averages_the_micro_batch_gradients(tmp_path, samples):
    trainer = Trainer(quiet(tmp_path, "train.gradient_accumulation=2", "train.max_steps=1"), dataset=samples)
    trainer.setup()
    steps, batches = spy_on_optimizer(trainer, apply=False), spy_on_batches(trainer)
    trainer.train()
    assert len(steps) == 1 and len(batches) == 2  # one optimiser step over two micro-batches
    separate, losses = [], []
    for b in batches:  # same weights: the update was not applied
        loss, _, _ = trainer.compute_loss(b)
        losses.append(float(loss.detach()))
        separate.append(grads_of(trainer, loss))
    first, second = separate
    assert any(not torch.allclose(first[n], second[n]) for n in first)  # two different micro-batches
    assert any(float(g.abs().max()) > 0 for g in first.values())
    mean = {n: (first[n] + second[n]) / 2 for n in first}
    assert_grads_close(steps[0]["grads"], mean)
    assert trainer.history[0]["loss"] == pytest.approx(sum(losses) / 2, rel=1e-5)


# ---------------------------------------------------------------- 4. learning rate schedule


def expected_factor(k: int, warmup: int, total: int, scheduler: str, min_ratio: float) -> float:
    """LR factor at optimiser step k = 1, 2, ...: linear warmup k / W over steps 1..W, then
    constant 1, or a cosine from 1 (step W+1) towards min_lr_ratio over the remaining steps."""
    if k <= warmup:
        return k / warmup
    if scheduler == "constant":
        return 1.0
    progress = (k - 1 - warmup) / (total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("scheduler", ["constant", "cosine"])
def test_optimizer_runs_with_the_warmup_and_schedule_learning_rates(tmp_path, samples, scheduler):
    lr, gate_lr, warmup, total, min_ratio = 1e-3, 3e-3, 3, 8, 0.1
    cfg = quiet(tmp_path, f"optim.lr={lr}", f"optim.gate_lr={gate_lr}", f"optim.warmup_steps={warmup}",
                f"optim.scheduler={scheduler}", f"optim.min_lr_ratio={min_ratio}", f"train.max_steps={total}")
    trainer = Trainer(cfg, dataset=samples)
    trainer.setup()
    assert len(trainer.optimizer.param_groups) == 2  # LoRA, gates
    steps = spy_on_optimizer(trainer)
    trainer.train()
    assert len(steps) == total
    for k, rec in enumerate(steps, start=1):
        f = expected_factor(k, warmup, total, scheduler, min_ratio)
        assert rec["lrs"] == [pytest.approx(lr * f, rel=1e-12), pytest.approx(gate_lr * f, rel=1e-12)], k
    used = [rec["lrs"][0] for rec in steps]
    assert used[0] == pytest.approx(lr / warmup) and used[warmup - 1] == pytest.approx(lr)  # never 0, peaks at W
    if scheduler == "cosine":
        assert used[warmup] == pytest.approx(lr) and all(a > b for a, b in zip(used[warmup:], used[warmup + 1 :]))
        assert min(used[warmup:]) > lr * min_ratio
