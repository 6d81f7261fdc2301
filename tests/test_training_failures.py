"""The trainer when things go wrong: a NaN loss stops before anything NaN is saved and names
the cause; Ctrl-C saves the finished step and resumes bit-identically; damaged checkpoints
fall back (latest) or are named (explicit path); the CLI checks its output folder and flags
before any compute and prints the exact resume command.
"""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

# shared tiny-data helpers of the trainer tests
from test_training_run import config, make_samples
from tiny_wan import tiny_config
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.wan import random_state_dict
from training import checkpoint as ckpt
from training import run
from training.trainer import NonFiniteTraining, Trainer, TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared CPU
STEPS = ["train.max_steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=5"]


@pytest.fixture(scope="module")
def samples():
    return make_samples(3)


def all_finite(tensors: dict) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values())


# ---------------------------------------------------------------- non-finite training


def test_a_diverging_run_stops_before_saving_nan_and_keeps_the_last_good_checkpoint(tmp_path, samples):
    trainer = Trainer(config(tmp_path, *STEPS, "optim.lr=1e30", "optim.max_grad_norm=null"), dataset=samples)
    with pytest.raises(NonFiniteTraining, match=r"Training stopped at step \d: the (loss|gradient norm).*optim.lr") as e:
        trainer.train()
    assert "last good checkpoint" in str(e.value)
    assert not list(tmp_path.glob("*.safetensors")), "no adapter may be written by a diverged run"
    found = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert found, "the huge first step is finite and checkpointed"
    for folder in found:
        assert all_finite(load_file(str(folder / "trainable.safetensors")))
        assert all(all_finite(load_file(str(f))) for f in folder.glob("*.safetensors"))


def test_nan_in_the_base_weights_is_named_at_the_first_step(tmp_path, samples):
    cfg = tiny_config()
    state = random_state_dict(cfg, seed=0)
    name = next(k for k in state if k.endswith("self_attn.q.weight"))
    state[name][0, 0] = float("nan")
    base = tmp_path / "broken_wan.safetensors"
    save_file(state, str(base))
    trainer = Trainer(config(tmp_path / "run", f"model.base={base}", f"model.num_heads={cfg.num_heads}"),
                      dataset=samples)
    with pytest.raises(NonFiniteTraining, match=r"step 1: .*base model's weights hold NaN.*self_attn\.q\.weight"):
        trainer.train()
    assert not list((tmp_path / "run").glob("*.safetensors"))


def test_nan_in_a_training_sample_points_at_the_cache(tmp_path, samples):
    bad = make_samples(1)
    bad[0].latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteTraining, match="noised latents.*rebuild the cache"):
        Trainer(config(tmp_path, "train.max_steps=2"), dataset=bad).train()


# ---------------------------------------------------------------- Ctrl-C


def interrupt_at_call(trainer, call: int, presses: int = 1):
    """Press Ctrl-C (a real SIGINT) `presses` times during the `call`-th loss computation."""
    real, count = trainer.compute_loss, [0]

    def compute_loss(batch):
        count[0] += 1
        if count[0] == call:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return real(batch)

    trainer.compute_loss = compute_loss


def test_ctrl_c_finishes_the_step_saves_it_and_resumes_bit_identically(tmp_path, samples):
    extra = ["train.max_steps=5", "train.gradient_accumulation=2", "conditioning.token_replace_prob=0.5",
             "lora.dropout=0.1", "optim.scheduler=cosine"]
    full = Trainer(config(tmp_path / "full", *extra), dataset=samples)
    full.train()
    split = Trainer(config(tmp_path / "split", *extra), dataset=samples)
    split.setup()
    interrupt_at_call(split, 5)  # first micro-batch of step 3
    with pytest.raises(TrainingInterrupted) as e:
        split.train()
    assert e.value.step == 3 and e.value.checkpoint.name == "step-00000003"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is restored"
    assert not (tmp_path / "split" / "anycrowd_lora.safetensors").exists()
    resumed = Trainer(config(tmp_path / "split", *extra), dataset=samples, resume="latest")
    resumed.train()
    a, b = full.trainable_state(), resumed.trainable_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_ctrl_c_stops_at_once(tmp_path, samples):
    trainer = Trainer(config(tmp_path, "train.max_steps=4"), dataset=samples)
    trainer.setup()
    interrupt_at_call(trainer, 2, presses=2)
    with pytest.raises(KeyboardInterrupt) as e:
        trainer.train()
    assert not isinstance(e.value, TrainingInterrupted)
    assert trainer.step == 1 and not ckpt.list_checkpoints(tmp_path / "checkpoints")


# ---------------------------------------------------------------- damaged checkpoints


@pytest.fixture
def checkpointed(tmp_path, samples):
    """A run stopped after step 3 with checkpoints at steps 1, 2 and 3."""
    Trainer(config(tmp_path, *STEPS), dataset=samples, stop_after=3).train()
    return tmp_path


DAMAGES = {
    "trainable.safetensors": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "optimizer.pt": lambda p: p.write_bytes(b"not a torch file"),
    "state.json": lambda p: p.write_text("{\"step\": 3", encoding="utf-8"),
    "rng_0.pt": lambda p: p.unlink(),
}


@pytest.mark.parametrize("file", sorted(DAMAGES))
def test_resume_latest_skips_a_damaged_checkpoint_and_says_so(checkpointed, samples, file):
    DAMAGES[file](checkpointed / "checkpoints" / "step-00000003" / file)
    logs = []
    trainer = Trainer(config(checkpointed, *STEPS), dataset=samples, resume="latest", log=logs.append)
    trainer.setup()
    assert trainer.step == 2
    assert any("damaged" in line and file in line and "step-00000003" in line for line in logs)


def test_an_explicitly_named_damaged_checkpoint_names_the_file_and_the_others(checkpointed, samples):
    folder = checkpointed / "checkpoints" / "step-00000003"
    DAMAGES["trainable.safetensors"](folder / "trainable.safetensors")
    with pytest.raises(AnyCrowdError, match=r"trainable.safetensors cannot be read.*step-00000001, step-00000002"):
        Trainer(config(checkpointed, *STEPS), dataset=samples, resume=str(folder)).setup()


def test_a_missing_rng_file_is_called_missing_not_a_process_count_problem(checkpointed):
    folder = checkpointed / "checkpoints" / "step-00000003"
    (folder / "rng_0.pt").unlink()
    with pytest.raises(ckpt.CheckpointDamaged, match="rng_0.pt is missing"):
        ckpt.load_checkpoint(folder)
    with pytest.raises(AnyCrowdError, match="same number of processes"):
        ckpt.load_checkpoint(folder, process_index=1)


def test_every_checkpoint_damaged_is_a_clear_error(checkpointed, samples):
    for folder in ckpt.list_checkpoints(checkpointed / "checkpoints"):
        (folder / "state.json").write_text("", encoding="utf-8")
    with pytest.raises(AnyCrowdError, match="every checkpoint in .* is damaged"):
        Trainer(config(checkpointed, *STEPS), dataset=samples, resume="latest").setup()


def test_stop_after_an_earlier_step_than_the_checkpoint_does_nothing(checkpointed, samples):
    before = sorted(p.name for p in (checkpointed / "checkpoints").iterdir())
    trainer = Trainer(config(checkpointed, *STEPS), dataset=samples, resume="latest", stop_after=2)
    assert trainer.train()["step"] == 3
    assert sorted(p.name for p in (checkpointed / "checkpoints").iterdir()) == before


# ---------------------------------------------------------------- the command line


TINY_CLI = ["model.base=random-tiny", "data.source=scenes", "data.scenes.height=48", "data.scenes.widths=[64]",
            "data.scenes.frames=[5]", "data.scenes.max_characters=2", "data.procedural_samples=2", "lora.rank=4",
            "train.progress=false", "train.tensorboard=false"]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_refuses_stop_after_below_one(tmp_path, capsys, value):
    assert run.main([*TINY_CLI, f"output.dir={tmp_path}", "--stop-after", value]) == 2
    assert "--stop-after" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_cli_refuses_an_output_dir_that_is_a_file_before_any_compute(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert run.main([*TINY_CLI, f"output.dir={target}"]) == 2
    assert "output.dir" in capsys.readouterr().err and target.read_text() == "x"


def test_cli_resume_followed_by_overrides_means_latest(tmp_path, capsys):
    assert run.main([*TINY_CLI, f"output.dir={tmp_path}", "train.max_steps=2"]) == 0
    assert run.main([*TINY_CLI, f"output.dir={tmp_path}", "--resume", "train.max_steps=3"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert ckpt.list_checkpoints(tmp_path / "checkpoints")[-1].name == "step-00000003"


def test_cli_prints_the_exact_resume_command_after_ctrl_c(tmp_path, capsys, monkeypatch):
    real = Trainer.compute_loss
    calls = [0]

    def compute_loss(self, batch):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, batch)

    monkeypatch.setattr(Trainer, "compute_loss", compute_loss)
    argv = [*TINY_CLI, f"output.dir={tmp_path}", "train.max_steps=4"]
    assert run.main(argv) == 130
    err = capsys.readouterr().err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("python -m training.run model.base=random-tiny")
    assert command.endswith(f"--resume {tmp_path / 'checkpoints' / 'step-00000002'}")
    monkeypatch.setattr(Trainer, "compute_loss", real)
    import shlex
    assert run.main(shlex.split(command)[3:]) == 0  # the printed command itself finishes the run
    assert (tmp_path / "anycrowd_lora.safetensors").is_file()
