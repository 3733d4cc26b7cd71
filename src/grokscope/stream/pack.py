"""Pass 2 of ``grokscope prepare``: put the tokenized documents in training order and pack rows.

A seeded permutation fixes the document order; documents are copied in that order, each followed
by EOS, into rows of ``seq_len + 1`` tokens (``tokens.npy``, with ``row_docs.npy`` naming the
document each row starts in); with ``shuffle="rows"`` the packed rows are then permuted by a
second seeded permutation. Files are written sequentially (no memory maps), so memory stays
flat however large the stream.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core import store
from grokscope.core.errors import DataError


class _NpyStreamWriter:
    """Write a C-order ``.npy`` of known shape sequentially (no memmap: RSS stays flat) to
    ``path.partial``; :func:`store.commit_npy` moves it into place. A failed write names the
    file; :meth:`abort` removes it."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.partial = store.partial_path(path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.expected = int(np.prod(shape)) if shape else 1
        self.written = 0
        self.f = open(self.partial, "wb")  # noqa: SIM115 - closed by close() or abort()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        with store.naming(self.partial):
            np.lib.format.write_array_header_1_0(self.f, header)
        self.offset = self.f.tell()  # where the data starts

    def write(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        with store.naming(self.partial):
            self.f.write(values.tobytes())
        self.written += values.size

    def close(self) -> None:
        with store.naming(self.partial):
            self.f.close()
        if self.written != self.expected:
            raise RuntimeError(f"{self.partial}: wrote {self.written} values, expected {self.expected}")

    def abort(self) -> None:
        """Close and delete the partial file (after a failed write: it would be written anew)."""
        try:
            self.f.close()
        except OSError:
            pass  # the flush of a full disk fails again; the file goes anyway
        self.partial.unlink(missing_ok=True)


def document_order(n_docs: int, seed: int, shuffle: str) -> np.ndarray:
    """Training order of the documents (ids in reading order)."""
    if shuffle == "none":
        return np.arange(n_docs, dtype=np.int64)
    return np.random.default_rng(seed).permutation(n_docs)


def row_order(n_rows: int, seed: int, shuffle: str) -> np.ndarray | None:
    """Permutation applied to the packed rows (``None``: rows stay in packing order). Its own
    stream of the seed, so the document order does not change when rows are shuffled too."""
    if shuffle != "rows":
        return None
    return np.random.default_rng([seed, 1]).permutation(n_rows)


def shuffle_and_pack(work: Path, state: dict[str, Any], seq_len: int, seed: int, shuffle: str, eos_id: int,
                     dtype: np.dtype, tokens_dir: Path, progress: bool) -> dict[str, int]:
    from tqdm.auto import tqdm

    row_len = seq_len + 1
    lengths = np.fromfile(work / "doc_lengths.bin", dtype=np.int64)  # [n_docs], file order
    if lengths.size != state["n_docs"]:
        raise DataError(f"{work}: work files are inconsistent; delete {work} and re-run")
    file_offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=file_offsets[1:])  # token offset of each document in doc_tokens.bin
    order = document_order(lengths.size, seed, shuffle)
    order = order[lengths[order] > 0]  # documents without tokens are not emitted
    span = lengths[order] + 1  # + EOS
    total = int(span.sum())
    n_rows = total // row_len
    if n_rows == 0:
        raise DataError(f"corpus has {total} tokens (with EOS), fewer than one row of seq_len+1 = {row_len}")
    n_keep = n_rows * row_len
    stream_starts = np.zeros(order.size, dtype=np.int64)
    np.cumsum(span[:-1], out=stream_starts[1:])  # start of each (permuted) document in the stream

    rows_perm = row_order(n_rows, seed, shuffle)
    pack_dir = work if rows_perm is not None else tokens_dir  # packed rows are permuted into tokens_dir after
    # the stream (twice while rows are permuted: packed, then shuffled) must fit before a byte is written
    store.check_free_space(tokens_dir / "tokens.npy",
                           n_rows * (row_len * dtype.itemsize + 8) * (2 if rows_perm is not None else 1))
    tokens_writer = _NpyStreamWriter(pack_dir / "tokens.npy", (n_rows, row_len), dtype)
    docs_writer = _NpyStreamWriter(pack_dir / "row_docs.npy", (n_rows,), np.dtype(np.int64))
    eos = np.array([eos_id], dtype=dtype)
    chunk_tokens = 1 << 22  # read at most 4M tokens of one document at a time
    bar = tqdm(total=n_keep, unit="tok", unit_scale=True, desc="shuffle+pack", disable=not progress)
    # a full disk, Ctrl-C: no partial stream stays behind (it is rebuilt from work/)
    with _removed_on_failure(tokens_writer, docs_writer), bar, open(work / "doc_tokens.bin", "rb") as src:
        fd = src.fileno()
        written = 0
        for doc in order:
            if written >= n_keep:
                break
            start, end = int(file_offsets[doc]), int(file_offsets[doc + 1])
            for a in range(start, end, chunk_tokens):
                b = min(end, a + chunk_tokens, start + (n_keep - written))
                if b <= a:
                    break
                raw = os.pread(fd, (b - a) * dtype.itemsize, a * dtype.itemsize)
                tokens_writer.write(np.frombuffer(raw, dtype=dtype))
                bar.update(b - a)
                written += b - a
            if written < n_keep:
                tokens_writer.write(eos)
                bar.update(1)
                written += 1
        # row_docs[r] = original id of the document holding token r * row_len
        for r0 in range(0, n_rows, 1 << 20):
            row_starts = np.arange(r0, min(n_rows, r0 + (1 << 20)), dtype=np.int64) * row_len
            which = np.searchsorted(stream_starts, row_starts, side="right") - 1
            docs_writer.write(order[which])
        tokens_writer.close()
        docs_writer.close()
        if rows_perm is not None:
            _permute_rows(tokens_writer, docs_writer.partial, rows_perm, tokens_dir, progress)
    store.commit_npy(tokens_dir / "row_docs.npy")
    # tokens.npy is committed by the caller after the manifest
    return {"n_rows": n_rows, "n_documents": int(order.size), "dropped_tokens": total - n_keep}


@contextlib.contextmanager
def _removed_on_failure(*writers: _NpyStreamWriter) -> Iterator[None]:
    """Abort (close and delete) every writer's partial file if the block raises."""
    try:
        yield
    except BaseException:
        for w in writers:
            w.abort()
        raise


def _permute_rows(packed: _NpyStreamWriter, packed_docs: Path, perm: np.ndarray, tokens_dir: Path,
                  progress: bool) -> None:
    """Write ``out[i] = packed[perm[i]]`` for tokens and row_docs, a block of rows at a time.
    Rows are read with ``pread`` (in file order within a block), not through a memory map: the
    kernel maps the pages around every faulted page of a map ("fault-around"), so random rows
    read through a map would pull most of the file into the process's resident memory."""
    from tqdm.auto import tqdm

    packed_tokens, shape, dtype, offset = packed.partial, packed.shape, packed.dtype, packed.offset
    row_bytes = shape[1] * dtype.itemsize
    docs = np.load(packed_docs)  # int64 per row: 8 bytes a row, small beside the tokens
    tokens_writer = _NpyStreamWriter(tokens_dir / "tokens.npy", shape, dtype)
    docs_writer = _NpyStreamWriter(tokens_dir / "row_docs.npy", docs.shape, docs.dtype)
    block = 1 << 16  # rows per block (~17 MB at row_len 129, uint16)
    with _removed_on_failure(tokens_writer, docs_writer), open(packed_tokens, "rb") as src:
        fd = src.fileno()
        for a in tqdm(range(0, perm.size, block), desc="shuffle rows", unit="block", disable=not progress):
            idx = perm[a:a + block]
            sort = np.argsort(idx, kind="stable")  # read the block in file order, write it in permuted order
            raw = b"".join([os.pread(fd, row_bytes, offset + int(r) * row_bytes) for r in idx[sort]])
            rows = np.empty((idx.size, shape[1]), dtype=dtype)
            rows[sort] = np.frombuffer(raw, dtype=dtype).reshape(idx.size, shape[1])
            tokens_writer.write(rows)
            docs_writer.write(docs[idx])
        tokens_writer.close()
        docs_writer.close()
    packed_tokens.unlink(missing_ok=True)
    packed_docs.unlink(missing_ok=True)


