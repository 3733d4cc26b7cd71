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


def disk_message(where: object, reason: str, code: int | None, detail: str = "") -> str:
    """The one wording of a study directory that cannot be written (read-only, full, forbidden)."""
    import errno

    name = errno.errorcode.get(code or 0, code)
    return (f"cannot write {where}: {reason} [errno {name}]{f' ({detail})' if detail else ''}; finished outputs "
            "are kept; free space / make it writable (or use another --out) and re-run")


class DiskError(GrokscopeError):
    """The study directory cannot take what is about to be written (no space, read-only): the
    run stops there, as every later write would fail the same way."""


class MissingStageError(GrokscopeError):
    """A stage was asked for without the output of the stage it depends on."""

    def __init__(self, what: str, path: str, command: str) -> None:
        super().__init__(f"{what} not found at {path}; produce it with: {command}")
