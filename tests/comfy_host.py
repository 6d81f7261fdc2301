"""Helpers for tests that run against a real ComfyUI host (COMFYUI_PATH set).

Import in tests as `from comfy_host import requires_comfyui, import_comfy, tiny_vace_patcher, ...`.
Tiny random Wan 2.1 VACE checkpoints go through ComfyUI's own loader (`comfy.sd`), so the
MODEL they give is exactly what Load Diffusion Model hands our nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import contextmanager
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


def comfy_node_registry():
    """ComfyUI's own top-level `nodes` module (ours is `comfyui_anycrowd.nodes`) with the extra
    nodes (Get Video Components, Create Video ...) registered, as the server has it."""
    import_comfy()  # COMFYUI_PATH first again: loading a model puts ComfyUI's comfy/ (with utils.py) on sys.path
    import utils.install_util  # noqa: F401  (ComfyUI's server imports it before the extras)
    import nodes as comfy_nodes

    if "GetVideoComponents" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return comfy_nodes


def load_as_custom_node(folder: Path, keys):
    """Load the repository through ComfyUI's own custom-node loader from a link named
    `ComfyUI-AnyCrowd` (hyphenated, as users clone it) in `folder`. Asserts that ComfyUI loaded it
    and registered each node of `keys` as the real node (not the MISSING_DEPENDENCY placeholder)
    from a module named by that path; returns ComfyUI's node registry."""
    from pack import REPO

    registry = comfy_node_registry()
    link = Path(folder) / "ComfyUI-AnyCrowd"
    link.symlink_to(REPO, target_is_directory=True)
    assert asyncio.run(registry.load_custom_node(str(link), module_parent="custom_nodes")) is True
    for key in keys:
        cls = registry.NODE_CLASS_MAPPINGS[key]
        assert not hasattr(cls, "MISSING_DEPENDENCY"), key
        assert "ComfyUI-AnyCrowd.nodes." in cls.__module__  # ComfyUI names the module by its path
    return registry


def text_conditioning(seed: int, length: int = 6):
    """A seeded CONDITIONING of umT5-XXL's width (4096, fixed by ComfyUI's Wan detection)."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, 4096, generator=gen) * 0.1, {}]]


class TestTextEncode:
    """Test-only stand-in for Load CLIP + CLIP Text Encode: umT5-XXL (5.7B parameters, fixed
    config in ComfyUI) cannot be randomised here; gives a seeded [1, 6, 4096] CONDITIONING."""

    __test__ = False
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True})}}

    def encode(self, text):
        return (text_conditioning(sum(text.encode()) % 1000),)


class TestVAELoader:
    """Test-only stand-in for Load VAE: returns TestVAE (ComfyUI's VAE API around TestCodec)."""

    __test__ = False
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ("STRING", {})}}

    def load(self, vae_name):
        from comfy_vae_stand_in import TestVAE

        return (TestVAE(),)


STAND_IN_NODES = {"AnyCrowdTestTextEncode": TestTextEncode, "AnyCrowdTestVAELoader": TestVAELoader}


def with_stand_in_encoders(prompt: dict) -> dict:
    """A copy of an API prompt with Load CLIP dropped, each CLIP Text Encode a TestTextEncode
    and Load VAE a TestVAELoader (STAND_IN_NODES, registered by run_api_prompt)."""
    p = json.loads(json.dumps(prompt))
    for nid, node in list(p.items()):
        if node["class_type"] == "CLIPLoader":
            del p[nid]
        elif node["class_type"] == "CLIPTextEncode":
            p[nid] = {"class_type": "AnyCrowdTestTextEncode", "inputs": {"text": node["inputs"]["text"]}}
        elif node["class_type"] == "VAELoader":
            node["class_type"] = "AnyCrowdTestVAELoader"
    return p


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


@contextmanager
def progress_calls():
    """ComfyUI's progress-bar hook set to record each update as (value, total) in the yielded list;
    the hook and the interrupt flag are reset afterwards."""
    import comfy.model_management as mm
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        yield calls
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def cancel_at_first_progress(calls: list) -> None:
    """From now on the progress hook records into `calls` and presses Cancel at the first update,
    as ComfyUI's Cancel button does (interrupt_current_processing)."""
    import comfy.model_management as mm
    import comfy.utils

    def cancel(value, total, preview, node_id=None):
        calls.append((value, total))
        mm.interrupt_current_processing(True)

    calls.clear()
    comfy.utils.set_progress_bar_global_hook(cancel)


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


@contextmanager
def prompt_environment(pack, registry, inputs: Path, outputs: Path, extra_nodes: dict | None = None,
                       model_folders: dict | None = None):
    """For one executor run: the pack's nodes (and `extra_nodes`) registered in ComfyUI's node
    `registry` where missing, folder_paths' input / output folders set to `inputs` / `outputs`,
    and `model_folders` ({folder name: path}) added; all undone afterwards."""
    import folder_paths

    old_in, old_out = folder_paths.get_input_directory(), folder_paths.get_output_directory()
    for name, path in (model_folders or {}).items():
        folder_paths.add_model_folder_path(name, str(path))
    folder_paths.set_input_directory(str(inputs))
    folder_paths.set_output_directory(str(outputs))
    added = dict(extra_nodes or {})
    registered = {k: v for k, v in pack.NODE_CLASS_MAPPINGS.items() if k not in registry.NODE_CLASS_MAPPINGS}
    registry.NODE_CLASS_MAPPINGS.update({**added, **registered})
    try:
        yield
    finally:
        for key in list(added) + list(registered):
            registry.NODE_CLASS_MAPPINGS.pop(key, None)
        folder_paths.set_input_directory(old_in)
        folder_paths.set_output_directory(old_out)
        for name, path in (model_folders or {}).items():
            paths = folder_paths.folder_names_and_paths[name][0]
            if str(path) in paths:
                paths.remove(str(path))


def run_api_prompt(pack, prompt: dict, inputs: Path, outputs: Path, models: dict | None = None):
    """Run an API prompt through ComfyUI's executor (execute_prompt) with the pack's nodes and the
    stand-in encoders (STAND_IN_NODES) registered, `inputs` / `outputs` as ComfyUI's input and
    output folders and `models` ({folder name: path}) added; all undone afterwards. Returns the
    executor."""
    with prompt_environment(pack, comfy_node_registry(), inputs, outputs, STAND_IN_NODES, models):
        return execute_prompt(prompt)
