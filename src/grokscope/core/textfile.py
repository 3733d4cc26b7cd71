"""UTF-8 text files read so that a bad byte is reported by file, line and byte offset.

Python's text mode reports a decoding error by its offset in an internal 8 KiB chunk, with no
line: useless for finding the byte. These readers decode line by line (or count lines up to the
byte) and raise a :class:`~grokscope.core.errors.DataError` such as
``corpus.jsonl:1234: not UTF-8 (invalid start byte 0xff at byte 17 of the line, byte 50321 of the file)``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from grokscope.core.errors import DataError


def _not_utf8(path: Any, lineno: int, raw: bytes, e: UnicodeDecodeError, line_start: int) -> DataError:
    return DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason}: byte 0x{raw[e.start]:02x} at byte {e.start} "
                     f"of the line, byte {line_start + e.start} of the file); re-encode the file as UTF-8")


def iter_utf8_lines(path: str | os.PathLike[str],
                    opener: Callable[[str, str], IO[bytes]] | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` from 1 (byte offsets in errors count from 0), lines with their newline
    ("\\r\\n" becomes "\\n", as in text mode)."""
    offset = 0
    with (opener or open)(str(path), "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, lineno, raw, e, offset) from None
            offset += len(raw)
            yield lineno, line[:-2] + "\n" if line.endswith("\r\n") else line


def read_utf8(path: str | os.PathLike[str]) -> str:
    """The whole file as text; a bad byte is a :class:`DataError` naming its line and offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        raw = data[start: end if end >= 0 else len(data)]
        err = UnicodeDecodeError(e.encoding, raw, e.start - start, e.end - start, e.reason)
        raise _not_utf8(path, data.count(b"\n", 0, e.start) + 1, raw, err, start) from None
