"""Atomic, resumable training checkpoints: trainable weights, optimiser, scheduler, RNG
states of every process, data order (epoch + position) and the step.

A checkpoint is a folder `step-XXXXXXXX` written as `.tmp-step-XXXXXXXX` (every file
fsynced) and renamed when complete, so a crash leaves either the old or the new one.
No pickle: tensors in safetensors, the rest in torch.load(weights_only=True) files and JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from anycrowd_core.errors import AnyCrowdError

LATEST = "latest"
STEP_DIR = re.compile(r"^step-(\d{8})$")


class Processes(Protocol):
    """The part of accelerate.Accelerator checkpointing uses."""

    is_main_process: bool
    process_index: int
    num_processes: int

    def wait_for_everyone(self) -> None: ...


class SingleProcess:
    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self) -> None:
        pass


@dataclass
class TrainState:
    """Where the run stands after `step` optimiser steps: the main process's data sampler is
    in `epoch` at `position` (samples consumed in that epoch); every process's own data
    position is stored with its RNG state (`rng_<rank>.pt`: data_epoch, data_position)."""

    step: int
    epoch: int
    position: int
    config_hash: str
    num_processes: int


# ---------------------------------------------------------------- RNG states (no pickle)


def capture_rng(generator: torch.Generator) -> dict:
    """Python, numpy, torch (CPU + CUDA) and the trainer's own generator, as tensors / plain values."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python_version": version,
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_name": name,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": float(cached),
        "torch": torch.get_rng_state(),
        "trainer": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()), state["python_gauss"]))
    np.random.set_state((
        state["numpy_name"], state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
        state["numpy_has_gauss"], state["numpy_cached"],
    ))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["trainer"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- writing


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    procs: Processes,
    state: TrainState,
    *,
    trainable: dict[str, Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    rng: dict,
    extra: Callable[[Path], None] | None = None,
    keep: int = 3,
) -> Path:
    """Write `root/step-XXXXXXXX` atomically; every process calls this (each saves its RNG).

    `trainable`, `optimizer_state`, `scheduler_state` and `extra(tmp_dir)` (e.g. the
    ComfyUI adapter files) are written by the main process. Keeps the newest `keep`
    checkpoints and points `root/latest` at the new one. Returns the final folder.
    """
    from safetensors.torch import save_file

    root = Path(root)
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-step-{state.step:08d}"
    if procs.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    procs.wait_for_everyone()
    written = [tmp / f"rng_{procs.process_index}.pt"]
    torch.save(rng, written[0])
    if procs.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler_state, tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        written = [p for p in tmp.iterdir() if p.is_file()]
    for path in written:
        _fsync_file(path)
    procs.wait_for_everyone()
    if procs.is_main_process:
        _fsync_dir(tmp)
        if final.exists():  # a re-run of the same step replaces the old copy
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        pointer = root / f".{LATEST}.tmp"
        pointer.write_text(final.name, encoding="utf-8")
        os.replace(pointer, root / LATEST)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    procs.wait_for_everyone()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


# ---------------------------------------------------------------- reading


@dataclass
class Checkpoint:
    """A checkpoint read back for one process."""

    path: Path
    state: TrainState
    trainable: dict[str, Tensor]
    optimizer_state: dict
    scheduler_state: dict
    rng: dict


def resolve_checkpoint(spec: str, root: Path) -> Path:
    """'latest' -> the newest complete checkpoint under `root`; otherwise a checkpoint folder."""
    root = Path(root)
    if spec == LATEST:
        pointer = root / LATEST
        if pointer.is_file() and (root / pointer.read_text(encoding="utf-8").strip()).is_dir():
            return root / pointer.read_text(encoding="utf-8").strip()
        found = list_checkpoints(root)
        if not found:
            raise AnyCrowdError(f"--resume latest: no checkpoint in {str(root)!r}; start without --resume or pass a folder.")
        return found[-1]
    path = Path(spec)
    if not (path / "state.json").is_file():
        raise AnyCrowdError(
            f"--resume {spec!r} is not a complete checkpoint folder (no state.json); pass a "
            f"'step-XXXXXXXX' folder from {str(root)!r} or 'latest'."
        )
    return path


class CheckpointDamaged(AnyCrowdError):
    """A checkpoint file is missing, truncated or unreadable (e.g. the disk filled up or a
    file was copied half-way); `file` names it."""

    def __init__(self, message: str, file: Path):
        super().__init__(message)
        self.file = file


def _read(path: Path, reader: Callable, what: str):
    if not path.is_file():
        raise CheckpointDamaged(f"{path} is missing ({what}): the checkpoint is incomplete.", path)
    try:
        return reader(path)
    except Exception as e:  # any reader's failure on a damaged file: json, safetensors, torch.load
        raise CheckpointDamaged(f"{path} cannot be read ({what}: {type(e).__name__}: {str(e)[:160]}).", path) from None


def load_checkpoint(path: Path, process_index: int = 0) -> Checkpoint:
    """Read one process's view of a checkpoint. CheckpointDamaged names an unreadable file;
    AnyCrowdError says when the checkpoint came from a different number of processes."""
    from safetensors.torch import load_file

    path = Path(path)

    def read_state(p: Path) -> TrainState:
        return TrainState(**json.loads(p.read_text(encoding="utf-8")))

    state = _read(path / "state.json", read_state, "step, data position and settings hash")
    rng_file = path / f"rng_{process_index}.pt"
    if process_index >= state.num_processes:
        raise AnyCrowdError(
            f"{path} was written by {state.num_processes} process(es) and has no RNG state for process "
            f"{process_index}: resume with the same number of processes."
        )

    def torch_file(p: Path):
        return torch.load(p, weights_only=True)

    return Checkpoint(
        path=path,
        state=state,
        trainable=_read(path / "trainable.safetensors", lambda p: load_file(str(p)), "trainable weights"),
        optimizer_state=_read(path / "optimizer.pt", torch_file, "optimiser state"),
        scheduler_state=_read(path / "scheduler.pt", torch_file, "learning-rate schedule"),
        rng=_read(rng_file, torch_file, f"random-number state of process {process_index}"),
    )
