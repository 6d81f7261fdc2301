"""The package's one error type, and the one way work stops on request.

Every problem a user can fix (bad masks, wrong frame counts, a checkpoint of the wrong
kind) is raised as `AnyCrowdError` with a message that names the problem and the fix.
ComfyUI shows the message in its error dialog; the CLIs print it without a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class AnyCrowdError(ValueError):
    """A user-fixable problem with inputs, files or settings."""


class SamplingCancelled(Exception):
    """Raised when `cancel()` returns True before a model evaluation (or a pose frame).

    Not an `AnyCrowdError`: stopping on request is not a user mistake.
    """


def command_main(main: Callable[..., int]) -> Callable[..., int]:
    """Decorates a command's `main(argv) -> exit code`: an `AnyCrowdError` raised anywhere in
    it is printed as `error: <message>` on stderr, without a traceback, and the command
    returns 2. Every `python -m` command of the package reports user mistakes this way."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except AnyCrowdError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return run


def require_finite(value, what: str, fix: str = "") -> None:
    """Raise `AnyCrowdError` naming `what` if `value` (a number, a sequence of numbers, a
    torch tensor or a numpy array) holds NaN or infinity. `fix` says what to do instead.

    NaN passes every `<`/`>` range check unnoticed, and a NaN image or strength flows
    through the model into a black (uint8 of NaN) video: callers check at the boundary.
    """
    import math

    import numpy as np

    if hasattr(value, "detach"):  # torch tensor
        import torch

        bad = int((~torch.isfinite(value.detach())).sum()) if value.is_floating_point() else 0
        total = value.numel()
    elif isinstance(value, np.ndarray):
        bad = int((~np.isfinite(value)).sum()) if np.issubdtype(value.dtype, np.floating) else 0
        total = value.size
    elif isinstance(value, (list, tuple)):
        bad = sum(1 for v in value if not math.isfinite(float(v)))
        total = len(value)
    else:
        if isinstance(value, bool) or math.isfinite(float(value)):
            return
        raise AnyCrowdError(f"{what} is {value}; it must be a finite number.{(' ' + fix) if fix else ''}")
    if bad:
        raise AnyCrowdError(
            f"{what} holds {bad} non-finite value(s) (NaN or infinity) out of {total}."
            f"{(' ' + fix) if fix else ''}"
        )
