"""Streaming readers for raw-text corpora: one :class:`Document` at a time, never a whole file.

Supported sources (``corpus_sources`` expands globs and checks they exist):

* ``*.jsonl`` / ``*.jsonl.gz`` / ``*.json.gz`` — one JSON object per line; the text is in
  ``text_field`` (default ``text``). Blank lines are skipped.
* ``*.txt`` / ``*.txt.gz`` — one document per non-blank line (the convention of Hugging Face's
  ``text`` loader and of most line-per-document dumps).
* ``hf:NAME[:SPLIT[:CONFIG]]`` — a Hugging Face dataset, streamed with ``datasets`` (optional
  dependency, needs the hub or a local dataset path as NAME).

Every malformed input is a :class:`~grokscope.core.errors.DataError` naming the file and line.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grokscope.core.errors import DataError

HF_PREFIX = "hf:"
TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")


@dataclass(frozen=True)
class Document:
    """One document: its text and where it came from (``line`` is 1-based; 0 for HF rows)."""

    text: str
    source: str
    line: int


def corpus_sources(specs: list[str]) -> list[str]:
    """Expand globs in ``specs`` (order kept; a glob's matches sorted) and check each exists.

    ``hf:`` specs pass through. Duplicates are kept on purpose: a file listed twice is read
    twice (that is how a corpus is doubled for the memory benchmark).
    """
    if not specs:
        raise DataError("no corpus given: pass --corpus FILE [FILE ...] (jsonl, jsonl.gz, txt) or hf:NAME")
    out: list[str] = []
    for spec in specs:
        spec = str(spec)
        if spec.startswith(HF_PREFIX):
            out.append(spec)
            continue
        expanded = os.path.expanduser(spec)
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded))
            if not matches:
                raise DataError(f"corpus pattern '{spec}' matches no file")
            out.extend(matches)
            continue
        p = Path(expanded)
        if not p.exists():
            raise DataError(f"corpus file '{spec}' does not exist")
        if p.is_dir():
            raise DataError(f"corpus '{spec}' is a directory; pass its files (e.g. '{spec}/*.jsonl.gz')")
        out.append(str(p))
    for path in out:
        if not path.startswith(HF_PREFIX):
            _check_suffix(path)
    return out


def _check_suffix(path: str) -> None:
    if not path.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES):
        raise DataError(
            f"{path}: unknown corpus format; expected one of {', '.join(JSONL_SUFFIXES + TEXT_SUFFIXES)} "
            "or hf:NAME[:SPLIT]"
        )


def iter_documents(source: str, text_field: str = "text") -> Iterator[Document]:
    """Documents of one source, in file order (streamed)."""
    if source.startswith(HF_PREFIX):
        yield from _iter_hf(source, text_field)
        return
    _check_suffix(source)
    if source.endswith(TEXT_SUFFIXES):
        yield from _iter_txt(source)
    else:
        yield from _iter_jsonl(source, text_field)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    from grokscope.core.textfile import iter_utf8_lines

    try:
        yield from iter_utf8_lines(path, gzip.open if path.endswith(".gz") else None)  # type: ignore[arg-type]
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read file: {e}") from None


def _iter_jsonl(path: str, text_field: str) -> Iterator[Document]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object with a '{text_field}' field, "
                            f"got {type(obj).__name__}")
        if text_field not in obj:
            keys = ", ".join(sorted(obj)[:10]) or "none"
            raise DataError(f"{path}:{lineno}: document has no '{text_field}' field (keys: {keys}); "
                            "choose the field with --text-field")
        text = obj[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field '{text_field}' must be a string, got {type(text).__name__}")
        yield Document(text, path, lineno)


def _iter_txt(path: str) -> Iterator[Document]:
    for lineno, line in _lines(path):
        text = line.rstrip("\r\n")
        if text.strip():
            yield Document(text, path, lineno)


def _iter_hf(spec: str, text_field: str) -> Iterator[Document]:
    parts = spec[len(HF_PREFIX):].split(":")
    name = parts[0]
    split = parts[1] if len(parts) > 1 and parts[1] else "train"
    config = parts[2] if len(parts) > 2 and parts[2] else None
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec}: reading a Hugging Face dataset needs the 'datasets' package "
                        "(pip install 'grokscope[hub]')") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the spec
        raise DataError(f"{spec}: could not load dataset '{name}' split '{split}': {e}") from None
    for i, row in enumerate(ds):
        if text_field not in row:
            raise DataError(f"{spec}: row {i} has no '{text_field}' field (keys: {', '.join(sorted(row))})")
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(f"{spec}: row {i} field '{text_field}' must be a string, got {type(text).__name__}")
        yield Document(text, spec, 0)


def iter_corpus(sources: list[str], text_field: str = "text") -> Iterator[Document]:
    """Documents of every source in order."""
    for source in sources:
        yield from iter_documents(source, text_field)


def source_record(source: str) -> dict[str, object]:
    """``{path, sha256, bytes}`` for the manifest (HF datasets: name only)."""
    from grokscope.core.store import file_sha256

    if source.startswith(HF_PREFIX):
        return {"path": source, "sha256": "", "bytes": 0}
    p = Path(source)
    return {"path": str(p.resolve()), "sha256": file_sha256(p), "bytes": p.stat().st_size}
