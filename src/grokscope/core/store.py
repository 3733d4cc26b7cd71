"""Study directory I/O: every file is written atomically (temp file + rename), and a
:class:`Study` knows where each stage's output lives and whether it is already there.

Layout of a study directory (see docs/CONTRACTS.md for the columns of each table)::

    study.toml                 the config the study was run with (copied on first run)
    tokens/                    prepared token stream: tokens.npy + manifest.json (``prepare``)
    run/                       a training run (``train``): checkpoints/step_XXXXXXXX/, loss.parquet
    phrases.parquet            critical phrase per pair (``phrases``)
    exposure.parquet           first step / counts per pair (``exposure``)
    scores/step_XXXXXXXX.parquet          per-checkpoint scores (``score``)
    scores/step_XXXXXXXX.hidden.npy       optional hidden states  [pair, 2, layer+1, d_model] f16
    scores/step_XXXXXXXX.attention.npy    optional attention      [pair, 2, layer, head] f32
    analysis/*.parquet         curves, timing, probes, heads (``analyse``)
    report/index.html          self-contained report + figures/ (``report``)
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from grokscope.core.errors import MissingStageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched, so a
    reader never sees a half-written file and a killed process leaves no corrupt output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give an ``OSError`` raised without a file name (a write or flush on an open file: no
    space left, read-only) the name ``path``, so the error message can say where."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet(path: str | os.PathLike[str], df: Any, metadata: dict[str, Any] | None = None) -> None:
    """Write a pandas DataFrame to Parquet atomically; ``metadata`` is stored as JSON in the
    schema metadata under the key ``grokscope`` (read it back with :func:`read_parquet_metadata`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[b"grokscope"] = json.dumps(metadata, sort_keys=True, default=_json_default).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``grokscope`` metadata dict stored by :func:`write_parquet` ({} if none)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"grokscope")
    return json.loads(raw) if raw else {}


def _unreadable(path: str | os.PathLike[str], remedy: str, e: Exception) -> Exception:
    from grokscope.core.errors import DataError

    return DataError(f"{path}: unreadable Parquet table ({type(e).__name__}: {' '.join(str(e).split())}); "
                     f"rebuild it with: {remedy} (or delete it and re-run)")


def read_metadata(path: str | os.PathLike[str], remedy: str) -> dict[str, Any]:
    """:func:`read_parquet_metadata`, with a file that cannot be read reported as in :func:`read_table`."""
    try:
        return read_parquet_metadata(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a problem of this file
        raise _unreadable(path, remedy, e) from None


def read_table(path: str | os.PathLike[str], remedy: str,
               columns: list[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """A Parquet table and its ``grokscope`` metadata; a file that cannot be read (truncated or
    overwritten by something else) is a :class:`~grokscope.core.errors.DataError` naming it and
    ``remedy``, the command that rebuilds it."""
    import pandas as pd

    try:
        df = pd.read_parquet(path, columns=columns)
    except Exception as e:  # noqa: BLE001 - any reader failure is a problem of this file
        raise _unreadable(path, remedy, e) from None
    return df, read_metadata(path, remedy)


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def partial_path(path: str | os.PathLike[str]) -> Path:
    """``<path>.partial``: where an array is filled before :func:`commit_npy` moves it into place."""
    return Path(str(path) + ".partial")


def unique_partial(path: str | os.PathLike[str]) -> Path:
    """A temporary name beside ``path`` that no other process uses (pid + random suffix)."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"


def open_npy_for_writing(path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any,
                         partial: str | os.PathLike[str] | None = None) -> np.memmap:
    """Create a ``.npy`` memory map to be filled incrementally. Fill it, ``flush()`` it, then
    call :func:`commit_npy` to move it into place; until then only ``partial`` (default
    ``<path>.partial``; :func:`unique_partial` for a name no other process shares) exists."""
    tmp = Path(partial) if partial is not None else partial_path(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    # a memory map on a full disk dies of SIGBUS, not an OSError: check the room first
    check_free_space(path, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)


def check_free_space(path: str | os.PathLike[str], nbytes: int, margin: int = 1 << 20) -> None:
    """A :class:`~grokscope.core.errors.GrokscopeError` naming ``path`` when its filesystem has less
    than ``nbytes`` (+ ``margin``) free."""
    import shutil

    from grokscope.core.errors import DiskError, disk_message

    free = shutil.disk_usage(Path(path).parent).free
    if free < nbytes + margin:
        raise DiskError(disk_message(path, "no space left on device", errno.ENOSPC,
                                     f"{nbytes:,} bytes to write, {free:,} free"))


def commit_npy(path: str | os.PathLike[str], partial: str | os.PathLike[str] | None = None) -> None:
    os.replace(partial if partial is not None else partial_path(path), path)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class At:
    """A path below a layout's ``root``, declared once: ``phrases_path = At("phrases.parquet")``."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    @overload
    def __get__(self, obj: None, owner: type) -> At: ...
    @overload
    def __get__(self, obj: Any, owner: type) -> Path: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        return self if obj is None else obj.root.joinpath(*self.parts)


@dataclass(frozen=True)
class RunLayout:
    """Paths of one training run directory (``STUDY/run/``, see :mod:`grokscope.train.trainer`)."""

    root: Path

    checkpoints_dir = At("checkpoints")  # step_XXXXXXXX/: Hugging Face model dirs
    state_dir = At("state")  # resume state: state.pt (model, optimizer, scheduler, RNG), state.json
    state_json = At("state", "state.json")
    loss_path = At("loss.parquet")
    run_json = At("run.json")  # train config + stream fingerprint (a resume must match it)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / step_name(step)


TESTBED_FILES = ("corpus.jsonl", "pairs.jsonl", "ground_truth.json")


def step_name(step: int) -> str:
    """Canonical file stem for a checkpoint step: ``step_00001000``."""
    return f"step_{int(step):08d}"


@dataclass(frozen=True)
class Study:
    """Paths of one study directory and what it already holds: the only place that spells the
    study's layout (see the module docstring)."""

    root: Path
    testbed: Path | None = None  # where the testbed goes when not <root>/testbed ([testbed] out)

    def __init__(self, root: str | os.PathLike[str], testbed: str | os.PathLike[str] | None = None) -> None:
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "testbed", Path(testbed) if testbed else None)

    @classmethod
    def for_config(cls, cfg: Any) -> Study:
        """The study a (resolved) :class:`~grokscope.core.config.StudyConfig` describes."""
        return cls(cfg.study_dir, cfg.testbed_dir if cfg.testbed.out else None)

    # ---- paths -------------------------------------------------------------------------
    config_path = At("study.toml")  # the config the study was run with
    pipeline_state_path = At("pipeline.json")  # what `grokscope run` records of the stages it finished
    reset_dir = At("reset")  # where `grokscope run --reset` moves outputs aside
    tokens_dir = At("tokens")
    run_dir = At("run")
    phrases_path = At("phrases.parquet")
    exposure_path = At("exposure.parquet")
    scores_dir = At("scores")
    analysis_dir = At("analysis")
    report_dir = At("report")
    report_path = At("report", "index.html")

    @property
    def testbed_dir(self) -> Path:
        return self.testbed or self.root / "testbed"

    def testbed_file(self, name: str) -> Path:
        """``corpus.jsonl``, ``pairs.jsonl``, ``ground_truth.json`` or ``settings.json`` of the testbed."""
        return self.testbed_dir / name

    @property
    def run(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def checkpoints_dir(self) -> Path:
        """``run/checkpoints/step_XXXXXXXX/``: the training run's Hugging Face checkpoint directories."""
        return self.run.checkpoints_dir

    def score_path(self, step: int) -> Path:
        return self.scores_dir / f"{step_name(step)}.parquet"

    def hidden_path(self, step: int) -> Path:
        return self.scores_dir / f"{step_name(step)}.hidden.npy"

    def attention_path(self, step: int) -> Path:
        return self.scores_dir / f"{step_name(step)}.attention.npy"

    def attention_baseline_path(self, step: int) -> Path:
        return self.scores_dir / f"{step_name(step)}.attention_baseline.npy"

    # ---- what is there -----------------------------------------------------------------
    def has_testbed(self) -> bool:
        return all(self.testbed_file(f).exists() for f in TESTBED_FILES)

    def has_checkpoints(self) -> bool:
        return self.checkpoints_dir.exists()

    def has_tokens(self) -> bool:
        return (self.tokens_dir / "manifest.json").exists() and (self.tokens_dir / "tokens.npy").exists()

    def has_phrases(self) -> bool:
        return self.phrases_path.exists()

    def has_exposure(self) -> bool:
        return self.exposure_path.exists()

    def scored_steps(self) -> list[int]:
        """Checkpoint steps whose score file is complete (written atomically, so present = done)."""
        if not self.scores_dir.exists():
            return []
        steps = []
        for p in self.scores_dir.glob("step_*.parquet"):
            try:
                steps.append(int(p.stem.split("_", 1)[1]))
            except ValueError:
                continue
        return sorted(steps)

    def has_analysis(self) -> bool:
        return (self.analysis_dir / "timing.parquet").exists()

    def has_report(self) -> bool:
        return self.report_path.exists()

    # ---- guarded access ----------------------------------------------------------------
    def require(self, path: Path, what: str, command: str) -> Path:
        """Return ``path`` or raise a :class:`MissingStageError` naming the command that makes it."""
        if not path.exists():
            raise MissingStageError(what, str(path), command)
        return path
