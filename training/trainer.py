"""The training loop: frozen Wan 2.1 VACE + peft LoRA + AGF gates, flow-matching velocity
loss on the video latent frames + lambda * AGF loss, accelerate for devices / precision /
DDP, resumable checkpoints, validation at fixed noise, ComfyUI-format outputs.

Every random draw of a training step comes from one seeded CPU generator whose state is
checkpointed, so a resumed run repeats the uninterrupted one exactly (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anycrowd_core.attention import AnyCrowdAttention, GateBank
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.files import ensure_output_dir
from anycrowd_core.wan import WanVaceConfig, shifted_reference_positions

from . import checkpoint as ckpt
from .config import RunConfig, check_base
from .lora import apply_lora, lora_weights
from .timesteps import sample_sigmas

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- model wrapper


class TrainModule(nn.Module):
    """The frozen DiT with its LoRA layers plus the gate bank, as ONE module so DDP / FSDP
    wrap and synchronise both. forward returns (velocity, AGF loss) for one batch."""

    def __init__(self, wan: nn.Module, gates: GateBank | None):
        super().__init__()
        self.wan = wan
        self.gates = gates

    def forward(self, x, t, context, vace_context, *, layout, mode: str, agf: str, vace_strength: float,
                rope_positions=None, record_agf: bool = False):
        hook = None
        if mode != "global":
            hook = AnyCrowdAttention(layout, mode=mode, agf=agf, gates=self.gates, record_agf_loss=record_agf)
        v = self.wan(x, t, context, vace_context, vace_strength=vace_strength, attention=hook,
                     rope_positions=rope_positions)
        loss = hook.agf_loss().to(v.device) if (hook is not None and record_agf) else v.new_zeros((), dtype=torch.float32)
        if hook is not None:
            hook.seal()  # a checkpointed backward re-runs the blocks with this hook: keep no copies
        return v, loss


# ---------------------------------------------------------------- data order


class ResumableSampler(torch.utils.data.Sampler):
    """Indices of `items` in a seeded permutation per epoch, this process's share
    (`perm[rank::world]`), starting at `position`: the data order survives a resume."""

    def __init__(self, items: Sequence[int], seed: int, rank: int = 0, world: int = 1):
        self.items, self.seed, self.rank, self.world = list(items), seed, rank, world
        self.epoch, self.position = 0, 0

    def set_state(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position

    def epoch_indices(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.items), generator=gen).tolist()
        return [self.items[i] for i in perm][self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.epoch_indices(self.epoch)) - self.position

    def __iter__(self):
        return iter(self.epoch_indices(self.epoch)[self.position :])


def _identity(x):
    return x


@dataclass
class Batch:
    """One micro-batch on the device (B = 1): x_t / target `[1, 16, F, h, w]` (F = R + T_lat),
    t `[1]` or `[1, F]` on Wan's 0..1000 scale, loss_from: first latent frame in the loss."""

    x_t: Tensor
    target: Tensor
    t: Tensor
    context: Tensor
    vace_context: Tensor
    layout: object
    vace_strength: float
    loss_from: int
    rope_positions: Tensor | None
    sigma: float


# ---------------------------------------------------------------- stopping


class NonFiniteTraining(AnyCrowdError):
    """The loss or gradient became NaN/inf: training stopped before applying the step."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: the running step was finished and saved as `checkpoint` (step `step`)."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"interrupted after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


@contextlib.contextmanager
def _stop_on_ctrl_c(log):
    """Yields `requested()`: True once Ctrl-C was pressed. The first Ctrl-C only asks the
    loop to stop after the running step; a second one interrupts at once. Outside the
    main thread (no signal handlers there) requests are never seen."""
    requested = [False]
    if threading.current_thread() is not threading.main_thread():
        yield lambda: requested[0]
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if requested[0]:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        requested[0] = True
        log("\nCtrl-C: finishing this step, then saving a checkpoint (press Ctrl-C again to stop at once).")

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def _agreed(acc, flag: bool) -> bool:
    """Every process stops after the same step: a Ctrl-C seen by any of them counts."""
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor([float(flag)], device=acc.device), reduction="sum").item() > 0)


# ---------------------------------------------------------------- trainer


class Trainer:
    """`Trainer(cfg).train()`; `dataset` may be injected (a Sequence of TrainingSample-like
    objects: latents, vace_context, layout, text_embedding, trim, vace_strength)."""

    def __init__(self, cfg: RunConfig, *, dataset=None, resume: str | None = None, stop_after: int | None = None,
                 accelerator=None, log=print):
        self.cfg, self.resume, self.stop_after, self.log = cfg, resume, stop_after, log
        self._dataset = dataset
        self.accelerator = accelerator
        self.history: list[dict] = []  # per step: loss parts (main process), for tests and summaries
        self.val_history: list[dict] = []

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        """Everything `train` needs, in an order that keeps runs reproducible: the seeds are
        set after the data is loaded and before the model is built, and a resume restores
        state only after the optimiser and the sampler exist."""
        self._make_deterministic()
        self._start_accelerator()
        self._make_output_dir()
        self._load_data()
        self._seed_processes()
        self._build_optimizer(self._build_train_module())
        self._split_samples()
        self.step, self.epoch, self.position = 0, 0, 0
        if self.resume:
            self._resume(self.resume)
        self._open_tensorboard()

    def _make_deterministic(self) -> None:
        if self.cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)

    def _start_accelerator(self) -> None:
        acc = self.accelerator or self._make_accelerator()
        self.accelerator = acc
        if str(getattr(acc, "distributed_type", "")).split(".")[-1] in ("FSDP", "DEEPSPEED"):
            raise AnyCrowdError(
                "This trainer's checkpoints and ComfyUI export read unsharded parameters, so FSDP / DeepSpeed "
                "launches are refused; use DDP (accelerate launch --multi_gpu), which fits Wan 2.1 VACE 14B in bf16 "
                "with gradient checkpointing on 80 GB GPUs (docs/training.md)."
            )

    def _make_output_dir(self) -> None:
        self.out_dir = Path(self.cfg.output.dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        if self.accelerator.is_main_process:  # before any compute: a run must not fail at its first checkpoint
            ensure_output_dir(self.out_dir, "output.dir")

    def _load_data(self) -> None:
        """The base model's config (header checks before anything heavy) and the dataset,
        checked to fit it."""
        self.wan_cfg: WanVaceConfig = check_base(self.cfg.model)
        self.dataset = self._dataset if self._dataset is not None else self._build_dataset()
        self._check_data(self.dataset[0])

    def _seed_processes(self) -> None:
        from accelerate.utils import set_seed

        seed = self.cfg.train.seed
        set_seed(seed)  # same LoRA init on every process
        self.generator = torch.Generator().manual_seed(seed * 7919 + 104729 * self.accelerator.process_index + 1)

    def _build_train_module(self) -> TrainModule:
        """The base model with LoRA adapters (or every weight trainable for `model.training:
        full`) and, for learned AGF, the gate bank."""
        cfg = self.cfg
        wan = self._load_base()
        if cfg.model.gradient_checkpointing:
            wan.enable_gradient_checkpointing(True)
        lo = cfg.lora
        if cfg.model.training == "full":  # every base weight trains (a miniature base from scratch)
            wan.requires_grad_(True)
            self.lora_paths = []
        else:
            self.lora_paths = apply_lora(wan, rank=lo.rank, alpha=lo.alpha, targets=lo.targets,
                                         branches=lo.branches, dropout=lo.dropout, seed=lo.init_seed)
        self.train_gates = cfg.model.attention == "tsda" and cfg.model.agf == "gated"
        gates = None
        if self.train_gates:
            gates = GateBank(self.wan_cfg.dim, self.wan_cfg.num_layers, self.wan_cfg.vace_layers, cfg.model.gate_hidden)
        return TrainModule(wan, gates)

    def _build_optimizer(self, module: TrainModule) -> None:
        """AdamW over the module's trainable parameters (gates in their own group with
        `optim.gate_lr`) and the LR schedule; the module and the optimiser are handed to
        accelerate (`self.module`, `self.optimizer`)."""
        self.param_names = [n for n, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        lora_params = [params[n] for n in self.param_names if not n.startswith("gates.")]
        gate_params = [params[n] for n in self.param_names if n.startswith("gates.")]
        o = self.cfg.optim
        groups = [{"params": lora_params, "lr": o.lr}]
        if gate_params:
            groups.append({"params": gate_params, "lr": o.gate_lr or o.lr})
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        # the scheduler is stepped by hand once per optimiser step (accelerate's wrapper would
        # step it once per process)
        self.module, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.trainable = [p for p in self.module.parameters() if p.requires_grad]

    def _split_samples(self) -> None:
        """Seeded hold-out of `data.val_samples` (within `data.max_samples`) and this
        process's resumable share of the rest."""
        cfg, acc = self.cfg, self.accelerator
        n = len(self.dataset)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
        if cfg.data.max_samples:
            order = order[: cfg.data.max_samples + cfg.data.val_samples]
        if cfg.data.val_samples >= len(order):
            raise AnyCrowdError(
                f"'data.val_samples' is {cfg.data.val_samples} but the dataset has {len(order)} samples: hold out fewer."
            )
        self.val_indices = sorted(order[: cfg.data.val_samples])
        self.train_indices = sorted(order[cfg.data.val_samples :])
        self.sampler = ResumableSampler(self.train_indices, cfg.train.seed, acc.process_index, acc.num_processes)
        if len(self.sampler.epoch_indices(0)) == 0:
            raise AnyCrowdError(
                f"{len(self.train_indices)} training samples for {acc.num_processes} processes: every process needs "
                "at least one; add data or use fewer processes."
            )

    def _open_tensorboard(self) -> None:
        self.writer = None
        if self.cfg.train.tensorboard and self.accelerator.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:
                self.log("tensorboard is not installed: no TensorBoard logs (pip install tensorboard).")

    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        mp = self.cfg.train.mixed_precision
        try:
            # gates of layers without overlapping tokens get no gradient on some steps
            # cpu=True without CUDA makes a torchrun / multi-CPU launch use gloo DDP (MULTI_CPU)
            return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available(),
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        except (ValueError, RuntimeError) as e:
            raise AnyCrowdError(f"accelerate could not start with train.mixed_precision={mp!r}: {e}. "
                                "fp16 needs a CUDA GPU; use bf16 or no.") from e

    def _lr_factor(self, step: int) -> float:
        o, total = self.cfg.optim, self.cfg.train.max_steps
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.scheduler == "cosine":
            span = max(total - o.warmup_steps, 1)
            progress = min(max(step - o.warmup_steps, 0) / span, 1.0)
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def _load_base(self) -> nn.Module:
        from anycrowd_core.wan import load_wan_vace, random_wan_vace

        m = self.cfg.model
        dtype = DTYPES[m.dtype]
        if m.base.startswith("random-"):
            seed = m.random.seed if m.base == "random-tiny" else 0
            return random_wan_vace(self.wan_cfg, seed, dtype=dtype)
        return load_wan_vace(m.base, dtype=dtype, num_heads=m.num_heads)

    def _build_dataset(self):
        from .dataset import CachedSamples

        d = self.cfg.data
        if d.source == "scenes":
            from .scene_samples import SceneSamples, scene_specs

            sc = d.scenes
            specs = scene_specs(d.procedural_samples, seed=self.cfg.train.seed, frames=sc.frames, widths=sc.widths,
                                height=sc.height, min_characters=sc.min_characters,
                                max_characters=sc.max_characters, scenarios=sc.scenarios,
                                cross_driven=sc.cross_driven)
            return SceneSamples(specs, self.wan_cfg.text_dim)
        cache = Path(d.cache_dir) if d.source == "cache" else self._procedural_cache()
        return CachedSamples(cache)

    def _procedural_cache(self) -> Path:
        """Generate the procedural clips and prepare them (test codec, random text embedding of
        the model's text width) under output.dir/procedural; re-runs reuse the cache."""
        from . import prepare, procedural_dataset

        d, acc = self.cfg.data, self.accelerator
        root = self.out_dir / "procedural"
        raw, cache = root / "raw", root / "cache"
        if acc.is_main_process:
            manifest = raw / procedural_dataset.MANIFEST
            params = {"clips": d.procedural_samples, "frames": d.procedural_frames, "height": d.procedural_height,
                      "width": d.procedural_width, "seed": self.cfg.train.seed, "characters": d.procedural_characters}
            stamp = raw / "generated_with.json"
            if manifest.is_file() and (not stamp.is_file() or json.loads(stamp.read_text()) != params):
                # other settings than these clips were made with: make them (and their cache) again
                shutil.rmtree(raw)
                shutil.rmtree(cache, ignore_errors=True)
            if not manifest.is_file():
                procedural_dataset.generate(raw, clips=d.procedural_samples, frames=d.procedural_frames,
                                            height=d.procedural_height, width=d.procedural_width, seed=self.cfg.train.seed,
                                            min_characters=d.procedural_characters, max_characters=d.procedural_characters)
                stamp.write_text(json.dumps(params))
            code = prepare.main([
                "--manifest", str(manifest), "--out", str(cache), "--codec", "test",
                "--width", str(d.procedural_width), "--height", str(d.procedural_height),
                "--frames", str(d.procedural_frames), "--random-text-dim", str(self.wan_cfg.text_dim),
                "--no-progress",
            ])
            if code != 0:
                raise AnyCrowdError(f"preparing the procedural dataset in {cache} failed (exit code {code}); see above.")
        acc.wait_for_everyone()
        return cache

    def _check_data(self, sample) -> None:
        """The cache must fit the base model: latent / VACE channels, text width, token count."""
        c = self.wan_cfg
        lat, vace, text = sample.latents, sample.vace_context, sample.text_embedding
        if lat.ndim != 4 or lat.shape[0] != c.in_dim:
            raise AnyCrowdError(f"Training latents must be [{c.in_dim}, T_lat, h, w], got {tuple(lat.shape)}: rebuild the cache.")
        if vace.shape[0] != c.vace_in_dim or vace.shape[1] != sample.trim + lat.shape[1] or vace.shape[2:] != lat.shape[2:]:
            raise AnyCrowdError(
                f"VACE context {tuple(vace.shape)} does not fit latents {tuple(lat.shape)} with {sample.trim} reference "
                f"frames ({c.vace_in_dim} channels expected): rebuild the cache with training.prepare."
            )
        if text.shape[-1] != c.text_dim:
            raise AnyCrowdError(
                f"The cache's text embedding is {text.shape[-1]} wide but the base model takes {c.text_dim} "
                f"(model.base={self.cfg.model.base!r}): prepare the cache with this model's text encoder "
                f"(umT5, 4096) or, for random tiny models, --random-text-dim {c.text_dim}."
            )
        tokens = (sample.trim + lat.shape[1]) * (lat.shape[2] // 2) * (lat.shape[3] // 2)
        if sample.layout.num_tokens != tokens:
            raise AnyCrowdError(f"The sample's token layout has {sample.layout.num_tokens} tokens, its latents {tokens}: rebuild the cache.")

    # ------------------------------------------------------------ batches and loss

    def make_batch(self, sample, *, train: bool, sigma: float | None = None, noise_seed: int | None = None) -> Batch:
        """Noise one sample. Training draws (in this order, always all of them, from the
        trainer's generator): text / reference / token-replace coins, sigma, noise."""
        cfg, dev = self.cfg, self.accelerator.device
        cond, ts = cfg.conditioning, cfg.timesteps
        r = int(sample.trim)
        latents = sample.latents.float()
        vace = sample.vace_context.float().clone()
        text = sample.text_embedding.float()
        if text.ndim == 2:
            text = text[None]
        x0 = torch.cat([vace[:16, :r], latents], dim=1)  # reference prefix noised like the video (as in ComfyUI)
        frames = x0.shape[1]
        if train:
            gen = self.generator
            coins = torch.rand(3, generator=gen)
            sigma = float(sample_sigmas(1, gen, ts, step=self.step)[0])
            noise = torch.randn(x0.shape, generator=gen)
            drop_text = bool(coins[0] < cond.text_dropout)
            drop_ref = bool(coins[1] < cond.reference_dropout)
            replace = bool(coins[2] < cond.token_replace_prob)
        else:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed or 0))
            drop_text = drop_ref = replace = False
        if drop_text:
            text = torch.zeros_like(text)
        if drop_ref:
            vace[:16, :r] = 0  # neutral (latent-mean) reference; the noised prefix must not leak it either
            x0[:, :r] = 0
        x_t = (1 - sigma) * x0 + sigma * noise
        target = noise - x0
        loss_from = r
        if replace:
            k = min(cond.token_replace_frames, latents.shape[1] - 1)
            x_t[:, r : r + k] = x0[:, r : r + k]  # known frames clean at t = 0, excluded from the loss
            t = torch.full((1, frames), sigma * 1000.0)
            t[:, r : r + k] = 0.0
            loss_from = r + k
        else:
            t = torch.tensor([sigma * 1000.0])
        rope = (shifted_reference_positions(r, frames, latents.shape[2] // 2, latents.shape[3] // 2)
                if cfg.model.shifted_rope else None)
        return Batch(
            x_t=x_t[None].to(dev), target=target[None].to(dev), t=t.to(dev), context=text.to(dev),
            vace_context=vace[None].to(dev), layout=sample.layout.to(dev),
            vace_strength=float(getattr(sample, "vace_strength", 1.0) * cfg.model.vace_strength),
            loss_from=loss_from, rope_positions=None if rope is None else rope.to(dev), sigma=sigma,
        )

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(total, flow-matching MSE on the video frames after loss_from, AGF loss)."""
        m = self.cfg.model
        record = (self.train_gates and self.cfg.loss.agf_weight > 0 and batch.layout.soft_labels is not None)
        v, agf = self.module(batch.x_t, batch.t, batch.context, batch.vace_context, layout=batch.layout,
                             mode=m.attention, agf=m.agf, vace_strength=batch.vace_strength,
                             rope_positions=batch.rope_positions, record_agf=record)
        fm = F.mse_loss(v[:, :, batch.loss_from :].float(), batch.target[:, :, batch.loss_from :].float())
        agf = agf.float()
        return fm + self.cfg.loss.agf_weight * agf, fm, agf

    # ------------------------------------------------------------ loop

    def _next_sample(self):
        while True:
            if getattr(self, "_iter", None) is None:
                self.sampler.set_state(self.epoch, self.position)
                # own generator: a DataLoader iterator otherwise draws its base seed from the global
                # torch RNG (which LoRA dropout uses), and a resume creates one more iterator
                loader = torch.utils.data.DataLoader(
                    self.dataset, batch_size=None, sampler=self.sampler, num_workers=self.cfg.data.num_workers,
                    collate_fn=_identity, generator=torch.Generator().manual_seed(self.cfg.train.seed + self.epoch),
                )
                self._iter = iter(loader)
            try:
                sample = next(self._iter)
                self.position += 1
                return sample
            except StopIteration:
                self._iter = None
                self.epoch, self.position = self.epoch + 1, 0

    def train(self) -> dict:
        """Run to train.max_steps (or `stop_after`); returns a summary dict.

        Ctrl-C finishes the running step, saves a checkpoint and raises TrainingInterrupted
        (a second Ctrl-C stops at once, keeping the last complete checkpoint). A non-finite
        loss or gradient raises NonFiniteTraining before the step is applied or saved."""
        if not hasattr(self, "module"):
            self.setup()
        cfg, acc = self.cfg, self.accelerator
        stop = min(cfg.train.max_steps, self.stop_after or cfg.train.max_steps)
        if self.step >= stop and self.stop_after is not None and self.stop_after < cfg.train.max_steps:
            self.log(f"already at step {self.step} (--stop-after {self.stop_after}): nothing to train.")
            return {"step": self.step, "checkpoint": None, "outputs": {}, "steps_per_s": 0.0, "last_loss": None}
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=self.step, disable=not (cfg.train.progress and acc.is_main_process),
                   desc="train", dynamic_ncols=True)
        self.module.train()
        started, first_step = time.perf_counter(), self.step
        with _stop_on_ctrl_c(self.log) as stop_requested:
            while self.step < stop:
                self._train_step(bar, started, first_step, stop)
                if _agreed(acc, stop_requested()):
                    bar.close()
                    raise TrainingInterrupted(self.step, self.save_checkpoint())
        bar.close()
        final = self.save_checkpoint()
        outputs = self.export(self.out_dir) if self.step >= cfg.train.max_steps else {}
        if self.writer is not None:
            self.writer.flush()
        elapsed = time.perf_counter() - started
        return {
            "step": self.step, "checkpoint": str(final), "outputs": {k: str(v) for k, v in outputs.items()},
            "steps_per_s": (self.step - first_step) / elapsed if elapsed > 0 else 0.0,
            "last_loss": self.history[-1]["loss"] if self.history else None,
        }

    def _train_step(self, bar, started: float, first_step: int, stop: int) -> None:
        """One optimiser step over gradient_accumulation micro-batches, then logging,
        validation and periodic checkpoints."""
        cfg, acc = self.cfg, self.accelerator
        accum = cfg.train.gradient_accumulation
        totals = torch.zeros(3)
        sigmas = []
        for micro in range(accum):
            batch = self.make_batch(self._next_sample(), train=True)
            sigmas.append(batch.sigma)
            sync = contextlib.nullcontext() if micro == accum - 1 else acc.no_sync(self.module)
            with sync:
                loss, fm, agf = self.compute_loss(batch)
                acc.backward(loss / accum)
            totals += torch.stack([loss.detach(), fm.detach(), agf.detach()]).float().cpu() / accum
        # fp16's grad scaler expects overflowing steps and skips them itself
        guard = acc.scaler is None
        if guard and not torch.isfinite(totals).all():
            self._stop_non_finite(f"loss is {float(totals[0])} (flow matching {float(totals[1])}, AGF {float(totals[2])})", batch)
        grad_norm = acc.clip_grad_norm_(self.trainable, cfg.optim.max_grad_norm or float("inf"))
        if guard and grad_norm is not None and not math.isfinite(float(grad_norm)):
            self._stop_non_finite(f"gradient norm is {float(grad_norm)}", batch)
        lr_used = float(self.scheduler.get_last_lr()[0])  # the rate of this step, logged below
        self.optimizer.step()
        if not acc.optimizer_step_was_skipped:  # fp16: the grad scaler skips overflowing steps
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals = acc.reduce(totals.to(acc.device), reduction="mean").cpu()
        record = {"step": self.step, "loss": float(totals[0]), "fm": float(totals[1]), "agf": float(totals[2]),
                  "lr": lr_used, "sigma": sum(sigmas) / len(sigmas), "time": time.perf_counter()}
        self.history.append(record)
        elapsed = time.perf_counter() - started
        speed = (self.step - first_step) / elapsed if elapsed > 0 else 0.0
        bar.set_postfix(loss=f"{record['loss']:.4f}", agf=f"{record['agf']:.3f}", it_s=f"{speed:.2f}")
        bar.update(1)
        if self.writer is not None and (self.step % max(cfg.train.log_every, 1) == 0 or self.step == stop):
            for key in ("loss", "fm", "agf", "lr", "sigma"):
                self.writer.add_scalar(f"train/{key}", record[key], self.step)
            self.writer.add_scalar("train/steps_per_s", speed, self.step)
        if cfg.train.val_every and self.step % cfg.train.val_every == 0:
            self.validate()
        if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0 and self.step < stop:
            self.save_checkpoint()

    def _stop_non_finite(self, what: str, batch: Batch) -> None:
        """Raise NonFiniteTraining naming the likely cause; nothing of this step is applied."""
        self.optimizer.zero_grad(set_to_none=True)
        step, cfg = self.step + 1, self.cfg
        inputs = {"noised latents": batch.x_t, "text embedding": batch.context, "VACE context": batch.vace_context}
        bad_inputs = [name for name, t in inputs.items() if not torch.isfinite(t).all()]
        module = self._unwrapped()
        trainable = set(self.param_names)
        bad_weights = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
        # named as in the checkpoint file (no peft wrapper names)
        bad_base = [n.removeprefix("wan.").replace(".base_layer", "") for n in bad_weights if n not in trainable]
        if bad_inputs:
            cause = (f"the training sample's {', '.join(bad_inputs)} hold NaN/inf: rebuild the cache with "
                     "`python -m training.prepare` (and check the source videos)")
        elif bad_base:
            cause = (f"the base model's weights hold NaN/inf ({', '.join(bad_base[:3])}"
                     f"{', ...' if len(bad_base) > 3 else ''}): re-download or re-convert model.base={cfg.model.base!r}")
        elif bad_weights:
            cause = (f"the trained weights diverged ({len(bad_weights)} tensors are NaN/inf): lower optim.lr "
                     f"(now {cfg.optim.lr:g}) and keep optim.max_grad_norm set")
        else:
            cause = (f"the forward pass overflowed: lower optim.lr (now {cfg.optim.lr:g})"
                     + (", or train in bf16 instead of fp16" if cfg.train.mixed_precision == "fp16" else "")
                     + (", or use model.dtype=bf16/fp32" if cfg.model.dtype == "fp16" else ""))
        found = ckpt.list_checkpoints(self.ckpt_dir)
        kept = (f"The last good checkpoint is {found[-1]}; fix the cause, then resume from it with --resume."
                if found else "No checkpoint had been written yet; fix the cause and start again.")
        raise NonFiniteTraining(
            f"Training stopped at step {step}: the {what}. Nothing of this step was applied or saved, and no "
            f"adapter was written. Likely cause: {cause}. {kept}"
        )

    @torch.no_grad()
    def evaluate(self, indices: Sequence[int]) -> dict:
        """Mean (loss, fm, agf) over `indices` x train.val_sigmas with noise seeded per
        (sample, sigma) and no dropout: the same numbers for the same weights, on any number
        of processes (each takes its share, the sums are reduced). Consumes no training RNG."""
        acc, cfg = self.accelerator, self.cfg
        was_training = self.module.training
        self.module.eval()
        sums = torch.zeros(4)
        for i in list(indices)[acc.process_index :: acc.num_processes]:
            sample = self.dataset[i]
            for j, sigma in enumerate(cfg.train.val_sigmas):
                batch = self.make_batch(sample, train=False, sigma=float(sigma),
                                        noise_seed=cfg.train.seed * 1_000_003 + 1009 * i + j)
                loss, fm, agf = self.compute_loss(batch)
                sums += torch.stack([loss.float().cpu(), fm.float().cpu(), agf.float().cpu(), torch.tensor(1.0)])
        sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
        self.module.train(was_training)
        total = max(float(sums[3]), 1.0)
        return {"step": self.step, "loss": float(sums[0]) / total, "fm": float(sums[1]) / total, "agf": float(sums[2]) / total}

    def validate(self) -> dict:
        """evaluate() on the held-out samples, logged to TensorBoard and printed."""
        result = self.evaluate(self.val_indices)
        self.val_history.append(result)
        if self.writer is not None:
            for key in ("loss", "fm", "agf"):
                self.writer.add_scalar(f"val/{key}", result[key], self.step)
        if self.accelerator.is_main_process:
            self.log(f"step {self.step}: validation loss {result['loss']:.5f} (fm {result['fm']:.5f}, agf {result['agf']:.4f})")
        return result

    # ------------------------------------------------------------ checkpoints and outputs

    def _unwrapped(self) -> TrainModule:
        return self.accelerator.unwrap_model(self.module)

    def trainable_state(self) -> dict[str, Tensor]:
        params = dict(self._unwrapped().named_parameters())
        return {n: params[n].detach().float().cpu() for n in self.param_names}

    def save_checkpoint(self) -> Path:
        from .checkpoint import TrainState, capture_rng

        state = TrainState(step=self.step, epoch=self.epoch, position=self.position, config_hash=self.cfg.hash(),
                           num_processes=self.accelerator.num_processes)
        return ckpt.save_checkpoint(
            self.ckpt_dir, self.accelerator, state,
            trainable=self.trainable_state(), optimizer_state=self.optimizer.state_dict(),
            scheduler_state={"scheduler": self.scheduler.state_dict(),
                             "grad_scaler": None if self.accelerator.scaler is None else self.accelerator.scaler.state_dict()},
            # data position is per process too: shards differ in length when samples % processes != 0
            rng={**capture_rng(self.generator), "data_epoch": self.epoch, "data_position": self.position},
            extra=lambda folder: self.export(folder), keep=self.cfg.train.keep_checkpoints,
        )

    def _resume(self, spec: str) -> None:
        """Restore `spec` ('latest' or a folder). With 'latest', a damaged newest checkpoint
        (truncated file, disk full) falls back to the previous complete one, and says so."""
        path = ckpt.resolve_checkpoint(spec, self.ckpt_dir)
        if spec != ckpt.LATEST:
            try:
                return self._restore(path)
            except ckpt.CheckpointDamaged as e:
                others = [p.name for p in ckpt.list_checkpoints(self.ckpt_dir) if p.resolve() != path.resolve()]
                raise AnyCrowdError(
                    f"{e} Resume from another checkpoint instead"
                    + (f" (available in {self.ckpt_dir}: {', '.join(others)}; or --resume latest)" if others else "")
                    + ", or start a new run without --resume."
                ) from None
        candidates = [path] + [p for p in reversed(ckpt.list_checkpoints(self.ckpt_dir)) if p.resolve() != path.resolve()]
        damaged = []
        for candidate in candidates:
            try:
                self._restore(candidate)
            except ckpt.CheckpointDamaged as e:
                damaged.append(str(e))
                continue
            if damaged and self.accelerator.is_main_process:
                self.log("skipped damaged checkpoint(s), resumed from the previous complete one:\n  "
                         + "\n  ".join(damaged))
            return
        raise AnyCrowdError(
            f"--resume latest: every checkpoint in {self.ckpt_dir} is damaged:\n  " + "\n  ".join(damaged)
            + "\nStart a new run without --resume (or a new output.dir)."
        )

    def _restore(self, path: Path) -> None:
        from .checkpoint import load_checkpoint, restore_rng

        acc = self.accelerator
        c = load_checkpoint(path, acc.process_index)
        if c.state.config_hash != self.cfg.hash():
            raise AnyCrowdError(
                f"{path} was written with different training settings (config hash {c.state.config_hash}, now "
                f"{self.cfg.hash()}): resume with the run's own config, or start a new output.dir."
            )
        if c.state.num_processes != acc.num_processes:
            raise AnyCrowdError(
                f"{path} was written by {c.state.num_processes} process(es), this run has {acc.num_processes}: the data "
                "order and RNG states are per process; resume with the same number of processes."
            )
        params = dict(self._unwrapped().named_parameters())
        missing = [n for n in self.param_names if n not in c.trainable]
        if missing:
            raise AnyCrowdError(f"{path} lacks trainable weights {missing[:3]}: it is from another LoRA / gate setup.")
        with torch.no_grad():
            for n in self.param_names:
                params[n].copy_(c.trainable[n].to(params[n].dtype))
        self.optimizer.load_state_dict(c.optimizer_state)
        self.scheduler.load_state_dict(c.scheduler_state["scheduler"])
        if acc.scaler is not None and c.scheduler_state.get("grad_scaler") is not None:
            acc.scaler.load_state_dict(c.scheduler_state["grad_scaler"])
        restore_rng(c.rng, self.generator)
        self.step = c.state.step
        self.epoch = int(c.rng.get("data_epoch", c.state.epoch))
        self.position = int(c.rng.get("data_position", c.state.position))
        self._iter = None
        if acc.is_main_process:
            self.log(f"resumed from {path} at step {self.step} (epoch {self.epoch}, position {self.position})")

    def export(self, folder: Path) -> dict[str, Path]:
        """Write `<name>_lora.safetensors` (+ `<name>_gates.safetensors`) into `folder` (main
        process); with model.training=full the whole model as `<name>.safetensors` instead."""
        from anycrowd_core.adapter_base import adapter_base
        from .export import save_full_model, save_gates, save_lora

        if not self.accelerator.is_main_process:
            return {}
        cfg, module = self.cfg, self._unwrapped()
        extra = {"attention": cfg.model.attention, "agf": cfg.model.agf, "step": str(self.step),
                 "targets": ",".join(cfg.lora.targets), "branches": ",".join(cfg.lora.branches),
                 "shifted_rope": str(cfg.model.shifted_rope).lower()}
        folder, name, config_hash = Path(folder), cfg.output.name, cfg.hash()
        # what the adapter was trained on, for AnyCrowd Load Adapter's family / expert checks
        base = adapter_base(self.wan_cfg, cfg.model.family, cfg.model.expert, cfg.model.base)
        if cfg.model.training == "full":
            out = {"model": save_full_model(folder / f"{name}.safetensors", module.wan, config_hash=config_hash,
                                            extra=extra, base=base)}
        else:
            out = {"lora": save_lora(folder / f"{name}_lora.safetensors", lora_weights(module.wan), self.wan_cfg,
                                     rank=cfg.lora.rank, alpha=cfg.lora.alpha, config_hash=config_hash, extra=extra,
                                     base=base)}
        if module.gates is not None:
            out["gates"] = save_gates(folder / f"{name}_gates.safetensors", module.gates, self.wan_cfg,
                                      config_hash=config_hash, extra=extra, base=base)
        return out


__all__ = ["Batch", "NonFiniteTraining", "ResumableSampler", "TrainModule", "Trainer", "TrainingInterrupted"]
