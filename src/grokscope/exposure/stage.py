"""Exposure: when, in training order, did each critical phrase (and its bad counterpart) occur?

For every pair of ``phrases.parquet`` this stage searches the token stream for the critical
phrase and the bad phrase, tokenized with the tokenizer of the model under study, and writes
``exposure.parquet`` (docs/CONTRACTS.md "Exposure"): the first step at which each phrase
occurred (``r // B + 1`` for the first occurrence in row ``r``), its total count, and its
cumulative count in window(t) = rows ``[0, t·B)`` for every checkpoint step ``t``.

Variants (counts sum over them, identical token sequences counted once):
``mid`` — " this sketch" (mid-text, leading space); ``sentence_start`` — " This sketch"
(after a full stop) and "This sketch" (at a document or line start).

Matching is exact on token ids with whole-word boundaries (see :mod:`grokscope.exposure.engine`):
one pass over the stream for all phrases, a Numba inner loop, chunked over the memory map.
Rows are independent training units and a match never spans a row, so the stream splits into
shards of whole rows with no overlap; with ``--workers N`` (> 1) shards run on a
``dask.distributed.LocalCluster`` (one thread per worker), with ``--scheduler`` on any Dask
cluster; the merge (earliest first row, summed counts) is exact, so results are identical to a
single-process run. Finished shards are kept in ``exposure.parts/`` so a killed run resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.errors import ConfigError, DataError, GrokscopeError, MissingStageError

VARIANTS = ("mid", "sentence_start")
DEFAULT_CHUNK_ROWS = 8192
DEFAULT_SHARD_ROWS = 1 << 16  # rows per resumable shard (≈8.5M tokens at row_len 129)


# ---------------------------------------------------------------------------------------------
# phrases -> token sequences
# ---------------------------------------------------------------------------------------------
def variant_texts(phrase: str, variants: Sequence[str]) -> list[str]:
    """The surface forms searched for ``phrase``: mid-text " this sketch"; sentence-start
    " This sketch" and "This sketch". Empty phrase -> []."""
    phrase = phrase.strip()
    if not phrase:
        return []
    out: list[str] = []
    for v in variants:
        if v == "mid":
            out.append(" " + phrase)
        elif v == "sentence_start":
            cap = phrase[0].upper() + phrase[1:]
            out += [" " + cap, cap]
        else:
            raise ConfigError(f"exposure: unknown variant {v!r}; expected one of {list(VARIANTS)}")
    return list(dict.fromkeys(out))


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens (the Rust batch encoder when there is one)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        fast = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class PhraseSequences:
    """Unique token sequences over all phrases, and which belong to which phrase.
    Phrase ``i`` (of ``phrases``) owns sequences ``seq_ids[offsets[i]:offsets[i+1]]``."""

    phrases: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]
    offsets: np.ndarray  # int64 [n_phrases + 1]
    seq_ids: np.ndarray  # int32 [n_memberships]


def tokenize_phrases(tokenizer: Any, phrases: Sequence[str], variants: Sequence[str],
                     eos_id: int | None = None) -> PhraseSequences:
    """Tokenize each distinct phrase in each variant; dedupe identical sequences (per phrase and
    globally). Sequences containing ``eos_id`` are dropped (they can never match)."""
    uniq = list(dict.fromkeys(phrases))
    texts: list[str] = []
    owner: list[int] = []
    for i, p in enumerate(uniq):
        for t in variant_texts(p, variants):
            texts.append(t)
            owner.append(i)
    encoded = _encode(tokenizer, texts)
    seq_index: dict[tuple[int, ...], int] = {}
    members: list[list[int]] = [[] for _ in uniq]
    for i, ids in zip(owner, encoded):
        s = tuple(int(x) for x in ids)
        if not s or (eos_id is not None and eos_id in s):
            continue
        k = seq_index.setdefault(s, len(seq_index))
        if k not in members[i]:
            members[i].append(k)
    offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(m) for m in members])
    flat = np.array([k for m in members for k in m], dtype=np.int32)
    return PhraseSequences(tuple(uniq), tuple(seq_index), offsets, flat)


# ---------------------------------------------------------------------------------------------
# checkpoints and windows
# ---------------------------------------------------------------------------------------------
def pythia_steps() -> list[int]:
    """Pythia's 154 checkpoints: 0, 1, 2, 4, …, 512, then every 1000 to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))


def checkpoint_dirs_steps(spec: str) -> list[int]:
    """Steps of the checkpoints named by ``spec`` (a checkpoint dir, a run/study dir, a glob;
    see :func:`grokscope.core.checkpoints.discover_checkpoints`)."""
    from grokscope.core.checkpoints import discover_checkpoints

    return [c.step for c in discover_checkpoints([spec])]


def parse_checkpoints(specs: Sequence[str]) -> list[int]:
    """Sorted unique steps from items that are step numbers (comma lists allowed), ``pythia``,
    or checkpoint directories / globs."""
    steps: list[int] = []
    for spec in specs:
        for item in (x.strip() for x in str(spec).split(",")):
            if not item:
                continue
            if item.lstrip("-").isdigit():
                s = int(item)
                if s < 0:
                    raise ConfigError(f"checkpoints: step {s} is negative")
                steps.append(s)
            elif item.lower() == "pythia":
                steps += pythia_steps()
            else:
                steps += checkpoint_dirs_steps(item)
    if not steps:
        raise ConfigError("checkpoints: no steps given (expected e.g. '0,1,2,4,1000', 'pythia' or checkpoint dirs)")
    return sorted(set(steps))


def window_edges(steps: Sequence[int], rows_per_step: int, n_rows: int, where: str = "token stream") -> np.ndarray:
    """Row boundaries ``[0, t_1·B, …, t_k·B, n_rows]`` (int64). A step whose window goes past
    the stream is an error."""
    if rows_per_step <= 0:
        raise ConfigError(f"{where}: rows per step must be positive, got {rows_per_step}")
    for t in steps:
        if t * rows_per_step > n_rows:
            raise DataError(
                f"{where}: checkpoint step {t} needs {t * rows_per_step} rows ({t} steps × {rows_per_step} "
                f"rows/step) but the stream has only {n_rows} rows (last full step {n_rows // rows_per_step})"
            )
    return np.array([0] + [t * rows_per_step for t in steps] + [n_rows], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """Everything a Dask worker needs to reopen the token stream (streams are memory maps and
    are not shipped between processes)."""

    path: str
    format: str = "auto"
    rows_per_step: int | None = None
    row_len: int | None = None
    eos_id: int | None = None

    def open(self) -> Any:
        from grokscope.stream.readers import open_stream

        try:
            return open_stream(self.path, format=self.format, rows_per_step=self.rows_per_step,
                               row_len=self.row_len, eos_id=self.eos_id)
        except GrokscopeError:
            raise
        except (OSError, ValueError) as e:
            raise DataError(f"{self.path}: could not read the token stream: {e}") from None


# ---------------------------------------------------------------------------------------------
# the search (single process or Dask)
# ---------------------------------------------------------------------------------------------
def shard_ranges(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(a, min(n_rows, a + shard_rows)) for a in range(0, n_rows, shard_rows)]


def scan_shard(spec: StreamSpec, index: Any, start: int, stop: int, edges: np.ndarray,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, check_words: bool = True) -> Any:
    """Scan rows ``[start, stop)`` of the stream (runs in a Dask worker or in-process)."""
    from grokscope.exposure.engine import OutOfVocabError, scan_stream

    stream = spec.open()
    try:
        return scan_stream(index, stream.rows, start, stop, edges, chunk_rows, check_words)
    except OutOfVocabError as e:
        raise DataError(
            f"{spec.path}: row {e.row}, position {e.column}: token id {e.token} is outside the "
            f"tokenizer's vocabulary (size {e.vocab_size}); the token file and the tokenizer do not match"
        ) from None


_SCATTERED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _scattered_index(client: Any, index: Any) -> Any:
    """The index as a future on ``client``'s workers, scattered once per client and phrase set
    (``source_key``): a long-lived client that searches several streams or runs several
    searches ships it once. Holds the latest index per client until the client goes away."""
    per_client = _SCATTERED.setdefault(client, {})
    fut = per_client.get(index.source_key)
    if fut is None or fut.status != "finished":
        fut = client.scatter(index, broadcast=True, hash=False)
        per_client.clear()
        per_client[index.source_key] = fut
    return fut


def _scan_shard_compact(*args: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """:func:`scan_shard` for a Dask worker: the first rows travel back sparse (sequences seen
    in the shard, and their rows) instead of a dense ``[n_sequences]`` array, so the client
    receives kilobytes per shard rather than megabytes."""
    r = scan_shard(*args)
    seen = np.flatnonzero(r.first_row >= 0).astype(np.int32)
    first = r.first_row[seen]
    r.first_row = np.zeros(0, dtype=np.int64)
    return seen, first, r


def _expand(compact: tuple[np.ndarray, np.ndarray, Any], n_sequences: int) -> Any:
    seen, first, r = compact
    r.first_row = np.full(n_sequences, -1, dtype=np.int64)
    r.first_row[seen] = first
    return r


class _Parts:
    """Finished shard results on disk (``exposure.parts/``), keyed by the search's inputs."""

    def __init__(self, root: Path | None, key: str) -> None:
        self.root = root
        if root is None:
            return
        stamp = root / "key.txt"
        if root.exists() and (not stamp.exists() or stamp.read_text() != key):
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)

    def _path(self, a: int, b: int) -> Path:
        assert self.root is not None
        return self.root / f"rows_{a:012d}_{b:012d}.npz"

    def load(self, a: int, b: int) -> Any:
        from grokscope.exposure.engine import ScanResult

        if self.root is None or not self._path(a, b).exists():
            return None
        with np.load(self._path(a, b)) as z:
            return ScanResult(z["first_row"], z["interval"], z["seq"], z["count"])

    def save(self, a: int, b: int, res: Any) -> None:
        if self.root is None:
            return
        from grokscope.core import store

        with store.atomic_path(self._path(a, b)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, first_row=res.first_row, interval=res.interval, seq=res.seq, count=res.count)

    def remove(self) -> None:
        if self.root is not None and self.root.exists():
            shutil.rmtree(self.root)


def search_stream(spec: StreamSpec, index: Any, n_rows: int, edges: np.ndarray, *, workers: int = 1,
                  scheduler: str = "", shard_rows: int = DEFAULT_SHARD_ROWS, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  check_words: bool = True, parts_dir: Path | None = None, parts_key: str = "",
                  progress: bool = True, client: Any = None) -> Any:
    """All matches of ``index`` in the stream, merged over shards (a ``ScanResult``).
    ``workers == 1``, no ``scheduler`` and no ``client``: in this process. Otherwise on Dask:
    the given ``client`` (left open), a ``Client(scheduler)``, or a ``LocalCluster`` of
    ``workers`` single-threaded processes."""
    from grokscope.exposure.engine import merge_results

    shards = shard_ranges(n_rows, shard_rows)
    parts = _Parts(parts_dir, parts_key)
    results = []
    todo = []
    for a, b in shards:
        r = parts.load(a, b)
        if r is None:
            todo.append((a, b))
        else:
            results.append(r)
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(b - a for a, b in todo), unit="row", desc="exposure", disable=not progress)
    try:
        if workers <= 1 and not scheduler and client is None:
            for a, b in todo:
                r = scan_shard(spec, index, a, b, edges, chunk_rows, check_words)
                parts.save(a, b, r)
                results.append(r)
                bar.update(b - a)
        else:
            results += _search_dask(spec, index, todo, edges, workers, scheduler, chunk_rows, check_words, parts, bar,
                                    client)
    finally:
        bar.close()
    if not results:
        from grokscope.exposure.engine import empty_result

        return empty_result(index.n_sequences)
    return merge_results(results)


def _search_dask(spec: StreamSpec, index: Any, todo: list[tuple[int, int]], edges: np.ndarray, workers: int,
                 scheduler: str, chunk_rows: int, check_words: bool, parts: _Parts, bar: Any,
                 client: Any = None) -> list[Any]:
    from dask.distributed import Client, LocalCluster, as_completed

    own = client is None
    cluster = None
    if own and scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"--scheduler {scheduler}: could not connect to the Dask scheduler: {e}") from None
    elif own:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        index_f = _scattered_index(client, index)
        futures = {
            client.submit(_scan_shard_compact, spec, index_f, a, b, edges, chunk_rows, check_words,
                          pure=False): (a, b)
            for a, b in todo
        }
        out = []
        for fut in as_completed(futures):
            a, b = futures[fut]
            r = _expand(fut.result(), index.n_sequences)
            parts.save(a, b, r)
            out.append(r)
            bar.update(b - a)
        return out
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# per-pair table
# ---------------------------------------------------------------------------------------------
def phrase_exposure(seqs: PhraseSequences, result: Any, n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct phrase: first row (int64, -1 never) and counts per interval, int64
    ``[n_phrases, n_intervals]`` (summed over the phrase's sequences)."""
    n_ph = len(seqs.phrases)
    owner = np.repeat(np.arange(n_ph, dtype=np.int64), np.diff(seqs.offsets))
    counts = np.zeros((n_ph, n_intervals), dtype=np.int64)
    first = np.full(n_ph, -1, dtype=np.int64)
    if owner.size == 0:
        return first, counts
    # sequence -> phrases that own it (a sequence can be shared: "This sketch" is a variant of both)
    order = np.argsort(seqs.seq_ids, kind="stable")
    s_sorted = seqs.seq_ids[order]
    o_sorted = owner[order]
    lo = np.searchsorted(s_sorted, result.seq, side="left")
    hi = np.searchsorted(s_sorted, result.seq, side="right")
    reps = hi - lo
    trip = np.repeat(np.arange(result.seq.size), reps)
    pos = np.repeat(lo, reps) + (np.arange(trip.size) - np.repeat(np.cumsum(reps) - reps, reps))
    np.add.at(counts, (o_sorted[pos], result.interval[trip]), result.count[trip])
    big = np.iinfo(np.int64).max
    fr = result.first_row[seqs.seq_ids]
    fr = np.where(fr < 0, big, fr)
    first_b = np.full(n_ph, big, dtype=np.int64)
    np.minimum.at(first_b, owner, fr)
    first = np.where(first_b == big, -1, first_b)
    return first, counts


def exposure_table(pairs: Any, good_first: np.ndarray, good_counts: np.ndarray, bad_first: np.ndarray,
                   bad_counts: np.ndarray, steps: Sequence[int], rows_per_step: int) -> Any:
    """The exposure.parquet table: per pair first steps, totals, cumulative count per step.
    ``*_counts`` are per-interval ``[n_pairs, len(steps) + 1]``; ``*_first`` first rows."""
    import pandas as pd

    cols: dict[str, Any] = {
        "uid": pairs["uid"].to_numpy(),
        "pair_id": pairs["pair_id"].to_numpy(),
        "supported": pairs["supported"].to_numpy(dtype=bool),
        "good_phrase": pairs["critical_phrase"].fillna("").astype(str).to_numpy(),
        "bad_phrase": pairs["bad_phrase"].fillna("").astype(str).to_numpy(),
    }
    for side, first in (("good", good_first), ("bad", bad_first)):
        step = pd.array(first // rows_per_step + 1, dtype="Int64")
        step[first < 0] = pd.NA  # never occurred
        cols[f"{side}_first_step"] = step
    cols["good_total_count"] = good_counts.sum(axis=1)
    cols["bad_total_count"] = bad_counts.sum(axis=1)
    good_cum = np.cumsum(good_counts, axis=1)
    bad_cum = np.cumsum(bad_counts, axis=1)
    for j, t in enumerate(steps):
        cols[f"good_count_{t}"] = good_cum[:, j]  # intervals 0..j = rows [0, t·B)
        cols[f"bad_count_{t}"] = bad_cum[:, j]
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------
@dataclass
class ExposureSummary:
    pairs: int
    phrases: int
    sequences: int
    rows: int
    tokens: int
    seconds: float
    good_seen_final: int
    bad_seen_final: int
    skipped: bool = False
    tokenize_seconds: float = 0.0
    search_seconds: float = 0.0


def _read_phrases(path: Path) -> tuple[Any, dict[str, Any]]:
    import pandas as pd

    from grokscope.core import store

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataError(f"{path}: could not read the phrases table: {e}") from None
    need = ["uid", "pair_id", "supported", "critical_phrase", "bad_phrase"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected the phrases table of docs/CONTRACTS.md")
    return df, store.read_parquet_metadata(path)


def _load_study_tokenizer(tokenizer: str | None, stream: Any) -> Any:
    from grokscope.core.tokenizer import load_tokenizer

    if tokenizer:
        return load_tokenizer(tokenizer)
    if getattr(stream, "tokenizer_dir", None) is not None:
        return load_tokenizer(stream.tokenizer_dir)
    raise ConfigError(
        f"{stream.path}: the token stream has no tokenizer/ directory; give the tokenizer of the model "
        "under study with --tokenizer (tokenizer.json, a vocab.json+merges.txt dir, or an HF dir)"
    )


def _check_tokenizer(stream: Any, tok: Any) -> tuple[str, int]:
    """The tokenizer's fingerprint and vocabulary size, after checking them against what the
    stream recorded (manifest ``tokenizer_fingerprint`` and ``vocab_size``)."""
    from grokscope.core.tokenizer import tokenizer_fingerprint, vocab_size

    fp = tokenizer_fingerprint(tok)
    recorded = getattr(stream, "tokenizer", None)
    if stream.format == "grokscope" and recorded and recorded != fp:
        raise DataError(
            f"{stream.path}/manifest.json: the token stream was made with tokenizer fingerprint {recorded}, "
            f"but the tokenizer used for the phrases has fingerprint {fp}; search with the stream's own tokenizer"
        )
    n_vocab = vocab_size(tok)
    sv = getattr(stream, "vocab_size", None)
    if sv is not None and int(sv) != n_vocab:
        raise DataError(
            f"{stream.path}: the token stream records a vocabulary of {sv} ids but the tokenizer has {n_vocab}"
        )
    return fp, n_vocab


def compute_exposure(phrases_path: Path, spec: StreamSpec, steps: Sequence[int], out_path: Path, *,
                     tokenizer: str | None = None, variants: Sequence[str] = VARIANTS, workers: int = 1,
                     scheduler: str = "", shard_rows: int = DEFAULT_SHARD_ROWS, progress: bool = True,
                     force: bool = False) -> ExposureSummary:
    """Search the stream for every pair's phrases and write ``out_path`` (exposure.parquet).
    Skips (returns ``skipped=True``) when ``out_path`` exists with the same inputs."""
    from grokscope.core import store
    from grokscope.exposure.engine import build_index, word_tables

    t0 = time.perf_counter()
    variants = list(dict.fromkeys(variants))
    bad_v = sorted(set(variants) - set(VARIANTS))
    if bad_v or not variants:
        raise ConfigError(f"exposure: variants {variants} invalid; expected a non-empty subset of {list(VARIANTS)}")
    pairs, pmeta = _read_phrases(phrases_path)
    stream = spec.open()
    B = stream.rows_per_step
    if not B:
        raise ConfigError(
            f"{spec.path}: the token stream does not record rows per step; give --rows-per-step "
            "(the training batch size in rows; Pythia: 1024)"
        )
    steps = sorted(set(int(s) for s in steps))
    edges = window_edges(steps, B, stream.n_rows, spec.path)
    tok = _load_study_tokenizer(tokenizer, stream)
    fp, n_vocab = _check_tokenizer(stream, tok)
    meta = {
        "steps": steps, "rows_per_step": int(B), "row_len": int(stream.row_len),
        "tokens_path": str(Path(stream.path).resolve()), "tokenizer_fingerprint": fp, "variants": variants,
        "benchmark_fingerprint": pmeta.get("benchmark_fingerprint", ""), "n_rows": int(stream.n_rows),
        "whole_words": True,
    }
    phrases_sha = store.file_sha256(phrases_path)
    key = hashlib.sha256(json.dumps([meta, phrases_sha], sort_keys=True).encode()).hexdigest()[:16]
    meta["inputs_key"] = key
    if out_path.exists() and not force and store.read_parquet_metadata(out_path).get("inputs_key") == key:
        return ExposureSummary(len(pairs), 0, 0, int(stream.n_rows), int(stream.n_rows * stream.row_len),
                               0.0, 0, 0, skipped=True)

    good = pairs["critical_phrase"].fillna("").astype(str).tolist()
    bad = pairs["bad_phrase"].fillna("").astype(str).tolist()
    eos = getattr(stream, "eos_id", None)
    t_tok = time.perf_counter()
    seqs = tokenize_phrases(tok, good + bad, variants, eos_id=eos)
    tables = word_tables(tok)
    t_tok = time.perf_counter() - t_tok
    t_search = time.perf_counter()
    if tables.vocab_size < n_vocab:
        tables = _pad_tables(tables, n_vocab)
    index = build_index(seqs.sequences, tables)
    result = search_stream(spec, index, stream.n_rows, edges, workers=workers, scheduler=scheduler,
                           shard_rows=shard_rows, parts_dir=out_path.parent / (out_path.stem + ".parts"),
                           parts_key=key, progress=progress)
    t_search = time.perf_counter() - t_search
    first, counts = phrase_exposure(seqs, result, len(edges) - 1)
    pos = {p: i for i, p in enumerate(seqs.phrases)}
    gi = np.array([pos[p] for p in good], dtype=np.int64)
    bi = np.array([pos[p] for p in bad], dtype=np.int64)
    table = exposure_table(pairs, first[gi], counts[gi], first[bi], counts[bi], steps, B)
    store.write_parquet(out_path, table, metadata=meta)
    _Parts(out_path.parent / (out_path.stem + ".parts"), key).remove()
    last = steps[-1] if steps else None
    return ExposureSummary(
        pairs=len(pairs), phrases=len(seqs.phrases), sequences=len(seqs.sequences), rows=int(stream.n_rows),
        tokens=int(stream.n_rows * stream.row_len), seconds=time.perf_counter() - t0,
        good_seen_final=int((table[f"good_count_{last}"] > 0).sum()) if last is not None else 0,
        bad_seen_final=int((table[f"bad_count_{last}"] > 0).sum()) if last is not None else 0,
        tokenize_seconds=t_tok, search_seconds=t_search,
    )


def _pad_tables(tables: Any, n: int) -> Any:
    """Tables for ids the tokenizer's vocabulary lists but that have no text (non-word)."""
    from grokscope.exposure.engine import WordTables

    pad = n - tables.vocab_size
    return WordTables(np.concatenate([tables.continues_word, np.zeros(pad, bool)]),
                      np.concatenate([tables.ends_word, np.zeros(pad, bool)]),
                      np.concatenate([tables.tail_index, np.full(pad, -1, np.int32)]),
                      np.concatenate([tables.cont_index, np.full(pad, -1, np.int32)]), tables.pair_word)


def _print_summary(s: ExposureSummary, out: Path, steps: Sequence[int]) -> None:
    if s.skipped:
        print(f"exposure: {out} is up to date (same inputs); nothing to do")
        return
    rate = s.tokens / s.search_seconds if s.search_seconds else float("nan")
    rows = [
        ("pairs", f"{s.pairs:,}"), ("distinct phrases", f"{s.phrases:,}"), ("token sequences", f"{s.sequences:,}"),
        ("stream rows / tokens", f"{s.rows:,} / {s.tokens:,}"), ("checkpoints", f"{len(steps)} ({steps[0]}…{steps[-1]})"),
        (f"good phrase seen by step {steps[-1]}", f"{s.good_seen_final:,} / {s.pairs:,}"),
        (f"bad phrase seen by step {steps[-1]}", f"{s.bad_seen_final:,} / {s.pairs:,}"),
        ("tokenize phrases + word tables", f"{s.tokenize_seconds:.1f} s"),
        ("search (index + scan)", f"{s.search_seconds:.1f} s ({rate / 1e6:.1f}M tokens/s)"),
        ("total", f"{s.seconds:.1f} s"), ("written", str(out)),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


# ---------------------------------------------------------------------------------------------
# CLI and stage API
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grokscope.core.config import ExposureSection

    d = ExposureSection()
    parser.add_argument("--phrases", required=True, help="study directory (or phrases.parquet) holding the critical phrases")
    parser.add_argument("--tokens", required=True, help="token stream: a prepared tokens/ dir, Megatron prefix, nanoGPT .bin, OLMo dir")
    parser.add_argument("--checkpoints", required=True, nargs="+",
                        help="checkpoint steps: comma list (0,1,2,4,1000), 'pythia', or checkpoint dirs/globs")
    parser.add_argument("--variants", default=",".join(d.variants), help="comma list of mid,sentence_start (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=d.workers, help="Dask local workers (1 = in this process)")
    parser.add_argument("--scheduler", default=d.scheduler, help="address of a Dask scheduler (tcp://host:port)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer of the model under study (default: the stream's tokenizer/)")
    parser.add_argument("--format", default="auto", choices=["auto", "grokscope", "megatron", "nanogpt", "olmo"])
    parser.add_argument("--rows-per-step", type=int, default=None, help="rows per optimizer step (Pythia: 1024)")
    parser.add_argument("--row-len", type=int, default=None, help="tokens per row for flat streams (Pythia: 2049)")
    parser.add_argument("--eos-id", type=int, default=None, help="document separator id (default: the stream's)")
    parser.add_argument("--out", default=None, help="study directory (or .parquet path) to write exposure to (default: --phrases)")
    parser.add_argument("--force", action="store_true", help="recompute even if exposure.parquet is up to date")


def _phrases_path(p: str) -> Path:
    path = Path(p)
    return path / "phrases.parquet" if path.is_dir() or path.suffix != ".parquet" else path


def run(args: argparse.Namespace) -> int:
    phrases = _phrases_path(args.phrases)
    if not phrases.exists():
        raise MissingStageError("phrases table", str(phrases), "grokscope phrases --benchmark BENCHMARK --out STUDY")
    out_arg = Path(args.out) if args.out else phrases.parent
    out = out_arg if out_arg.suffix == ".parquet" else out_arg / "exposure.parquet"
    if args.workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {args.workers}")
    steps = parse_checkpoints(args.checkpoints)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    spec = StreamSpec(args.tokens, args.format, args.rows_per_step, args.row_len, args.eos_id)
    summary = compute_exposure(phrases, spec, steps, out, tokenizer=args.tokenizer, variants=variants,
                               workers=args.workers, scheduler=args.scheduler, force=args.force)
    _print_summary(summary, out, steps)
    return 0


def run_stage(cfg: Any, study: Any) -> None:
    """``grokscope run``: exposure of the study's phrases in its token stream, at its checkpoints."""
    toml = cfg.source or "STUDY.toml"
    study.require(study.phrases_path, "phrases table",
                  f"grokscope phrases --benchmark BENCHMARK --out {study.root}  (or: grokscope run {toml})")
    tokens = str(cfg.resolve_path(cfg.data.tokens)) if cfg.data.tokens else str(study.tokens_dir)
    if not cfg.data.tokens:
        study.require(study.tokens_dir / "manifest.json", "prepared token stream",
                      f"grokscope prepare --config {toml}  (or set [data] tokens to an existing stream)")
    if cfg.score.checkpoints:
        # step lists and 'pythia' as they are; paths relative to the config file; hub ids as they are
        specs = [str(cfg.resolve_path(c)) if cfg.resolve_path(c).exists() or any(ch in c for ch in "*?[")
                 else c for c in cfg.score.checkpoints]
        steps = parse_checkpoints(specs)
    else:
        ck = study.run_dir / "checkpoints"
        if not ck.exists():
            raise MissingStageError("training checkpoints (their steps define the windows)", str(ck),
                                    f"grokscope train --config {toml}  (or list checkpoints in [score] checkpoints)")
        steps = parse_checkpoints([str(ck)])
    rows_per_step = cfg.data.rows_per_step or (cfg.train.batch_size if cfg.train.enabled else None)
    spec = StreamSpec(tokens, cfg.data.format, rows_per_step or None, None,
                      cfg.data.eos_id if cfg.data.eos_id >= 0 else None)
    tok = cfg.resolve_path(cfg.data.tokenizer) if cfg.data.tokens and cfg.data.tokenizer else None
    summary = compute_exposure(study.phrases_path, spec, steps, study.exposure_path,
                               tokenizer=str(tok) if tok else None, variants=cfg.exposure.variants,
                               workers=cfg.exposure.workers, scheduler=cfg.exposure.scheduler)
    _print_summary(summary, study.exposure_path, steps)
