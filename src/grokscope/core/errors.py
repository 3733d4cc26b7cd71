"""Errors a researcher can act on.

Every problem caused by input (a file, a config value, a pair, a checkpoint) raises
:class:`GrokscopeError` with a message that names the file/line/pair and what was expected.
The CLI prints the message (no traceback) and exits with status 2; finished work stays on disk.
"""
from __future__ import annotations


class GrokscopeError(Exception):
    """An input problem the user can fix. The message is shown as-is."""


class ConfigError(GrokscopeError):
    """A study config that does not validate (unknown key, wrong type, bad value)."""


class DataError(GrokscopeError):
    """A data file that is missing, malformed, or inconsistent with another input."""


class DiskError(GrokscopeError):
    """The study directory cannot take what is about to be written (no space, read-only): the
    run stops there, as every later write would fail the same way."""


class MissingStageError(GrokscopeError):
    """A stage was asked for without the output of the stage it depends on."""

    def __init__(self, what: str, path: str, command: str) -> None:
        super().__init__(f"{what} not found at {path}; produce it with: {command}")
