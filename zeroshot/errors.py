"""The errors that mean "the inputs are wrong": the CLI prints their message on one line and exits 1.

Each message names the thing (the file, the name, the value) and the fix, and lists the valid choices
where there are choices. Anything else is a bug, and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the inputs."""


class DatasetError(UserError, RuntimeError):
    pass


class BadImageError(UserError, RuntimeError):
    pass


class CheckpointError(UserError, RuntimeError):
    pass


class ArchitectureError(UserError, ValueError):
    pass


class PromptError(UserError, ValueError):
    pass


class ReportError(UserError, RuntimeError):
    pass


# ValueError: a bad setting (device, precision, an unknown name); FileNotFoundError: a path that is not there.
USER_ERRORS = (UserError, ValueError, FileNotFoundError)
