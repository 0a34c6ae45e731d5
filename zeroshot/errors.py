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


class ConfigError(UserError, ValueError):
    """A bad setting: an unknown name or choice, a number out of its range, a device that is not here."""


class MissingFileError(UserError, FileNotFoundError):
    """A path the user gave that is not there."""


class TextFileError(UserError, ValueError):
    """A text file (class names, templates, a CSV, a config) that cannot be read as text."""


# Only our own errors are the user's: a ValueError from our code or from torch is a bug and keeps its traceback.
USER_ERRORS = (UserError,)
