"""Helpers for tests that run against a real ComfyUI host (COMFYUI_PATH set).

Import in tests as `from comfy_host import requires_comfyui, import_comfy, tiny_vace_patcher, ...`.
Tiny random Wan 2.1 VACE checkpoints go through ComfyUI's own loader (`comfy.sd`), so the
MODEL they give is exactly what Load Diffusion Model hands our nodes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from anycrowd_core.wan import WanVaceConfig, random_state_dict

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")

requires_comfyui = pytest.mark.skipif(
    not COMFYUI_PATH,
    reason="needs a ComfyUI host: set COMFYUI_PATH to a ComfyUI checkout (tested with 0.3.64) "
    "and run with its Python environment",
)

# ComfyUI's Wan detection fixes head_dim 128 and text_dim 4096: dim 256 is the smallest
# width it detects (2 heads); the rest is as small as the loader allows.
TINY_VACE = dict(dim=256, ffn_dim=256, num_heads=2, num_layers=4, vace_layers=2)


def import_comfy():
    """Make ComfyUI importable on this CPU host and return the `comfy` package (idempotent).

    Also imports comfy.sd, comfy.model_management, comfy.sample, comfy.samplers, comfy.utils
    and node_helpers, which the node functions import lazily.
    """
    if not COMFYUI_PATH:
        pytest.skip("COMFYUI_PATH is not set")
    if sys.path[0] != COMFYUI_PATH:
        if COMFYUI_PATH in sys.path:
            sys.path.remove(COMFYUI_PATH)
        sys.path.insert(0, COMFYUI_PATH)
    if "comfy.model_management" not in sys.modules:
        from comfy.cli_args import args

        args.cpu = True  # must precede comfy.model_management's import: no GPU probing on CPU hosts
    import comfy
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    import node_helpers  # noqa: F401

    return comfy


def tiny_vace_config(**config) -> WanVaceConfig:
    """The tiny VACE config ComfyUI detects (see TINY_VACE), with overrides."""
    return WanVaceConfig(**{**TINY_VACE, **config})


def tiny_vace_state_dict(seed: int = 0, **config) -> dict:
    """Random checkpoint with the `model.diffusion_model.` prefix ComfyUI's files carry."""
    return random_state_dict(tiny_vace_config(**config), seed=seed, prefix="model.diffusion_model.")


def tiny_vace_patcher(seed: int = 0, **config):
    """A ComfyUI ModelPatcher (model type WAN21_Vace, float32, CPU) for a tiny random model."""
    comfy = import_comfy()
    patcher = comfy.sd.load_diffusion_model_state_dict(
        tiny_vace_state_dict(seed, **config), model_options={"dtype": torch.float32}
    )
    assert patcher is not None and type(patcher.model).__name__ == "WAN21_Vace", "ComfyUI did not detect Wan VACE"
    return patcher


def tiny_vace_state_dict_file(tmp_dir, seed: int = 0, name: str = "tiny_wan_vace.safetensors", **config) -> Path:
    """Write the tiny checkpoint to `tmp_dir/name` (for loader-node tests) and return its path."""
    from safetensors.torch import save_file

    path = Path(tmp_dir) / name
    save_file({k: v.contiguous() for k, v in tiny_vace_state_dict(seed, **config).items()}, str(path))
    return path


def load_pack_with_comfy():
    """Our package loaded as a custom node with ComfyUI importable, so node functions can run
    their lazily imported comfy code: `pack = load_pack_with_comfy(); pack.nodes.<module>`."""
    import_comfy()
    from pack import load_pack

    return load_pack()


def assert_progress_reaches(calls, total: int) -> None:
    """Progress reported to ComfyUI's hook as (value, total) pairs, checked for what holds under
    the throttling newer ComfyUI applies (comfy.utils.ProgressBar sends the first update, the
    last and previews always, others at most every 100 ms / 0.5 %): among the updates for
    `total`, the first is step 1, values rise strictly, and the last one is `total`."""
    values = [value for value, t in calls if t == total]
    assert values, f"no progress update for a total of {total}: {calls}"
    assert values[0] == 1 and values[-1] == total, values
    assert all(a < b for a, b in zip(values, values[1:])), values


class FakeServer:
    """The part of ComfyUI's PromptServer that `execution.PromptExecutor` calls: collects the
    messages a run sends (progress, executed, errors) for the host tests to read."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def execute_prompt(prompt: dict):
    """Run an API prompt the way the server does: ComfyUI's own `validate_prompt`, then
    `execution.PromptExecutor` (with a FakeServer); asserts it validated and ran with no
    execution error, and returns the executor. Register the nodes it needs first."""
    import asyncio
    import uuid

    import execution

    prompt_id = str(uuid.uuid4())
    valid, error, good_outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    assert valid, (error, node_errors)
    executor = execution.PromptExecutor(FakeServer())
    executor.execute(prompt, prompt_id, {}, good_outputs)
    failures = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success and not failures, failures
    return executor
