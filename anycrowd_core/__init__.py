"""AnyCrowd core: pure-PyTorch implementation of AnyCrowd on Wan 2.1 VACE.

Never imports ComfyUI. Modules: `wan` (checkpoint-compatible DiT), `layout` (token
groups), `attention` (TSDA / masked / global, AGF), `decoupler`, `iilr`, `codec`,
`sampling`, `scenes`, `pipeline`.
"""

from .errors import AnyCrowdError

__version__ = "0.1.0"

__all__ = ["AnyCrowdError", "__version__"]
