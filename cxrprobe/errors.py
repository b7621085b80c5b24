"""One exception tree for cxrprobe; the CLI maps it to exit codes.

``InputError`` (exit 2) covers everything a user can fix by changing what they pass in: a
missing file, a malformed table, a cache written by another model. ``CxrprobeError`` (exit 1)
is a failure of the run itself.
"""

from __future__ import annotations


class CxrprobeError(Exception):
    """A failure cxrprobe reports as one line, with no traceback."""

    exit_code = 1


class InputError(CxrprobeError, ValueError):
    """Bad input: a usage or data problem the user can fix (exit status 2)."""

    exit_code = 2


class OptionError(InputError):
    """A bad value for a named parameter. The message names the parameter (``seeds must be at
    least 1``); the CLI names its flag instead (``--seeds must be at least 1``)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter, self.problem = parameter, problem

    @property
    def flag_message(self) -> str:
        return f"--{self.parameter.replace('_', '-')} {self.problem}"


class DataError(InputError):
    """A dataset folder or its metadata is missing, malformed or inconsistent."""


class ModelError(InputError):
    """A model name, weights tag or weights file that cannot be used."""


class CacheError(InputError):
    """A feature cache that is missing, of another format, or does not match the request."""


class OutputError(CxrprobeError):
    """An output that could not be written in full (disk full, file size limit); exit 1, since
    the same command succeeds once there is room. Files that existed are left as they were."""


class BusyError(CxrprobeError):
    """Another process is writing the same output."""


class OutOfMemory(CxrprobeError):
    """The GPU ran out of memory: exit 1, the run resumable once there is room."""
