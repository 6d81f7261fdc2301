"""ComfyUI entry point for AnyCrowd (V1-style registration).

ComfyUI imports this folder as a package under its folder name (e.g. `ComfyUI-AnyCrowd`).
The node modules import the core as the top-level package `anycrowd_core`, the same module
the tests, the CLIs and `python -m training.run` use, so this folder is put on sys.path
first. Our `nodes` subpackage is only ever imported relatively: ComfyUI has its own
top-level `nodes` module.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.append(_here)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
