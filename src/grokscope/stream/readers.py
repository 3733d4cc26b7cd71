"""The token stream: training tokens in the exact order a model saw them, and its schedule.

Every source presents the same interface, :class:`TokenStream`: ``n_rows`` rows of ``row_len``
tokens in training order, ``rows_per_step`` (B) rows per optimizer step, so that step ``s``
reads rows ``[s·B, (s+1)·B)`` and the checkpoint at step ``t`` has seen rows ``[0, t·B)``
(window(t), see docs/CONTRACTS.md "Step semantics").

Formats read by :func:`open_stream` (all memory-mapped; nothing is loaded whole):

============  =====================================================  =========================
format        what                                                    defaults (suite)
============  =====================================================  =========================
grokscope     ``STUDY/tokens/`` from ``grokscope prepare``             from manifest.json;
                                                                      rows_per_step: given
megatron      Megatron-LM / GPT-NeoX ``MMapIndexedDataset`` prefix     Pythia: row_len 2049,
              (``NAME.idx`` + ``NAME.bin`` or its shards               rows_per_step 1024,
              ``NAME-NNNNN-of-MMMMM.bin``, or their directory);        eos_id 0
              sequences in index order, concatenated, cut into rows
nanogpt       flat token file (``train.bin``), raw uint16              nanoGPT GPT-2: row_len
                                                                      1025, rows_per_step 480,
                                                                      eos_id 50256
olmo          directory of OLMo token files (raw ``.npy`` memmaps,     OLMo-1: row_len 2048,
              read in ``paths.txt`` order, else sorted by name) +      rows_per_step 2048,
              ``global_indices.npy`` (instance ids in training order)  eos_id 50279, uint16
============  =====================================================  =========================

Megatron: Pythia's preshuffled Pile stores one 2049-token training sequence per index entry,
so "concatenate, cut every 2049" is exactly its per-step batches; Hugging Face serves it as shards
of the ``.bin``, read in place as one stream (:mod:`grokscope.stream.megatron`). OLMo: instances
are ``row_len`` consecutive tokens of one file (a file's tail shorter than a row is dropped), the
``i``-th row of the stream is instance ``global_indices[i]``; its length and range are checked
against the token files when the stream is opened.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.config import FORMATS
from grokscope.core.errors import ConfigError, DataError
from grokscope.core.store import Study
from grokscope.stream.megatron import (
    MEGATRON_DEFAULTS,
    MEGATRON_DTYPES,
    MEGATRON_MAGIC,
    MegatronIndex,
    RowReader,
    flat_reader,
    megatron_prefix,
    open_megatron,
    read_megatron_index,
)

__all__ = ["MEGATRON_DEFAULTS", "MEGATRON_DTYPES", "MEGATRON_MAGIC", "MegatronIndex", "TokenStream", "detect_format",
           "olmo_token_files", "open_stream", "read_megatron_index"]

# suite defaults: (row_len, rows_per_step, eos_id, dtype); Megatron's (Pythia) in grokscope.stream.megatron
NANOGPT_DEFAULTS = (1025, 480, 50256, "uint16")  # nanoGPT GPT-2 124M: block 1024, 12 x 40 rows/step
OLMO_DEFAULTS = (2048, 2048, 50279, "uint16")  # OLMo-1 (1B/7B): seq 2048, batch 2048 instances
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class TokenStream:
    """Rows of tokens in training order plus the schedule that maps steps to rows."""

    path: Path
    format: str
    n_rows: int
    row_len: int
    rows_per_step: int | None  # B; None when the stream does not know its batch size
    eos_id: int | None
    vocab_size: int | None
    tokenizer: str | None  # tokenizer fingerprint (grokscope) or name, when known
    dtype: np.dtype
    tokenizer_dir: Path | None = None  # a Hugging Face tokenizer dir recorded with the stream
    manifest: dict[str, Any] = field(default_factory=dict)
    _read: RowReader | None = field(default=None, repr=False)

    # ---- schedule ----------------------------------------------------------------------
    @property
    def n_steps(self) -> int | None:
        """Complete optimizer steps the stream holds (``n_rows // B``); None if B is unknown."""
        return None if self.rows_per_step is None else self.n_rows // self.rows_per_step

    @property
    def n_tokens(self) -> int:
        return self.n_rows * self.row_len

    def _batch(self) -> int:
        if self.rows_per_step is None:
            raise ConfigError(
                f"{self.path}: the stream does not record rows per step; pass rows_per_step= to open_stream "
                "(the trainer's batch size; Pythia 1024)"
            )
        return self.rows_per_step

    def rows_seen(self, step: int) -> int:
        """Rows the checkpoint at ``step`` has trained on: ``step · B``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return int(step) * self._batch()

    def tokens_seen(self, step: int) -> int:
        """Tokens in window(step): ``step · B · row_len``."""
        return self.rows_seen(step) * self.row_len

    def first_step(self, row: int | np.ndarray) -> int | np.ndarray:
        """First checkpoint step that has seen ``row`` (1-based: ``row // B + 1``)."""
        if isinstance(row, np.ndarray):
            return row // self._batch() + 1
        return int(row) // self._batch() + 1

    def step_rows(self, step: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` that optimizer step ``step`` (0-based) reads."""
        b = self._batch()
        return step * b, (step + 1) * b

    # ---- data --------------------------------------------------------------------------
    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` in training order: ``[stop-start, row_len]`` (a view when possible)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"{self.path}: rows [{start}, {stop}) out of range [0, {self.n_rows})")
        assert self._read is not None
        return self._read(start, stop)

    def iter_rows(self, chunk_rows: int = 4096, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, rows)`` chunks covering ``[start, stop)`` in order (for scans)."""
        stop = self.n_rows if stop is None else stop
        for a in range(start, stop, chunk_rows):
            yield a, self.rows(a, min(stop, a + chunk_rows))

    def fingerprint(self) -> str:
        """A short hash of the stream's identity: layout, tokenizer and sampled rows."""
        h = hashlib.sha256()
        meta = {"format": self.format, "n_rows": self.n_rows, "row_len": self.row_len, "dtype": self.dtype.name,
                "tokenizer": self.tokenizer, "eos_id": self.eos_id}
        h.update(json.dumps(meta, sort_keys=True).encode())
        if self.n_rows:
            for r in sorted({0, self.n_rows // 3, self.n_rows // 2, self.n_rows - 1}):
                h.update(np.ascontiguousarray(self.rows(r, r + 1), dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "n_rows": self.n_rows, "row_len": self.row_len,
                "rows_per_step": self.rows_per_step, "n_steps": self.n_steps, "eos_id": self.eos_id,
                "vocab_size": self.vocab_size, "tokenizer": self.tokenizer, "dtype": self.dtype.name}


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def open_stream(path: str | os.PathLike[str], format: str = "auto", rows_per_step: int | None = None,
                row_len: int | None = None, eos_id: int | None = None, dtype: str | None = None) -> TokenStream:
    """Open a token stream (see the module docstring for formats and their suite defaults).

    ``row_len``/``eos_id``/``dtype`` override the suite defaults of foreign formats; for a
    grokscope directory they must agree with its manifest. ``dtype`` applies to raw token files
    (nanoGPT, OLMo) that do not record it.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown token-stream format {format!r}; expected one of {', '.join(FORMATS)}")
    for name, value in (("rows_per_step", rows_per_step), ("row_len", row_len)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    p = Path(path)
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "grokscope":
        return _open_grokscope(p, rows_per_step, row_len, eos_id)
    if fmt == "megatron":
        return _open_megatron(p, rows_per_step, row_len, eos_id)
    if fmt == "nanogpt":
        return _open_nanogpt(p, rows_per_step, row_len, eos_id, dtype)
    return _open_olmo(p, rows_per_step, row_len, eos_id, dtype)


def detect_format(p: Path) -> str:
    """Which reader a path needs (see :func:`open_stream`)."""
    if p.is_dir():
        if (p / "manifest.json").exists() and (p / "tokens.npy").exists():
            return "grokscope"
        if (Study(p).tokens_dir / "manifest.json").exists():
            return "grokscope"  # a study directory
        if (p / "global_indices.npy").exists():
            return "olmo"
        if megatron_prefix(p) is not None:
            return "megatron"  # e.g. Hugging Face's Pythia dir: document.idx + document-NNNNN-of-MMMMM.bin
        raise DataError(f"{p}: not a token stream (expected a grokscope tokens/ dir with manifest.json + tokens.npy, "
                        "an OLMo dir with global_indices.npy, or a Megatron dir with NAME.idx + NAME.bin or shards "
                        "NAME-NNNNN-of-MMMMM.bin)")
    if megatron_prefix(p) is not None:
        return "megatron"
    if p.is_file() and p.suffix == ".bin":
        return "nanogpt"
    if not p.exists() and not Path(str(p.with_suffix("") if p.suffix in (".bin", ".idx") else p) + ".bin").exists():
        raise DataError(f"token stream '{p}' does not exist")
    raise DataError(f"{p}: cannot tell the token-stream format; pass format= one of {', '.join(FORMATS[1:])}")


# ---------------------------------------------------------------------------------------------
# grokscope prepared directory
# ---------------------------------------------------------------------------------------------
def _open_grokscope(p: Path, rows_per_step: int | None, row_len: int | None, eos_id: int | None) -> TokenStream:
    if (Study(p).tokens_dir / "manifest.json").exists() and not (p / "manifest.json").exists():
        p = Study(p).tokens_dir
    manifest_path, tokens_path = p / "manifest.json", p / "tokens.npy"
    if not manifest_path.exists() or not tokens_path.exists():
        from grokscope.core.errors import MissingStageError

        raise MissingStageError("prepared token stream", str(p), "grokscope prepare --corpus ... --out STUDY")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{manifest_path}: not valid JSON ({e.msg})") from None
    if manifest.get("format") != "grokscope":
        raise DataError(f"{manifest_path}: format is {manifest.get('format')!r}, expected 'grokscope'")
    try:
        arr = np.load(tokens_path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"{tokens_path}: not a readable .npy file ({e})") from None
    m_row_len, m_rows = int(manifest["row_len"]), int(manifest["n_rows"])
    if arr.ndim != 2 or arr.shape != (m_rows, m_row_len) or arr.dtype.name != manifest["dtype"]:
        raise DataError(f"{tokens_path}: shape {arr.shape} {arr.dtype} does not match {manifest_path} "
                        f"({m_rows} x {m_row_len} {manifest['dtype']})")
    if row_len is not None and row_len != m_row_len:
        raise ConfigError(f"{p}: row_len {row_len} was asked for but the stream has rows of {m_row_len} "
                          f"(seq_len {manifest['seq_len']} + 1)")
    m_eos = manifest.get("eos_id")
    if eos_id is not None and m_eos is not None and eos_id != m_eos:
        raise ConfigError(f"{p}: eos_id {eos_id} was asked for but the stream was joined with EOS id {m_eos}")
    tok_dir = p / "tokenizer"
    return TokenStream(
        path=p, format="grokscope", n_rows=m_rows, row_len=m_row_len,
        rows_per_step=rows_per_step or manifest.get("rows_per_step"),
        eos_id=m_eos if m_eos is not None else eos_id, vocab_size=manifest.get("vocab_size"),
        tokenizer=manifest.get("tokenizer_fingerprint"), dtype=arr.dtype,
        tokenizer_dir=tok_dir if tok_dir.exists() else None, manifest=manifest,
        _read=lambda a, b: np.asarray(arr[a:b]),
    )


# ---------------------------------------------------------------------------------------------
# Megatron / GPT-NeoX MMapIndexedDataset, merged or in shards (grokscope.stream.megatron)
# ---------------------------------------------------------------------------------------------
def _open_megatron(p: Path, rows_per_step: int | None, row_len: int | None, eos_id: int | None) -> TokenStream:
    layout = open_megatron(p, row_len or MEGATRON_DEFAULTS[0])
    return TokenStream(
        path=layout.prefix, format="megatron", n_rows=layout.n_rows, row_len=row_len or MEGATRON_DEFAULTS[0],
        rows_per_step=rows_per_step or MEGATRON_DEFAULTS[1],
        eos_id=MEGATRON_DEFAULTS[2] if eos_id is None else eos_id, vocab_size=None, tokenizer=None,
        dtype=layout.dtype, manifest=layout.manifest, _read=layout.read,
    )


# ---------------------------------------------------------------------------------------------
# nanoGPT flat .bin
# ---------------------------------------------------------------------------------------------
def _raw_tokens(path: Path, dtype: str | None, default: str) -> np.ndarray:
    """A 1-D memmap of a raw token file (or of a ``.npy`` file, whose header gives the dtype)."""
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
    if magic == NPY_MAGIC:
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            raise DataError(f"{path}: holds {arr.dtype} tokens, but dtype {dtype} was asked for")
        return arr
    dt = np.dtype(dtype or default)
    size = path.stat().st_size
    if size % dt.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dt.name} tokens; "
                        "wrong dtype or truncated file")
    if size == 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(path, mode="r", dtype=dt)


def _open_nanogpt(p: Path, rows_per_step: int | None, row_len: int | None, eos_id: int | None,
                  dtype: str | None) -> TokenStream:
    if not p.is_file():
        raise DataError(f"nanoGPT token file '{p}' does not exist")
    flat = _raw_tokens(p, dtype, NANOGPT_DEFAULTS[3])
    row_len = row_len or NANOGPT_DEFAULTS[0]
    return TokenStream(
        path=p, format="nanogpt", n_rows=flat.size // row_len, row_len=row_len,
        rows_per_step=rows_per_step or NANOGPT_DEFAULTS[1],
        eos_id=NANOGPT_DEFAULTS[2] if eos_id is None else eos_id, vocab_size=None, tokenizer=None,
        dtype=flat.dtype, manifest={"tokens": int(flat.size)}, _read=flat_reader(flat, row_len),
    )


# ---------------------------------------------------------------------------------------------
# OLMo numpy token files + global_indices.npy
# ---------------------------------------------------------------------------------------------
def olmo_token_files(d: Path) -> list[Path]:
    """Token files of an OLMo dir: ``paths.txt`` (one per line, relative to the dir) if present,
    else every ``*.npy`` except ``global_indices.npy``, sorted by name."""
    listing = d / "paths.txt"
    if listing.exists():
        files = [d / line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        for i, f in enumerate(files, start=1):
            if not f.exists():
                raise DataError(f"{listing}:{i}: token file {f} does not exist")
        return files
    return sorted(f for f in d.glob("*.npy") if f.name != "global_indices.npy")


def _open_olmo(p: Path, rows_per_step: int | None, row_len: int | None, eos_id: int | None,
               dtype: str | None) -> TokenStream:
    if not p.is_dir() or not (p / "global_indices.npy").exists():
        raise DataError(f"{p}: an OLMo stream is a directory with token files and global_indices.npy")
    files = olmo_token_files(p)
    if not files:
        raise DataError(f"{p}: no token files (*.npy besides global_indices.npy, or paths.txt)")
    row_len = row_len or OLMO_DEFAULTS[0]
    arrays = [_raw_tokens(f, dtype, OLMO_DEFAULTS[3]) for f in files]
    if len({a.dtype for a in arrays}) > 1:
        raise DataError(f"{p}: token files have different dtypes {sorted({a.dtype.name for a in arrays})}")
    per_file = np.array([a.size // row_len for a in arrays], dtype=np.int64)
    first = np.zeros(per_file.size + 1, dtype=np.int64)  # first global instance id of each file
    np.cumsum(per_file, out=first[1:])
    n_instances = int(first[-1])
    gi_path = p / "global_indices.npy"
    indices = _raw_tokens(gi_path, None, "uint32")
    _check_global_indices(gi_path, indices, n_instances, row_len, len(files))
    names = [str(f) for f in files]

    def read(a: int, b: int) -> np.ndarray:
        ids = np.asarray(indices[a:b]).astype(np.int64)  # checked at open: all in [0, n_instances)
        out = np.empty((b - a, row_len), dtype=arrays[0].dtype)
        which = np.searchsorted(first, ids, side="right") - 1
        for j, (f, inst) in enumerate(zip(which, ids - first[which])):
            out[j] = arrays[f][inst * row_len : (inst + 1) * row_len]
        return out

    return TokenStream(
        path=p, format="olmo", n_rows=int(indices.size), row_len=row_len,
        rows_per_step=rows_per_step or OLMO_DEFAULTS[1],
        eos_id=OLMO_DEFAULTS[2] if eos_id is None else eos_id, vocab_size=None, tokenizer=None,
        dtype=arrays[0].dtype, manifest={"files": names, "instances": n_instances}, _read=read,
    )


_RANGE_CHUNK = 1 << 24  # global_indices entries per step of the range check


@functools.lru_cache(maxsize=8)
def _id_range(path: str, size: int, mtime_ns: int) -> tuple[int, int]:
    """``(min, max)`` of an OLMo ``global_indices.npy``, in chunks (flat memory). ``size`` and
    ``mtime_ns`` key the memo, so Dask workers that reopen the stream per shard pay the pass once."""
    ids = _raw_tokens(Path(path), None, "uint32")
    chunks = [np.asarray(ids[a : a + _RANGE_CHUNK]) for a in range(0, ids.size, _RANGE_CHUNK)]  # views
    return min((int(c.min()) for c in chunks), default=0), max((int(c.max()) for c in chunks), default=-1)


def _check_global_indices(gi_path: Path, indices: np.ndarray, n_instances: int, row_len: int, n_files: int) -> None:
    """``global_indices.npy`` against the token files: no more entries than instances, every id
    in ``[0, n_instances)``; else a DataError naming the file and the offending value."""
    where = f"the {n_files} token file(s) hold {n_instances} instances of {row_len} tokens"
    if indices.dtype.kind not in "iu":
        raise DataError(f"{gi_path}: holds {indices.dtype} values, expected integer instance ids")
    if indices.size > n_instances:
        raise DataError(f"{gi_path}: {indices.size} instance ids, more than the instances available: {where} "
                        "(a wrong row_len, or token files missing from the directory or paths.txt?)")
    if not indices.size:
        return
    st = gi_path.stat()
    lo, hi = _id_range(str(gi_path.resolve()), st.st_size, st.st_mtime_ns)
    if lo >= 0 and hi < n_instances:
        return
    for a in range(0, indices.size, _RANGE_CHUNK):
        chunk = np.asarray(indices[a : a + _RANGE_CHUNK]).astype(np.int64)
        bad = np.flatnonzero((chunk < 0) | (chunk >= n_instances))
        if bad.size:
            j = int(bad[0])
            raise DataError(f"{gi_path}: entry {a + j} is instance id {int(chunk[j])}, out of range: {where} "
                            f"(ids 0..{n_instances - 1})")
