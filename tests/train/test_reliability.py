"""Issue #21 for ``train``: a --tokenizer that is not the stream's, and a finished run asked for a
different model, are refused naming what differs; the finished run stays byte-identical."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.train.test_stage import make_prepared_stream, train_cli  # noqa: E402


@pytest.fixture(scope="module")
def real_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny prepared stream with its manifest recording its tokenizer's real fingerprint."""
    from grokscope.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    tokens = make_prepared_stream(tmp_path_factory.mktemp("stream"), n_rows=200)
    manifest = json.loads((tokens / "manifest.json").read_text())
    manifest["tokenizer_fingerprint"] = tokenizer_fingerprint(load_tokenizer(tokens / "tokenizer"))
    (tokens / "manifest.json").write_text(json.dumps(manifest))
    return tokens


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".lock-")}


def test_train_tokenizer_other_than_the_streams_is_refused(real_stream, pythia_tokenizer_file, tmp_path, capsys):
    assert train_cli(real_stream, tmp_path, "--max-steps", "2", "--tokenizer", str(pythia_tokenizer_file)) == 2
    err = capsys.readouterr().err
    assert str(real_stream) in err and str(pythia_tokenizer_file) in err and "fingerprint" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()
    # the stream's own tokenizer, named again, is fine
    assert train_cli(real_stream, tmp_path, "--max-steps", "2", "--tokenizer", str(real_stream / "tokenizer")) == 0


def test_finished_run_with_another_model_shape_is_refused_naming_the_keys(real_stream, tmp_path, capsys):
    assert train_cli(real_stream, tmp_path, "--max-steps", "2") == 0
    before = _files(tmp_path / "run")
    capsys.readouterr()
    # TINY has --n-embd 32; a later flag wins
    assert train_cli(real_stream, tmp_path, "--max-steps", "2", "--n-embd", "64") == 2
    err = capsys.readouterr().err
    assert "train.n_embd: run has 32, now 64" in err and "complete" in err and "train.n_layer" not in err
    assert _files(tmp_path / "run") == before
    # keys that change no weight still make a finished run "nothing to do"
    assert train_cli(real_stream, tmp_path, "--max-steps", "2", "--threads", "2") == 0
    assert "nothing to do" in capsys.readouterr().out
