"""The package's one error type.

Every problem a user can fix (bad masks, wrong frame counts, a checkpoint of the wrong
kind) is raised as `AnyCrowdError` with a message that names the problem and the fix.
ComfyUI shows the message in its error dialog; the CLIs print it without a traceback.
"""


class AnyCrowdError(ValueError):
    """A user-fixable problem with inputs, files or settings."""
