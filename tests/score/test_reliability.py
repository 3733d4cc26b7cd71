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
