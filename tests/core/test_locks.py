"""core/locks.py: one holder per stage and study; a clean release leaves nothing behind."""
from __future__ import annotations

import pytest

from grokscope.core.locks import LockedError, lock_path, stage_lock


def test_lock_excludes_a_second_holder_and_cleans_up(tmp_path):
    root = tmp_path / "new_study"
    with stage_lock(root, "score") as path:
        assert path == lock_path(root, "score") and path.exists()
        with pytest.raises(LockedError, match=r"another `grokscope score` is running on this study \(pid \d+ on "), \
                stage_lock(root, "score"):
            pass  # pragma: no cover
        with stage_lock(root, "analyse"):  # another stage: its own lock
            pass
    assert not root.exists()  # made for the lock, left empty: removed


def test_a_failing_stage_leaves_no_study_directory_and_an_existing_one_stays(tmp_path):
    with pytest.raises(RuntimeError), stage_lock(tmp_path / "s", "train"):
        raise RuntimeError("stage failed")
    assert not (tmp_path / "s").exists()
    (tmp_path / "t").mkdir()
    with stage_lock(tmp_path / "t", "train"):
        pass
    assert (tmp_path / "t").is_dir() and not list((tmp_path / "t").iterdir())
