"""The scan of a token stream in shards of whole rows: in this process or as Dask tasks,
resumable (finished shards are kept on disk), merged exactly.

Rows are independent training units and a match never spans a row, so the stream splits into
shards of whole rows with no overlap; with several workers shards run on a
``dask.distributed.LocalCluster`` (one thread per worker), with a scheduler address on any Dask
cluster, or on a ``Client`` the caller holds; the merge (earliest first row, summed counts) is
exact, so results are identical to a single-process run.
"""
from __future__ import annotations

import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.config import DEFAULT_SHARD_ROWS
from grokscope.core.errors import ConfigError, DataError, GrokscopeError

DEFAULT_CHUNK_ROWS = 8192


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


@dataclass(frozen=True)
class StreamSpec:
    """Everything a Dask worker needs to reopen the token stream (streams are memory maps and
    are not shipped between processes)."""

    path: str
    format: str = "auto"
    rows_per_step: int | None = None
    row_len: int | None = None
    eos_id: int | None = None

    def rows_per_step_of(self, opened: Any) -> int:
        """The schedule of the opened stream: rows per optimizer step, which exposure needs."""
        if not opened.rows_per_step:
            raise ConfigError(
                f"{self.path}: the token stream does not record rows per step; give --rows-per-step "
                "(the training batch size in rows; Pythia: 1024)"
            )
        return int(opened.rows_per_step)

    def open(self) -> Any:
        from grokscope.stream.readers import open_stream

        try:
            return open_stream(self.path, format=self.format, rows_per_step=self.rows_per_step,
                               row_len=self.row_len, eos_id=self.eos_id)
        except GrokscopeError:
            raise
        except (OSError, ValueError) as e:
            raise DataError(f"{self.path}: could not read the token stream: {e}") from None


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


class _Merged:
    """Shard results merged as they arrive (every ``every`` of them), so the search holds one merged
    result and a few shards however many shards the stream has: memory does not grow with it."""

    def __init__(self, n_sequences: int, every: int = 32) -> None:
        self.n_sequences, self.every = n_sequences, every
        self.merged: Any = None
        self.pending: list[Any] = []

    def add(self, r: Any) -> None:
        self.pending.append(r)
        if len(self.pending) >= self.every:
            self._fold()

    def _fold(self) -> None:
        from grokscope.exposure.engine import merge_results

        if self.pending:
            self.merged = merge_results(([self.merged] if self.merged is not None else []) + self.pending)
            self.pending = []

    def result(self) -> Any:
        from grokscope.exposure.engine import empty_result

        self._fold()
        return self.merged if self.merged is not None else empty_result(self.n_sequences)


class _Parts:
    """Finished shard results on disk (``exposure.parts/``), keyed by the search's inputs."""

    def __init__(self, root: Path | None, key: str) -> None:
        self.root, self.key = root, key
        if root is not None and root.exists() and (not self._stamp.exists() or self._stamp.read_text() != key):
            shutil.rmtree(root)  # shards of another search

    @property
    def _stamp(self) -> Path:
        assert self.root is not None
        return self.root / "key.txt"

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

        if not self._stamp.exists():  # written with the first shard: a search that saves nothing leaves nothing
            store.write_text(self._stamp, self.key)
        with store.atomic_path(self._path(a, b)) as tmp, open(tmp, "wb") as f:
            np.savez(f, first_row=res.first_row, interval=res.interval, seq=res.seq, count=res.count)

    def remove(self) -> None:
        if self.root is not None:
            remove_parts(self.root)


def remove_parts(root: Path) -> None:
    """Delete the finished shards of a search (once its result is written)."""
    if root.exists():
        shutil.rmtree(root)


def search_stream(spec: StreamSpec, index: Any, n_rows: int, edges: np.ndarray, *, workers: int = 1,
                  scheduler: str = "", shard_rows: int = DEFAULT_SHARD_ROWS, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  check_words: bool = True, parts_dir: Path | None = None, parts_key: str = "",
                  progress: bool = True, client: Any = None) -> Any:
    """All matches of ``index`` in the stream, merged over shards (a ``ScanResult``).
    ``workers == 1``, no ``scheduler`` and no ``client``: in this process. Otherwise on Dask:
    the given ``client`` (left open), a ``Client(scheduler)``, or a ``LocalCluster`` of
    ``workers`` single-threaded processes."""
    shards = shard_ranges(n_rows, shard_rows)
    parts = _Parts(parts_dir, parts_key)
    merged = _Merged(index.n_sequences)
    todo = []
    for a, b in shards:
        r = parts.load(a, b)
        if r is None:
            todo.append((a, b))
        else:
            merged.add(r)
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(b - a for a, b in todo), unit="row", desc="exposure", disable=not progress)
    try:
        if workers <= 1 and not scheduler and client is None:
            for a, b in todo:
                r = scan_shard(spec, index, a, b, edges, chunk_rows, check_words)
                parts.save(a, b, r)
                merged.add(r)
                bar.update(b - a)
        else:
            _search_dask(spec, index, todo, edges, workers, scheduler, chunk_rows, check_words, parts, bar, merged,
                         client)
    finally:
        bar.close()
    return merged.result()


def check_scheduler_address(scheduler: str) -> None:
    """A Dask scheduler address must be ``[protocol://]host:port`` (``tcp://10.0.0.5:8786``);
    anything else is a :class:`ConfigError` before any connection is tried."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        protocol, loc = parse_address(scheduler)
        if protocol in ("tcp", "tls", "ucx", "ws", "wss"):
            parse_host_port(loc)
    except ValueError as e:
        raise ConfigError(f"--scheduler {scheduler!r}: not a Dask scheduler address ({e}); expected "
                          "[protocol://]host:port, e.g. tcp://10.0.0.5:8786") from None


def _search_dask(spec: StreamSpec, index: Any, todo: list[tuple[int, int]], edges: np.ndarray, workers: int,
                 scheduler: str, chunk_rows: int, check_words: bool, parts: _Parts, bar: Any, merged: _Merged,
                 client: Any = None) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    own = client is None
    cluster = None
    if own and scheduler:
        check_scheduler_address(scheduler)
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as e:
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
        for fut in as_completed(futures):
            a, b = futures.pop(fut)  # dropping the future frees its result on the worker
            r = _expand(fut.result(), index.n_sequences)
            parts.save(a, b, r)
            merged.add(r)
            bar.update(b - a)
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
