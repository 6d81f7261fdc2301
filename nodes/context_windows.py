"""ComfyUI's native context windows (Context Windows (Manual), WAN Context Windows) on a
patched MODEL: every window keeps AnyCrowd's reference frames, and the patched layers use
the layout (and shifted RoPE) of the window ComfyUI publishes to the model.

How and why: docs/comfyui_long_video.md "Native context windows". The handler, its windows
and the guider are used through their attributes; comfy.* is imported lazily, for one constant.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import torch

from anycrowd_core.attention import AnyCrowdAttention
from anycrowd_core.errors import AnyCrowdError
from anycrowd_core.layout import TokenLayout, window_layout

# comfy/context_windows.py, IndexListContextHandler.evaluate_context_windows (0.3.64 and
# today): model_options["transformer_options"]["context_window"] = window, before each
# window's model call
WINDOW_KEY = "context_window"
FOLLOWER_KEY = "anycrowd_windows"  # model_options["transformer_options"][FOLLOWER_KEY]: the WindowFollower
WRAPPER_KEY = "anycrowd_context_windows"  # our OUTER_SAMPLE wrapper's key
TIME_DIM = 2  # the latent's frame axis, [B, C, T, H, W]: the dim WAN Context Windows uses
LONG_VIDEO = "AnyCrowd Long Video Sampler (strategy sliding_window), which runs its own windows on any ComfyUI version"


def window_frames(window) -> list[int]:
    """The latent frames of the whole latent a published ComfyUI window holds, in order:
    its `index_list`, after `causal_anchor_index` when today's handler set one
    (`IndexListContextWindow.get_tensor` puts the anchor frame first)."""
    anchor = getattr(window, "causal_anchor_index", None)
    frames = [int(f) for f in window.index_list]
    return ([int(anchor)] if anchor is not None and anchor >= 0 else []) + frames


def _references_first(num_frames: int, handler, model_options, *, schedule, references: int) -> list[list[int]]:
    """Context schedule: the handler's own schedule over the video frames, each window
    preceded by the `references` reference frames (AnyCrowd's [R_1 .. R_N, R_bg | video])."""
    video = schedule(num_frames - references, handler, model_options)
    return [list(range(references)) + [references + int(f) for f in window] for window in video]


class _Cond:
    """A stand-in for comfy.conds.CONDRegular: what the handler's slicing reads and calls."""

    def __init__(self, cond: torch.Tensor):
        self.cond = cond

    def _copy_with(self, cond):
        return _Cond(cond)


class _ProbeWindow:
    """A window with IndexListContextWindow's attributes and `get_tensor` (comfy/context_windows.py)."""

    def __init__(self, index_list: list[int], total_frames: int):
        self.index_list, self.context_length, self.dim = index_list, len(index_list), TIME_DIM
        self.total_frames, self.center_ratio, self.context_overlap = total_frames, 0.5, 0

    def get_tensor(self, full, device=None, dim=None, retain_index_list=[]):
        dim = self.dim if dim is None else dim
        window = full[(slice(None),) * dim + (self.index_list,)]
        if retain_index_list:
            idx = (slice(None),) * dim + (list(retain_index_list),)
            window[idx] = full[idx]
        return window.to(device)


def slices_vace_context(handler, model) -> bool:
    """Whether `handler` (ComfyUI's IndexListContextHandler) cuts `vace_context` to its
    windows, tried on a tiny conditioning: today's handler does (WAN21_Vace.
    resize_cond_for_context_window, ComfyUI PR #11386, Dec 2025); 0.3.64's passes the
    whole clip's VACE context to every window."""
    retain = list(getattr(handler, "cond_retain_index_list", []) or [])
    size = max(retain, default=0) + 1  # the window must hold every retained position
    probe = copy.copy(handler)
    probe._model = model  # today's get_resized_cond asks the model first (set by execute)
    frames = size + 1
    x = torch.zeros(1, 1, frames, 1, 1)
    conds = [{"model_conds": {"vace_context": _Cond(torch.zeros(1, 1, 1, frames, 1, 1))}}]
    out = probe.get_resized_cond(conds, x, _ProbeWindow(list(range(1, frames)), frames))
    return out[0]["model_conds"]["vace_context"].cond.shape[3] == size


class WindowFollower:
    """What a patched MODEL needs under ComfyUI's context windows: the whole clip's hook and
    shifted RoPE, and per window (`follow`) a hook and RoPE for the window's layout, cached
    by the window's frames. Stored in transformer_options; ComfyUI deep-copies those on
    every clone, so `__deepcopy__` returns self (one run, one follower)."""

    def __init__(self, hook: AnyCrowdAttention, rope=None):
        if not isinstance(getattr(hook, "layout", None), TokenLayout):
            raise AnyCrowdError("Context windows can only be followed for a patched MODEL (AnyCrowd TSDA Patch).")
        self.hook, self.rope, self.layout = hook, rope, hook.layout
        self._windows: dict[tuple[int, ...], tuple] = {}

    def __deepcopy__(self, memo):
        return self

    def follow(self, window) -> tuple:
        """(hook, rope) for the published `window`: the layout of [reference frames | the
        window's video frames], with the whole clip's mode, AGF and gates."""
        frames = tuple(window_frames(window))
        if frames not in self._windows:
            self._windows[frames] = self._for_frames(frames)
        return self._windows[frames]

    def _for_frames(self, frames: tuple[int, ...]) -> tuple:
        r = self.layout.num_ref_frames
        video = [f - r for f in frames[r:]]
        if list(frames[:r]) != list(range(r)) or min(video, default=-1) < 0:
            raise AnyCrowdError(
                f"ComfyUI's context window holds latent frames {list(frames)}, but AnyCrowd needs its {r} reference "
                f"frames (0..{r - 1}) at the start of every window and nowhere else. Patched MODELs put them there "
                "themselves when sampled by a native sampler; if another node builds the windows, remove it, "
                f"or use {LONG_VIDEO}."
            )
        layout = window_layout(self.layout, video)
        h = self.hook
        hook = AnyCrowdAttention(layout, mode=h.mode, agf=h.agf, gates=h.gates, branches=h.branches)
        # same gates: the per-GPU copies registered on the clip's hook reach this one (hook.gate_copies)
        rope = None if self.rope is None else type(self.rope)(layout, self.rope.embedder)  # ShiftedRope
        return hook, rope

    def windows_with_references(self, handler, model, latent_shape) -> object:
        """The handler to sample with: a copy of `handler` whose windows all start with the
        reference frames (its own schedule over the video frames), or `handler` itself when
        it does not window in time. AnyCrowdError, before sampling, for what cannot work."""
        r = self.layout.num_ref_frames
        dim = getattr(handler, "dim", None)
        length = getattr(handler, "context_length", None)
        if dim != TIME_DIM:
            if isinstance(dim, int) and isinstance(length, int) and dim < len(latent_shape) and latent_shape[dim] > length:
                raise AnyCrowdError(
                    f"The context windows cut latent dim {dim} (length {length}), not time: AnyCrowd follows windows "
                    f"over latent frames only. Use WAN Context Windows, or Context Windows (Manual) with dim {TIME_DIM}."
                )
            return handler
        if not all(hasattr(handler, a) for a in ("context_schedule", "get_resized_cond")):
            raise AnyCrowdError(
                f"Unknown context handler {type(handler).__name__}: AnyCrowd follows ComfyUI's own context windows "
                f"(Context Windows (Manual), WAN Context Windows); remove it, or use {LONG_VIDEO}."
            )
        try:
            slices = slices_vace_context(handler, model)
        except Exception as e:  # an unforeseen handler: say so rather than fail mid-sampling
            slices, why = False, f" (trying it failed: {type(e).__name__}: {e})"
        else:
            why = ""
        if not slices:
            raise AnyCrowdError(
                "This ComfyUI's context windows do not cut the VACE context to each window" + why + ", so every "
                "window would see the whole clip's pose video (ComfyUI added it in Dec 2025, PR #11386). Update "
                f"ComfyUI, or remove the context windows node and use {LONG_VIDEO}."
            )
        retained = sorted(
            {int(i) for name in ("cond_retain_index_list", "latent_retain_index_list")
             for i in (getattr(handler, name, None) or [])} - set(range(r))
        )
        if retained:
            raise AnyCrowdError(
                f"The context windows retain latent positions {retained}, which are video frames of the window, not "
                f"AnyCrowd's {r} reference frames (0..{r - 1}): every window already starts with the reference frames, "
                "so clear cond_retain_index_list / latent_retain_index_list (retain_first_frame may stay on)."
            )
        windows = copy.copy(handler)
        schedule = handler.context_schedule
        windows.context_schedule = dataclasses.replace(
            schedule, func=functools.partial(_references_first, schedule=schedule.func, references=r)
        )
        return windows


def keep_reference_frames(executor, noise, *args, **kwargs):
    """OUTER_SAMPLE wrapper (ComfyUI's CFGGuider.sample): before sampling starts, swap the
    run's context handler for one whose windows keep the reference frames, or refuse."""
    guider = executor.class_obj
    options = guider.model_options
    handler = options.get("context_handler")
    follower = options.get("transformer_options", {}).get(FOLLOWER_KEY)
    if handler is not None and follower is not None:
        options["context_handler"] = follower.windows_with_references(handler, guider.model_patcher.model, noise.shape)
    return executor(noise, *args, **kwargs)



def follow_context_windows(patched, hook: AnyCrowdAttention, rope) -> None:
    """Let the patched MODEL `patched` follow ComfyUI's context windows: the follower in its
    transformer_options and the OUTER_SAMPLE wrapper (replacing an earlier AnyCrowd patch's)."""
    import comfy.patcher_extension

    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    patched.remove_wrappers_with_key(outer, WRAPPER_KEY)
    patched.model_options["transformer_options"][FOLLOWER_KEY] = WindowFollower(hook, rope)
    patched.add_wrapper_with_key(outer, WRAPPER_KEY, keep_reference_frames)
