"""Output files that are never half-written: an output folder is checked (created, probed
for writing) before any compute starts, and every file goes to a temporary name in the same
folder and is renamed onto its final name only when complete, so an interrupted run never
leaves a truncated video, image, adapter or checkpoint under a name a user would trust.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import AnyCrowdError

PathLike = str | os.PathLike


def ensure_output_dir(path: PathLike, what: str = "the output folder") -> Path:
    """Create `path` (with parents) and prove it is writable by writing and removing a probe
    file. `what` names the flag or setting in the error (e.g. "--out", "output.dir")."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AnyCrowdError(f"{what} {str(path)!r} is a file, not a folder: choose a folder (it is created if missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise AnyCrowdError(
            f"{what} {str(path)!r} cannot be written to ({reason}): choose a folder you can write to."
        ) from None
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """`with atomic_output(final) as tmp:` write the file at `tmp`; on success it replaces
    `final` in one rename, on any error (or Ctrl-C) the temporary file is removed and
    `final` keeps its previous content (or stays absent). The temporary name keeps the
    suffix, so writers that pick the format from it (OpenCV, PyAV) still work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name the writer creates itself (normal permissions, unlike mkstemp's 0600)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write a small text file (JSON, YAML) through `atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
