"""Study directory I/O: atomic writes and stage bookkeeping."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokscope.core import store
from grokscope.core.errors import MissingStageError


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    store.write_text(target, "old")
    with pytest.raises(RuntimeError), store.atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_parquet_round_trip_with_metadata(tmp_path: Path) -> None:
    df = pd.DataFrame({"uid": ["x", "y"], "pair_id": [0, 1], "v": [0.5, np.nan]})
    p = tmp_path / "t.parquet"
    store.write_parquet(p, df, metadata={"step": np.int64(4), "steps": [0, 1, 2]})
    back = pd.read_parquet(p)
    pd.testing.assert_frame_equal(back, df)
    assert store.read_parquet_metadata(p) == {"step": 4, "steps": [0, 1, 2]}


def test_npy_incremental_write_is_invisible_until_committed(tmp_path: Path) -> None:
    p = tmp_path / "h.npy"
    mm = store.open_npy_for_writing(p, (3, 2), np.float16)
    mm[:] = np.arange(6).reshape(3, 2)
    mm.flush()
    assert not p.exists()
    store.commit_npy(p)
    np.testing.assert_array_equal(np.load(p, mmap_mode="r"), np.arange(6).reshape(3, 2))


def test_study_knows_what_it_holds(tmp_path: Path) -> None:
    s = store.Study(tmp_path / "s")
    assert s.scored_steps() == []
    assert not s.has_phrases()
    store.write_parquet(s.score_path(16), pd.DataFrame({"a": [1]}))
    store.write_parquet(s.score_path(2), pd.DataFrame({"a": [1]}))
    (s.scores_dir / ".step_00000004.parquet.abc.tmp").write_text("partial")
    assert s.scored_steps() == [2, 16]
    assert s.score_path(16).name == "step_00000016.parquet"
    with pytest.raises(MissingStageError, match="grokscope phrases"):
        s.require(s.phrases_path, "phrases table", "grokscope phrases --benchmark PATH --out STUDY")


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "b.bin"
    data = bytes(range(256)) * 5000
    p.write_bytes(data)
    assert store.file_sha256(p, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    p = tmp_path / "m.json"
    store.write_json(p, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)
