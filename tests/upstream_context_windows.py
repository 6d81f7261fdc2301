"""A test-side restatement of today's ComfyUI context windows (v0.39, Oct 2026), for tests
where no such host runs. Read from Comfy-Org/ComfyUI source; each piece names the file and
function it restates. Only what a Wan VACE latent ([B, 16, T, h, w], windows on dim 2,
one modality, no guide frames) goes through is restated, line for line in behaviour; the cond
walk that both restated versions of get_resized_cond make is written once (resize_model_conds).

Not ComfyUI code: written here from reading it, to pin the interface our patch follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


class IndexListContextWindow:
    """comfy/context_windows.py, IndexListContextWindow (__init__, get_tensor, add_window)."""

    def __init__(self, index_list, dim=0, total_frames=0, modality_windows=None, context_overlap=0):
        self.index_list = index_list
        self.context_length = len(index_list)
        self.context_overlap = context_overlap
        self.dim = dim
        self.total_frames = total_frames
        self.center_ratio = (min(index_list) + max(index_list)) / (2 * total_frames)
        self.modality_windows = modality_windows

    def get_tensor(self, full, device=None, dim=None, retain_index_list=[]):
        if dim is None:
            dim = self.dim
        if dim == 0 and full.shape[dim] == 1:
            return full
        indices = self.index_list
        anchor_idx = getattr(self, "causal_anchor_index", None)
        if anchor_idx is not None and anchor_idx >= 0:
            indices = [anchor_idx] + list(indices)
        idx = tuple([slice(None)] * dim + [indices])
        window = full[idx]
        if retain_index_list:
            idx = tuple([slice(None)] * dim + [retain_index_list])
            window[idx] = full[idx]
        return window.to(device)

    def add_window(self, full, to_add, dim=None):
        if dim is None:
            dim = self.dim
        idx = tuple([slice(None)] * dim + [self.index_list])
        full[idx] += to_add
        return full


def slice_cond(cond_value, window, x_in, device, temporal_dim, temporal_scale=1, temporal_offset=0, retain_index_list=[]):
    """comfy/context_windows.py, slice_cond: the temporal_offset == 0, temporal_scale == 1
    path WAN21_Vace takes."""
    if not (hasattr(cond_value, "cond") and isinstance(cond_value.cond, torch.Tensor)):
        return None
    cond_tensor = cond_value.cond
    if temporal_dim >= cond_tensor.ndim:
        return None
    if cond_tensor.size(temporal_dim) != x_in.size(window.dim) - temporal_offset:
        return None
    sliced = window.get_tensor(cond_tensor, device, dim=temporal_dim, retain_index_list=retain_index_list)
    return cond_value._copy_with(sliced)


def wan21_vace_resize_cond_for_context_window(cond_key, cond_value, window, x_in, device, retain_index_list=[]):
    """comfy/model_base.py, WAN21_Vace.resize_cond_for_context_window (BaseModel's returns None)."""
    if cond_key == "vace_context":
        return slice_cond(cond_value, window, x_in, device, temporal_dim=3, retain_index_list=retain_index_list)
    return None


@dataclass
class ContextSchedule:
    """comfy/context_windows.py, ContextSchedule."""

    name: str
    func: Callable


def resize_model_conds(cond_in, resize_value):
    """The walk over the conds that both versions of IndexListContextHandler.get_resized_cond
    restated here make (comfy/context_windows.py, 0.3.64 and v0.39 alike): each cond dict is
    copied, and each dict inside it (the "model_conds") is copied with a value replaced where
    `resize_value(cond_key, cond_value)` gives one (None keeps it). Written once here; the
    versions differ only in `resize_value`, which each get_resized_cond below restates."""
    resized_cond = []
    for actual_cond in cond_in:
        resized_actual_cond = actual_cond.copy()
        for key, cond_item in actual_cond.items():
            if isinstance(cond_item, dict):
                new_cond_item = cond_item.copy()
                for cond_key, cond_value in new_cond_item.items():
                    result = resize_value(cond_key, cond_value)
                    if result is not None:
                        new_cond_item[cond_key] = result
                resized_actual_cond[key] = new_cond_item
        resized_cond.append(resized_actual_cond)
    return resized_cond


def create_windows_static_standard(num_frames, handler, model_options):
    """comfy/context_windows.py, create_windows_static_standard."""
    windows = []
    if num_frames <= handler.context_length:
        windows.append(list(range(num_frames)))
        return windows
    delta = handler.context_length - handler.context_overlap
    for start_idx in range(0, num_frames, delta):
        ending = start_idx + handler.context_length
        if ending >= num_frames:
            final_delta = ending - num_frames
            final_start_idx = start_idx - final_delta
            windows.append(list(range(final_start_idx, final_start_idx + handler.context_length)))
            break
        windows.append(list(range(start_idx, start_idx + handler.context_length)))
    return windows


class IndexListContextHandler:
    """comfy/context_windows.py, IndexListContextHandler as WanContextWindowsManual builds it
    (comfy_extras/nodes_context_windows.py: dim=2, context_length=(frames-1)//4+1 latent
    frames, context_overlap=frames//4, causal_window_fix=True, cond_retain_index_list "0"
    with retain_first_frame). Fuse method: flat weights (ContextFuseMethods.FLAT)."""

    def __init__(self, context_schedule, context_length=1, context_overlap=0, dim=0, cond_retain_index_list="",
                 latent_retain_index_list="", causal_window_fix=True):
        self.context_schedule = context_schedule
        self.context_length = context_length
        self.context_overlap = context_overlap
        self.dim = dim
        self._step = 0
        self.cond_retain_index_list = [int(x.strip()) for x in cond_retain_index_list.split(",")] if cond_retain_index_list else []
        self.latent_retain_index_list = [int(x.strip()) for x in latent_retain_index_list.split(",")] if latent_retain_index_list else []
        self.causal_window_fix = causal_window_fix
        self.callbacks = {}

    def should_use_context(self, model, conds, x_in, timestep, model_options):
        return x_in.size(self.dim) > self.context_length

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        """IndexListContextHandler.get_resized_cond: the "model_conds" dict branch, where
        the model's resize_cond_for_context_window is asked first; other tensors of the
        window's length are cut by window.get_tensor."""
        if cond_in is None:
            return None

        def resize_value(cond_key, cond_value):
            result = self._resize(
                cond_key, cond_value, window, x_in, device, retain_index_list=self.cond_retain_index_list)
            if result is not None:
                return result
            if hasattr(cond_value, "cond") and isinstance(cond_value.cond, torch.Tensor):
                if self.dim < cond_value.cond.ndim and cond_value.cond.size(self.dim) == x_in.size(self.dim):
                    return cond_value._copy_with(
                        window.get_tensor(cond_value.cond, device, retain_index_list=self.cond_retain_index_list))
            return None

        return resize_model_conds(cond_in, resize_value)

    def _resize(self, *args, **kwargs):
        # today's WAN21_Vace has the method; on the 0.3.64 host its restatement stands in
        resize = getattr(self._model, "resize_cond_for_context_window", None)
        return (resize or wan21_vace_resize_cond_for_context_window)(*args, **kwargs)

    def get_context_windows(self, model, x_in, model_options):
        """IndexListContextHandler.get_context_windows."""
        full_length = x_in.size(self.dim)
        context_windows = self.context_schedule.func(full_length, self, model_options)
        return [IndexListContextWindow(w, dim=self.dim, total_frames=full_length, context_overlap=self.context_overlap)
                for w in context_windows]

    def window_calls(self, model, x_in, conds, timestep, model_options):
        """IndexListContextHandler.evaluate_context_windows for each window of
        get_context_windows: yields (window, sub_x, sub_timestep, sub_conds) with the window
        published in model_options["transformer_options"]["context_window"], the causal
        anchor set, x cut with latent_retain_index_list, conds by get_resized_cond."""
        self._model = model
        for window in self.get_context_windows(model, x_in, model_options):
            if self.causal_window_fix:
                anchor_idx = window.index_list[0] - 1
                if 0 <= anchor_idx < x_in.size(self.dim):
                    window.causal_anchor_index = anchor_idx
            sub_x = window.get_tensor(x_in, None, retain_index_list=self.latent_retain_index_list)
            model_options["transformer_options"]["context_window"] = window
            sub_timestep = window.get_tensor(timestep, dim=0)
            sub_conds = [self.get_resized_cond(cond, x_in, window) for cond in conds]
            yield window, sub_x, sub_timestep, sub_conds

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        """IndexListContextHandler.execute with flat fusion: each window's output (causal
        anchor stripped) added to its index_list frames, divided by the number of windows."""
        final = [torch.zeros_like(x_in) for _ in conds]
        counts = [torch.zeros([1] * self.dim + [x_in.shape[self.dim]] + [1] * (x_in.ndim - self.dim - 1)) for _ in conds]
        for window, sub_x, sub_timestep, sub_conds in self.window_calls(model, x_in, conds, timestep, model_options):
            out = calc_cond_batch(model, sub_conds, sub_x, sub_timestep, model_options)
            if getattr(window, "causal_anchor_index", None) is not None:
                out = [o.narrow(self.dim, 1, o.shape[self.dim] - 1) for o in out]
            for i in range(len(out)):
                window.add_window(final[i], out[i])
                window.add_window(counts[i], torch.ones_like(counts[i].narrow(self.dim, 0, len(window.index_list))))
        return [f / c for f, c in zip(final, counts)]


def wan_context_windows(context_frames=81, overlap_frames=30, retain_first_frame=False) -> IndexListContextHandler:
    """comfy_extras/nodes_context_windows.py, WanContextWindowsManualNode.execute (static
    schedule): pixel frames to latent frames, dim 2, causal_window_fix on."""
    return IndexListContextHandler(
        ContextSchedule("standard_static", create_windows_static_standard),
        context_length=max((context_frames - 1) // 4 + 1, 1), context_overlap=max(overlap_frames // 4, 0), dim=2,
        cond_retain_index_list="0" if retain_first_frame else "",
    )


class Cond:
    """comfy/conds.py, CONDRegular: `.cond` and `_copy_with`."""

    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return Cond(cond)


class VaceModel:
    """The part of comfy.model_base.WAN21_Vace the handler calls."""

    def resize_cond_for_context_window(self, *args, **kwargs):
        return wan21_vace_resize_cond_for_context_window(*args, **kwargs)


class IndexListContextHandler0364(IndexListContextHandler):
    """ComfyUI 0.3.64's get_resized_cond (comfy/context_windows.py, same function): inside
    "model_conds" only tensors with fewer dims than `dim` are cut, so `vace_context`
    ([B, n, 96, T, h, w]) reaches every window whole."""

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        def resize_value(cond_key, cond_value):
            if hasattr(cond_value, "cond") and isinstance(cond_value.cond, torch.Tensor):
                if cond_value.cond.ndim < self.dim and cond_value.cond.size(0) == x_in.size(self.dim):
                    return cond_value._copy_with(window.get_tensor(cond_value.cond, device))
            return None

        return resize_model_conds(cond_in, resize_value)
