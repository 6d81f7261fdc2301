"""ComfyUI entry point for AnyCrowd (V1-style registration).

ComfyUI imports this folder as a package under its folder name (e.g. `ComfyUI-AnyCrowd`),
so everything below is imported relatively.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
