"""Issue #21 for ``score``: no silent garbage (a tokenizer that encodes nothing, a --tokenizer that is
not the checkpoint's own), two processes on one study, unreadable score files, a failing disk.
Each case: exit 2, one message naming the checkpoint/file, earlier outputs byte-identical."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grokscope import cli  # noqa: E402
from grokscope.core.store import Study, read_parquet_metadata  # noqa: E402
from tests.score import test_stage as base  # noqa: E402

_gpt2_model, _save_checkpoint = base._gpt2_model, base._save_checkpoint
# the fixtures of the scoring tests: real tokenizers, real BLiMP pairs with spans, one torch thread
gpt2_tok, pairs, _one_thread = base.gpt2_tok, base.pairs, base._one_thread


def _empty_vocab_tokenizer():
    """What a ``GPT2Tokenizer`` saved by transformers 5 loads as: an empty vocabulary (EOS only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(vocab={"<|endoftext|>": 0}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def study(tmp_path, gpt2_tok, pairs):
    run = tmp_path / "study" / "run" / "checkpoints"
    _save_checkpoint(_gpt2_model(vocab=50304), gpt2_tok, run / "step_00000000", 0)  # padded to 64, as train does
    pairs.head(8).to_parquet(tmp_path / "phrases.parquet")
    return tmp_path


def _argv(tmp: Path, *extra: str) -> list[str]:
    s = tmp / "study"
    return ["score", "--checkpoints", str(s), "--phrases", str(tmp / "phrases.parquet"), "--out", str(s),
            "--quiet", "--threads", "1", "--batch-size", "8", *extra]


def test_zero_token_tokenizer_is_an_error_naming_the_checkpoint(tmp_path, pairs, capsys):
    ckpt = _save_checkpoint(_gpt2_model(), _empty_vocab_tokenizer(), tmp_path / "s" / "run" / "checkpoints"
                            / "step_00000000", 0)
    pairs.head(4).to_parquet(tmp_path / "phrases.parquet")
    argv = ["score", "--checkpoints", str(tmp_path / "s"), "--phrases", str(tmp_path / "phrases.parquet"),
            "--out", str(tmp_path / "s"), "--quiet", "--threads", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "to no tokens" in err and "Traceback" not in err
    assert Study(tmp_path / "s").scored_steps() == []  # nothing reported as "scored"


def test_sentence_with_no_tokens_is_an_error_naming_the_pair(gpt2_tok, pairs):
    from grokscope.core.errors import DataError
    from grokscope.score.encoding import encode_pairs

    bad = pairs.head(3).copy()
    bad.loc[1, "good"] = ""
    with pytest.raises(DataError, match=rf"no tokens, e.g. pair \({bad.loc[1, 'uid']}, {bad.loc[1, 'pair_id']}\)"):
        encode_pairs(gpt2_tok, bad, "none")


def test_tokenizer_other_than_the_checkpoints_own_is_refused(study, pythia_tokenizer_file, capsys):
    argv = _argv(study, "--tokenizer", str(pythia_tokenizer_file), "--no-hidden", "--no-attention")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "differs from the tokenizer the checkpoint carries" in err and "--allow-tokenizer-mismatch" in err
    assert "step_00000000" in err and Study(study / "study").scored_steps() == []
    # the user confirms: scored, and the fingerprint recorded is the one used
    assert cli.main(argv + ["--allow-tokenizer-mismatch"]) == 0
    from grokscope.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    meta = read_parquet_metadata(Study(study / "study").score_path(0))
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(load_tokenizer(pythia_tokenizer_file))


def test_the_checkpoints_own_tokenizer_given_again_is_accepted(study, gpt2_tokenizer_dir, capsys):
    assert cli.main(_argv(study, "--tokenizer", str(gpt2_tokenizer_dir), "--no-hidden", "--no-attention")) == 0


# ---------------------------------------------------------------------------------------------
# two processes on one study
# ---------------------------------------------------------------------------------------------
_HOLD = """
import sys, time
from grokscope.core.locks import stage_lock
with stage_lock(sys.argv[1], "score"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(root: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(root)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_score_on_one_study_is_refused_naming_the_first_and_a_stale_lock_is_taken_over(study, capsys):
    import socket

    root = study / "study"
    holder = _holder(root)
    try:
        assert cli.main(_argv(study, "--no-hidden", "--no-attention")) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on {socket.gethostname()}" in err and "another `grokscope score`" in err
        assert Study(root).scored_steps() == []
    finally:
        holder.kill()  # SIGKILL: the lock file stays, its flock goes with the process
        holder.wait()
    assert (root / ".lock-score").read_text()  # the dead holder's details are still there
    assert cli.main(_argv(study, "--no-hidden", "--no-attention")) == 0
    assert "taking over a stale lock" in capsys.readouterr().err and Study(root).scored_steps() == [0]
    assert not (root / ".lock-score").exists()  # released cleanly: removed


def test_temporary_array_names_are_unique_per_process_and_removed_on_failure(study, monkeypatch, capsys):
    from grokscope.core.errors import DataError
    from grokscope.core.store import unique_partial
    from grokscope.score import stage

    target = Study(study / "study").hidden_path(0)
    assert unique_partial(target) != unique_partial(target) and str(target.name) in unique_partial(target).name

    def boom(*a, **k):
        raise DataError("scoring failed half-way")

    monkeypatch.setattr(stage, "score_pairs", boom)
    assert cli.main(_argv(study, "--hidden-pairs", "3")) == 2
    assert "scoring failed half-way" in capsys.readouterr().err
    assert not list((study / "study").rglob("*.partial")) and Study(study / "study").scored_steps() == []


def test_a_table_whose_arrays_are_not_its_own_is_scored_again(study, capsys):
    root = Study(study / "study")
    assert cli.main(_argv(study, "--hidden-pairs", "4")) == 0
    meta = read_parquet_metadata(root.score_path(0))
    assert meta["hidden_bytes"] == root.hidden_path(0).stat().st_size
    assert meta["attention_bytes"] == root.attention_path(0).stat().st_size
    good = root.hidden_path(0).read_bytes()
    # what a second process with --hidden-pairs 2 used to leave: another run's arrays beside this table
    import numpy as np

    np.save(root.hidden_path(0), np.zeros((2, 2, 3, 64), np.float16))
    capsys.readouterr()
    assert cli.main(_argv(study, "--hidden-pairs", "4")) == 0
    captured = capsys.readouterr()
    assert "not the arrays scored with it" in captured.err and "scored" in captured.out
    assert root.hidden_path(0).read_bytes() == good  # rebuilt as the table says


def test_truncated_score_table_is_treated_as_not_scored(study, capsys):
    root = Study(study / "study")
    assert cli.main(_argv(study, "--no-hidden", "--no-attention")) == 0
    full = root.score_path(0).read_bytes()
    root.score_path(0).write_bytes(full[: len(full) // 2])
    capsys.readouterr()
    assert cli.main(_argv(study, "--no-hidden", "--no-attention")) == 0
    assert f"{root.score_path(0)} is unreadable" in capsys.readouterr().err
    import pandas as pd

    assert len(pd.read_parquet(root.score_path(0))) == 8


# ---------------------------------------------------------------------------------------------
# a failing disk: one message naming the path and the reason, no temporary file left, earlier outputs intact
# ---------------------------------------------------------------------------------------------
def _second_checkpoint(study: Path, gpt2_tok) -> None:
    _save_checkpoint(_gpt2_model(vocab=50304), gpt2_tok, study / "study" / "run" / "checkpoints" / "step_00000004", 4)


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_read_only_study_is_one_message_and_finished_scores_stay(study, gpt2_tok, monkeypatch, capsys):
    import errno
    import os

    root = study / "study"
    assert cli.main(_argv(study, "--hidden-pairs", "3")) == 0
    before = _digest(root / "scores")
    _second_checkpoint(study, gpt2_tok)
    real_replace = os.replace

    def read_only(src, dst):
        if "scores" in str(dst):
            raise OSError(errno.EROFS, "Read-only file system", str(src), None, str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", read_only)
    capsys.readouterr()
    assert cli.main(_argv(study, "--hidden-pairs", "3")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Read-only file system [errno EROFS]" in err
    assert str(Study(root).hidden_path(4)) in err
    assert _digest(root / "scores") == before and not _temporaries(root)


def test_too_little_space_for_hidden_states_is_refused_before_writing(study, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 8192, 8192))
    assert cli.main(_argv(study, "--hidden-pairs", "4")) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "8,192 free" in err and str(Study(study / "study").hidden_path(0)) in err
    assert Study(study / "study").scored_steps() == [] and not _temporaries(study / "study")


def test_broken_model_config_is_named_as_such(study, capsys):
    cfg = study / "study" / "run" / "checkpoints" / "step_00000000" / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    assert cli.main(_argv(study, "--no-hidden", "--no-attention")) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: the model's config is not valid JSON" in err and "tokenizer" not in err.split("config.json")[1]
