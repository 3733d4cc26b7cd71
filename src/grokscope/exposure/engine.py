"""Exact whole-word search of many token phrases in a token stream, in one pass.

This is the compiled core of :mod:`grokscope.exposure.stage`. It knows nothing about studies,
tokenizers or files: it takes plain arrays.

* :class:`WordTables` — two boolean tables over the vocabulary: does the token's text *begin*
  with a letter/digit (so it would continue a word that precedes it), and does it *end* with
  one. :func:`grokscope.exposure.words.word_tables` builds them from a tokenizer.
* :class:`PhraseIndex` — a token trie over the phrase token sequences: a dense array for the
  root's children (one load per stream position) and an open-addressing hash table keyed on
  ``node * vocab_size + token`` for every deeper edge, fronted by a small Bloom filter so the
  common miss stays in cache. :func:`build_index` / :func:`build_index_arrays` make one.
* :func:`scan_rows` — walks the trie from every position of every row of a
  ``[n_rows, row_len]`` block (Numba, one core), adding whole-word matches to per-sequence
  counts and recording the first row of each sequence.
* :func:`scan_stream` — streams :func:`scan_rows` over a row range in chunks, splitting the
  counts at given row boundaries (the checkpoints' windows), so memory does not grow with the
  stream. It returns a :class:`ScanResult`; results of disjoint row ranges merge exactly
  (:func:`merge_results`), which is what the Dask scale-out relies on.

* :class:`WindowRules` — optional windowed matches, counted in the same pass: window ``q`` counts
  an accepted match of one of its *second* sequences that starts at most ``tokens`` tokens after
  the end of a match of one of its *first* sequences in the same row, with no EOS between (a
  long-distance dependency: the context word, then the critical word). Windows count as extra
  sequences ``n_phrase_sequences + q``, so results, shards and merges carry them unchanged.

A match of sequence ``p`` (length ``m``) at ``rows[r, i:i+m]`` counts when

1. it lies inside row ``r`` (rows are independent training units; matches never span rows,
   so shards of whole rows need no overlap),
2. it contains no EOS token (the trie never holds EOS, so a walk stops at one),
3. ``check_words`` is off, or: the token after it (``rows[r, i+m]``, if any) does not begin with
   a letter/digit, and, when ``p``'s first token itself begins with a letter/digit (no leading
   space: "This sketch" at a document start), the token before it (``rows[r, i-1]``, if any)
   does not end with one. EOS and other special tokens count as non-word on both sides.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grokscope.exposure.words import WordTables


# ---------------------------------------------------------------------------------------------
# windowed matches
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowRules:
    """Windows over the index's sequences (see the module docstring). Window ``q`` has first
    sequences ``first_seqs[first_ptr[q]:first_ptr[q+1]]``; sequence ``s`` is a second sequence of
    windows ``second_windows[second_ptr[s]:second_ptr[s+1]]``. ``tokens``: the largest gap, in
    tokens, from the last token of the first match to the first token of the second (1 = adjacent).
    ``eos_id``: the document boundary no window spans (-1: none)."""

    first_ptr: np.ndarray  # int64 [n_windows + 1]
    first_seqs: np.ndarray  # int32
    second_ptr: np.ndarray  # int64 [n_phrase_sequences + 1]
    second_windows: np.ndarray  # int32
    tokens: int
    eos_id: int = -1

    @property
    def n_windows(self) -> int:
        return int(self.first_ptr.shape[0] - 1)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.first_ptr, self.first_seqs, self.second_ptr, self.second_windows


def window_rules(n_sequences: int, windows: Sequence[tuple[Sequence[int], Sequence[int]]], tokens: int,
                 eos_id: int | None = None) -> WindowRules:
    """:class:`WindowRules` of ``windows``: per window (first sequence ids, second sequence ids)."""
    if tokens <= 0:
        raise ValueError(f"window_rules: tokens must be positive, got {tokens}")
    first_ptr = np.zeros(len(windows) + 1, dtype=np.int64)
    first_ptr[1:] = np.cumsum([len(f) for f, _ in windows])
    first_seqs = np.array([int(x) for f, _ in windows for x in f], dtype=np.int32)
    pairs = sorted((int(s2), q) for q, (_, second) in enumerate(windows) for s2 in set(second))
    bad = [x for x in first_seqs.tolist() + [p[0] for p in pairs] if not 0 <= x < n_sequences]
    if bad:
        raise ValueError(f"window_rules: sequence id {bad[0]} outside [0, {n_sequences})")
    counts = np.bincount(np.array([p[0] for p in pairs], dtype=np.int64), minlength=n_sequences)
    second_ptr = np.zeros(n_sequences + 1, dtype=np.int64)
    second_ptr[1:] = np.cumsum(counts)
    second_windows = np.array([q for _, q in pairs], dtype=np.int32)
    return WindowRules(first_ptr, first_seqs, second_ptr, second_windows, int(tokens),
                       -1 if eos_id is None else int(eos_id))


# ---------------------------------------------------------------------------------------------
# the trie
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhraseIndex:
    """A token trie over unique phrase sequences (``lengths[k]``: tokens of sequence ``k``).

    ``root_child[v]``: node reached from the root by token ``v`` (-1: none), ``[vocab_size]``.
    ``hash_table``: open-addressing table (linear probing) of ``2**hash_bits`` slots, each two
    int64 side by side (key, child: one cache line per probe), mapping key
    ``node * vocab_size + token`` (-1 = empty slot) to the child node, for all non-root edges.
    ``deep_token[v]``: token ``v`` occurs after the first token of some sequence. A [vocab]
    bool table that stays in L1/L2 cache: a step to a token that no phrase continues with is
    rejected before the filter or the table is touched (most steps, for a benchmark's lexicon).
    ``edge_filter``: a one-hash Bloom filter (int64 words, ``2**filter_bits`` bits, ~1 MB) of
    the same keys, so the common miss (no phrase continues with this token) is answered from
    cache without probing the large table.
    ``node_seq[n]``: the sequence ending at node ``n`` (-1: none). ``node_has_child[n]``.
    ``seq_start_check[k]``: sequence ``k``'s first token begins with a letter/digit, so the
    token before a match must not end with one.

    Pickled (e.g. scattered to Dask workers) as its sequences, not its tables: a few MB instead
    of tens, rebuilt on arrival and cached per process by content (``source_key``), so a worker
    builds each phrase set once however many shards and searches it serves."""

    lengths: np.ndarray
    vocab_size: int
    root_child: np.ndarray
    hash_table: np.ndarray
    hash_bits: int
    deep_token: np.ndarray
    edge_filter: np.ndarray
    filter_bits: int
    node_seq: np.ndarray
    node_has_child: np.ndarray
    seq_start_check: np.ndarray
    tables: WordTables = field(repr=False)
    flat: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int32))  # all sequences' tokens
    windows: WindowRules | None = None

    @functools.cached_property
    def source_key(self) -> str:
        """Content hash of (flat, lengths, tables, windows); computed only when the index is shipped."""
        return _source_key(self.flat, self.lengths, self.tables, self.windows)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _index_from_source, (self.source_key, self.flat, self.lengths, self.tables, self.windows)

    @property
    def n_phrase_sequences(self) -> int:
        """Token sequences in the trie (windows excluded)."""
        return int(self.lengths.shape[0])

    @property
    def n_sequences(self) -> int:
        """Counted ids: the trie's sequences, then one per window."""
        return self.n_phrase_sequences + (self.windows.n_windows if self.windows is not None else 0)

    @property
    def n_nodes(self) -> int:
        return int(self.node_seq.shape[0])


_FILTER_MULT = np.int64(-2960836687051489901)  # 0xD6E8FEB86659FD93: the Bloom filter's hash
_INDEX_CACHE: dict[str, PhraseIndex] = {}


def _source_key(flat: np.ndarray, lens: np.ndarray, tables: WordTables, windows: WindowRules | None = None) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    extra: tuple[np.ndarray, ...] = ()
    if windows is not None:
        extra = (*windows.arrays(), np.array([windows.tokens, windows.eos_id], dtype=np.int64))
    for a in (flat, lens, tables.continues_word, tables.ends_word, tables.tail_index, tables.cont_index,
              tables.pair_word, *extra):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _index_from_source(key: str, flat: np.ndarray, lens: np.ndarray, tables: WordTables,
                       windows: WindowRules | None = None) -> PhraseIndex:
    """Unpickle a :class:`PhraseIndex`: rebuild it from its sequences, once per process."""
    index = _INDEX_CACHE.get(key)
    if index is None:
        index = build_index_arrays(flat, lens, tables, windows)
        index.__dict__["source_key"] = key  # the cached_property's value: known, not re-hashed
        _INDEX_CACHE.clear()  # a process searches one phrase set at a time: keep only the latest
        _INDEX_CACHE[key] = index
    return index


def build_index(sequences: Iterable[Sequence[int]], tables: WordTables,
                windows: WindowRules | None = None) -> PhraseIndex:
    """Trie over ``sequences`` (must be unique, non-empty, ids < vocab size; EOS must not occur
    in them — a phrase never spans a document boundary), with optional ``windows`` over them.
    See :func:`build_index_arrays`."""
    seqs = [list(s) for s in sequences]
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((int(t) for s in seqs for t in s), dtype=np.int64, count=int(lens.sum()))
    return build_index_arrays(flat, lens, tables, windows)


def build_index_arrays(flat: np.ndarray, lengths: np.ndarray, tables: WordTables,
                       windows: WindowRules | None = None) -> PhraseIndex:
    """Trie over the sequences ``flat`` cut at ``lengths`` (int64 ``[total]`` / ``[n]``).
    Built level by level with NumPy (``np.unique`` of ``parent * vocab + token``), so nodes are
    numbered breadth-first and nothing loops in Python over sequences."""
    vocab = tables.vocab_size
    lens = np.asarray(lengths, dtype=np.int64)
    flat = np.asarray(flat, dtype=np.int64)
    n = lens.size
    if windows is not None and windows.second_ptr.shape[0] != n + 1:
        raise ValueError(f"build_index: windows are over {windows.second_ptr.shape[0] - 1} sequences, not {n}")
    if n and lens.min() <= 0:
        raise ValueError(f"build_index: sequence {int(np.argmin(lens))} is empty")
    if int(lens.sum()) != flat.size:
        raise ValueError(f"build_index: lengths sum to {int(lens.sum())} but there are {flat.size} tokens")
    if flat.size and (flat.min() < 0 or flat.max() >= vocab):
        bad = int(np.flatnonzero((flat < 0) | (flat >= vocab))[0])
        k = int(np.searchsorted(np.cumsum(lens), bad, side="right"))
        raise ValueError(f"build_index: sequence {k} has token id {int(flat[bad])} outside [0, {vocab})")
    max_len = int(lens.max()) if n else 0
    padded = np.full((n, max_len), -1, dtype=np.int64)  # [n_sequences, max_len]
    starts = np.cumsum(lens) - lens
    padded[np.repeat(np.arange(n), lens), np.arange(flat.size) - np.repeat(starts, lens)] = flat
    node = np.zeros(n, dtype=np.int64)  # node reached by each sequence so far (0 = root)
    parents, tokens, childs = [], [], []
    n_nodes = 1
    for d in range(max_len):
        active = np.flatnonzero(lens > d)
        key = node[active] * vocab + padded[active, d]
        uniq, inv = np.unique(key, return_inverse=True)
        parents.append(uniq // vocab)
        tokens.append(uniq % vocab)
        childs.append(n_nodes + np.arange(uniq.size, dtype=np.int64))
        node[active] = n_nodes + inv.reshape(-1)
        n_nodes += uniq.size
    parent = np.concatenate(parents) if parents else np.zeros(0, np.int64)
    token = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    child = np.concatenate(childs) if childs else np.zeros(0, np.int64)
    ends = np.sort(node)
    if n > 1 and not np.all(ends[1:] != ends[:-1]):
        raise ValueError("build_index: sequences must be unique")
    node_seq = np.full(n_nodes, -1, dtype=np.int32)
    node_seq[node] = np.arange(n, dtype=np.int32)
    has_child = np.zeros(n_nodes, dtype=np.bool_)
    has_child[parent] = True
    root_child = np.full(vocab, -1, dtype=np.int32)
    at_root = parent == 0
    root_child[token[at_root]] = child[at_root]
    deep = ~at_root
    bits = max(4, int(np.ceil(np.log2(int(deep.sum()) * 2 + 1))))
    table = np.full(2 << bits, -1, dtype=np.int64)  # [key0, child0, key1, child1, ...]
    n_deep = int(deep.sum())
    fbits = min(26, max(10, int(np.ceil(np.log2(max(1, n_deep) * 8)))))
    edge_filter = np.zeros(1 << (fbits - 6), dtype=np.int64)
    if deep.any():
        deep_keys = parent[deep] * vocab + token[deep]
        _kernels().fill(table, deep_keys, child[deep], np.int64(64 - bits), np.int64((1 << bits) - 1))
        with np.errstate(over="ignore"):
            bit = ((deep_keys * _FILTER_MULT) >> np.int64(64 - fbits)) & np.int64((1 << fbits) - 1)
        np.bitwise_or.at(edge_filter.view(np.uint64), bit >> 6,
                         np.left_shift(np.uint64(1), (bit & 63).astype(np.uint64)))
    start_check = tables.continues_word[padded[:, 0]] if n else np.zeros(0, dtype=np.bool_)
    deep_token = np.zeros(vocab, dtype=np.bool_)
    deep_token[token[deep]] = True
    return PhraseIndex(
        flat=flat.astype(np.int32),
        lengths=lens, vocab_size=vocab, root_child=root_child, hash_table=table,
        hash_bits=bits, deep_token=deep_token, edge_filter=edge_filter, filter_bits=fbits, node_seq=node_seq,
        node_has_child=has_child,
        seq_start_check=np.ascontiguousarray(start_check, dtype=np.bool_), tables=tables, windows=windows,
    )


# ---------------------------------------------------------------------------------------------
# the compiled scan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Kernels:
    scan: Any
    fill: Any


_KERNELS: _Kernels | None = None


def _kernels() -> _Kernels:
    """The compiled inner loops (:mod:`grokscope.exposure.kernels`; compiled once per process, cached on
    disk by Numba)."""
    global _KERNELS
    if _KERNELS is None:
        from grokscope.exposure import kernels

        _KERNELS = _Kernels(scan=kernels.scan, fill=kernels.fill)
    return _KERNELS


def first_out_of_vocab(rows: np.ndarray, vocab_size: int) -> tuple[int, int, int] | None:
    """``(row, column, id)`` of the first token id outside ``[0, vocab_size)`` in ``rows``, or None."""
    if rows.size == 0:
        return None
    negative = rows.dtype.kind == "i" and int(rows.min()) < 0
    if not negative and int(rows.max()) < vocab_size:
        return None
    r, c = np.argwhere((rows >= vocab_size) | (rows < 0))[0]
    return int(r), int(c), int(rows[r, c])


class OutOfVocabError(ValueError):
    """A token id outside the index's vocabulary (``row`` is absolute)."""

    def __init__(self, row: int, column: int, token: int, vocab_size: int) -> None:
        super().__init__(f"row {row}, position {column}: token id {token} outside the vocabulary [0, {vocab_size})")
        self.row, self.column, self.token, self.vocab_size = row, column, token, vocab_size


def scan_rows(index: PhraseIndex, rows: np.ndarray, row0: int = 0, counts: np.ndarray | None = None,
              first_row: np.ndarray | None = None, check_words: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Add the matches in ``rows`` (``[n_rows, row_len]``; absolute row of ``rows[0]`` is
    ``row0``) to ``counts`` (int64 ``[n_sequences]``) and set ``first_row`` (int64, -1 =
    not yet seen) where unset. Returns ``(counts, first_row)`` (new arrays if None given).
    Raises :class:`OutOfVocabError` on a token id ≥ the index's vocabulary size."""
    if counts is None:
        counts = np.zeros(index.n_sequences, dtype=np.int64)
    if first_row is None:
        first_row = np.full(index.n_sequences, -1, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"scan_rows: rows must be 2-D [n_rows, row_len], got shape {rows.shape}")
    bad = first_out_of_vocab(rows, index.vocab_size)
    if bad is not None:
        raise OutOfVocabError(row0 + bad[0], bad[1], bad[2], index.vocab_size)
    if rows.shape[0] == 0 or index.n_sequences == 0:
        return counts, first_row
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    w = index.windows
    n_phrase = index.n_phrase_sequences
    if w is not None and w.n_windows > 0:
        win = (np.int64(w.n_windows), *w.arrays(), np.int64(w.tokens), np.int64(w.eos_id),
               np.full(n_phrase, -1, dtype=np.int64), np.full(n_phrase, -1, dtype=np.int64))
    else:
        z64, z32 = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        win = (np.int64(0), z64, z32, np.zeros(n_phrase + 1, dtype=np.int64), z32, np.int64(0), np.int64(-1),
               np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    _kernels().scan(
        rows, np.int64(row0), np.int64(index.vocab_size), index.root_child, index.hash_table,
        np.int64(64 - index.hash_bits), np.int64((1 << index.hash_bits) - 1), index.deep_token,
        index.edge_filter, np.int64(64 - index.filter_bits), np.int64((1 << index.filter_bits) - 1),
        index.node_seq, index.node_has_child, index.seq_start_check, index.tables.continues_word,
        index.tables.ends_word, index.tables.tail_index, index.tables.cont_index, index.tables.pair_word,
        bool(check_words), counts, first_row, *win,
    )
    return counts, first_row


# ---------------------------------------------------------------------------------------------
# streaming over a row range, split at checkpoint windows
# ---------------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """Matches in a row range, per sequence. ``first_row``: int64 ``[n_sequences]`` (-1 =
    none). Counts are sparse triplets: ``interval`` (int32), ``seq`` (int32), ``count`` (int64)
    with interval ``k`` = rows ``[edges[k], edges[k+1])`` of the ``edges`` the scan was given.
    Each (interval, seq) appears at most once."""

    first_row: np.ndarray
    interval: np.ndarray
    seq: np.ndarray
    count: np.ndarray

    def totals(self) -> np.ndarray:
        """Matches per sequence over the whole range, int64 ``[n_sequences]``."""
        out = np.zeros(self.first_row.shape[0], dtype=np.int64)
        np.add.at(out, self.seq, self.count)
        return out

    def dense(self, n_intervals: int) -> np.ndarray:
        """Counts as a dense int64 ``[n_sequences, n_intervals]`` (small inputs/tests only)."""
        out = np.zeros((self.first_row.shape[0], n_intervals), dtype=np.int64)
        np.add.at(out, (self.seq, self.interval), self.count)
        return out


def empty_result(n_sequences: int) -> ScanResult:
    return ScanResult(
        first_row=np.full(n_sequences, -1, dtype=np.int64),
        interval=np.zeros(0, dtype=np.int32),
        seq=np.zeros(0, dtype=np.int32),
        count=np.zeros(0, dtype=np.int64),
    )


def scan_stream(index: PhraseIndex, read_rows: Callable[[int, int], np.ndarray], start: int, stop: int,
                edges: Sequence[int] | np.ndarray, chunk_rows: int = 8192, check_words: bool = True,
                progress: Callable[[int], None] | None = None) -> ScanResult:
    """Scan rows ``[start, stop)`` read in chunks of ``chunk_rows`` with ``read_rows(a, b)``
    (``[b-a, row_len]``), counting per interval of the sorted row boundaries ``edges``
    (``edges[0] = 0``, ``edges[-1]`` ≥ ``stop``). ``progress(n_rows_done)`` is called per chunk.
    Memory: one chunk plus two ``[n_sequences]`` arrays plus the non-zero triplets."""
    edges_arr = np.asarray(edges, dtype=np.int64)
    if edges_arr.size < 2 or edges_arr[0] != 0 or np.any(np.diff(edges_arr) < 0) or edges_arr[-1] < stop:
        raise ValueError(f"scan_stream: edges must be sorted, start at 0 and reach {stop}; got {edges_arr[:5]}…")
    n = index.n_sequences
    first_row = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    parts_i: list[np.ndarray] = []
    parts_s: list[np.ndarray] = []
    parts_c: list[np.ndarray] = []
    for k in range(edges_arr.size - 1):
        a, b = max(start, int(edges_arr[k])), min(stop, int(edges_arr[k + 1]))
        if a >= b:
            continue
        for c0 in range(a, b, chunk_rows):
            c1 = min(b, c0 + chunk_rows)
            scan_rows(index, read_rows(c0, c1), c0, counts, first_row, check_words)
            if progress is not None:
                progress(c1 - c0)
        nz = np.flatnonzero(counts)
        if nz.size:
            parts_i.append(np.full(nz.size, k, dtype=np.int32))
            parts_s.append(nz.astype(np.int32))
            parts_c.append(counts[nz].copy())
            counts[nz] = 0
    if not parts_s:
        res = empty_result(n)
        res.first_row = first_row
        return res
    return ScanResult(first_row, np.concatenate(parts_i), np.concatenate(parts_s), np.concatenate(parts_c))


def merge_results(results: Sequence[ScanResult]) -> ScanResult:
    """Combine scans of disjoint row ranges (any order): earliest first row, summed counts."""
    if not results:
        raise ValueError("merge_results: nothing to merge")
    n = results[0].first_row.shape[0]
    big = np.iinfo(np.int64).max
    first = np.full(n, big, dtype=np.int64)
    for r in results:
        fr = np.where(r.first_row < 0, big, r.first_row)
        np.minimum(first, fr, out=first)
    first[first == big] = -1
    inter = np.concatenate([r.interval for r in results])
    seq = np.concatenate([r.seq for r in results])
    cnt = np.concatenate([r.count for r in results])
    if seq.size == 0:
        out = empty_result(n)
        out.first_row = first
        return out
    key = seq.astype(np.int64) * (int(inter.max()) + 1) + inter
    uniq, inv = np.unique(key, return_inverse=True)
    summed = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(summed, inv, cnt)
    width = int(inter.max()) + 1
    return ScanResult(first, (uniq % width).astype(np.int32), (uniq // width).astype(np.int32), summed)
