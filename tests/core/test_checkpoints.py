"""Checkpoint discovery: grokscope runs, plain HF dirs, globs, hub ids; unknown steps refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grokscope.core.checkpoints import Checkpoint, discover_checkpoints
from grokscope.core.errors import DataError


def _hf_dir(path: Path, weights: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    if weights:
        (path / "model.safetensors").write_bytes(b"\0")
    return path


def _grokscope_ckpt(run: Path, step: int, rows_per_step: int = 8, row_len: int = 129) -> Path:
    d = _hf_dir(run / "checkpoints" / f"step_{step:08d}")
    (d / "grokscope_checkpoint.json").write_text(json.dumps({
        "step": step, "tokens_seen": step * rows_per_step * row_len, "rows_seen": step * rows_per_step,
        "loss": 3.0, "seq_len": row_len - 1, "rows_per_step": rows_per_step, "tokens_path": "tokens"}))
    return d


def test_grokscope_run_study_and_checkpoints_dirs(tmp_path):
    study = tmp_path / "study"
    for step in (512, 0, 1, 2):
        _grokscope_ckpt(study / "run", step)
    expected = [(0, 0), (1, 8 * 129), (2, 16 * 129), (512, 512 * 8 * 129)]
    for spec in (study, study / "run", study / "run" / "checkpoints"):
        found = discover_checkpoints([str(spec)])
        assert [(c.step, c.tokens_seen) for c in found] == expected
        assert all(c.source == "grokscope" and c.revision is None for c in found)
    one = discover_checkpoints(str(study / "run" / "checkpoints" / "step_00000002"))
    assert [(c.step, c.tokens_seen) for c in one] == [(2, 16 * 129)]


def test_plain_dir_needs_step_and_tokens(tmp_path):
    d = _hf_dir(tmp_path / "model")
    with pytest.raises(DataError, match="training step unknown"):
        discover_checkpoints([str(d)])
    with pytest.raises(DataError, match="tokens seen at step 10 unknown"):
        discover_checkpoints([str(d)], step=10)
    (c,) = discover_checkpoints([str(d)], step=10, tokens_seen=5000)
    assert c == Checkpoint(str(d.resolve()), None, 10, 5000, "hf_dir")


def test_glob_with_steps_in_names(tmp_path):
    for s in (300, 20, 1000):
        _hf_dir(tmp_path / f"checkpoint-{s}")
    found = discover_checkpoints([str(tmp_path / "checkpoint-*")], tokens_per_step=2048)
    assert [(c.step, c.tokens_seen) for c in found] == [(20, 40960), (300, 614400), (1000, 2048000)]
    with pytest.raises(DataError, match=r"checkpoint-1000: tokens seen at step 1000 unknown"):
        discover_checkpoints([str(tmp_path / "checkpoint-*")])
    with pytest.raises(DataError, match="matched no directories"):
        discover_checkpoints([str(tmp_path / "nothing-*")])


def test_hub_ids_with_revisions():
    (c,) = discover_checkpoints(["EleutherAI/pythia-160m@step1000"])
    assert (c.path, c.revision, c.step, c.tokens_seen, c.source) == (
        "EleutherAI/pythia-160m", "step1000", 1000, 1000 * 1024 * 2049, "hub")
    (c,) = discover_checkpoints(["someone/model@step20"], tokens_per_step=100)
    assert (c.step, c.tokens_seen) == (20, 2000)
    with pytest.raises(DataError, match="tokens seen at step 20 unknown"):
        discover_checkpoints(["someone/model@step20"])
    with pytest.raises(DataError, match="training step unknown"):
        discover_checkpoints(["someone/model@main"])


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_checkpoints([str(tmp_path / "nope")])
    nw = _hf_dir(tmp_path / "step_5", weights=False)
    with pytest.raises(DataError, match="no model weights"):
        discover_checkpoints([str(nw)], tokens_per_step=1)
    notmodel = tmp_path / "empty"
    notmodel.mkdir()
    with pytest.raises(DataError, match="no config.json"):
        discover_checkpoints([str(notmodel)])
    a, b = _hf_dir(tmp_path / "a" / "step_7"), _hf_dir(tmp_path / "b" / "step_7")
    with pytest.raises(DataError, match="two checkpoints claim step 7"):
        discover_checkpoints([str(a), str(b)], tokens_per_step=1)
    with pytest.raises(DataError, match="name the step of one checkpoint; 2 were given"):
        discover_checkpoints([str(a), str(b)], step=7, tokens_seen=1)


def test_errors_list_collects_and_keeps_the_rest(tmp_path):
    run = tmp_path / "run"
    _grokscope_ckpt(run, 1)
    bad = _grokscope_ckpt(run, 2)
    (bad / "model.safetensors").unlink()
    errors: list[str] = []
    found = discover_checkpoints([str(run), str(tmp_path / "missing")], errors=errors)
    assert [c.step for c in found] == [1]
    assert len(errors) == 2 and "no model weights" in errors[0] and "does not exist" in errors[1]


def test_missing_local_dir_that_looks_like_a_hub_id_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """``runs/step100`` beside an existing ``runs/`` (issue #21: tried on the hub for 52 s)."""
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"'runs/step100': directory does not exist \(not looked up on the hub: runs"):
        discover_checkpoints(["runs/step100"], tokens_per_step=1)
    (c,) = discover_checkpoints(["someone/model@step20"], tokens_per_step=100)  # no local someone/: the hub
    assert c.source == "hub"


def test_step_flags_that_contradict_a_checkpoint_or_name_several_are_refused(tmp_path):
    """Issue #21: ``score --step/--tokens-seen`` were silently ignored for a grokscope checkpoint."""
    run = tmp_path / "run"
    for step in (0, 4):
        _grokscope_ckpt(run, step)
    one = str(run / "checkpoints" / "step_00000004")
    assert [c.step for c in discover_checkpoints(one, step=4, tokens_seen=4 * 8 * 129)] == [4]  # agrees: fine
    with pytest.raises(DataError, match=r"step_00000004: records step 4 \(4,128 tokens seen\), but --step/"
                                        r"--tokens-seen gave 7 / -"):
        discover_checkpoints(one, step=7)
    with pytest.raises(DataError, match="records step 4"):
        discover_checkpoints(one, tokens_seen=1)
    with pytest.raises(DataError, match=r"name the step of one checkpoint; 2 were given"):
        discover_checkpoints(str(run), step=4)
    d = _hf_dir(tmp_path / "plain")
    assert discover_checkpoints(str(d), step=3, tokens_seen=9)[0].step == 3  # what the flags are for
