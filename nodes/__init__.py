"""ComfyUI node classes of AnyCrowd (the only code that touches comfy.* / folder_paths).

The node set is built on top of `anycrowd_core` by the [comfy] work item; until it lands
the package registers no nodes, so ComfyUI starts cleanly with it installed.
"""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
