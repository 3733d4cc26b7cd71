"""Load the tokenizer of the model under study from any of the forms researchers have:

* a ``tokenizer.json`` file (``tokenizers`` format; Pythia/GPT-NeoX, OLMo),
* a directory with GPT-2-style ``vocab.json`` + ``merges.txt``,
* a Hugging Face tokenizer directory (``tokenizer.json`` / ``tokenizer_config.json``; any
  checkpoint directory grokscope writes),
* a hub id (when the hub is reachable).

Everything returns a ``transformers`` fast tokenizer with ``eos_token`` set.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from grokscope.core.errors import DataError
from grokscope.core.paths import is_hub_id

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>")


def load_tokenizer(spec: str | os.PathLike[str]) -> Any:
    """A ``transformers`` fast tokenizer from a path or hub id (see module docstring)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(spec)
    if path.is_file():
        if path.name.endswith(".json") and path.name != "vocab.json":
            try:
                fast: Any = PreTrainedTokenizerFast(tokenizer_file=str(path))
            except Exception as e:  # noqa: BLE001 - random bytes, or JSON that is not a tokenizer
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DataError(f"{path}: not a tokenizers tokenizer.json (expected JSON with a 'model' holding a "
                                f"vocab, and merges for BPE): {reason}") from None
            return _with_special_tokens(fast, str(path))
        raise DataError(f"{path}: expected a tokenizer.json file or a tokenizer directory")
    if path.is_dir():
        if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
            try:
                tok = AutoTokenizer.from_pretrained(str(path))
            except Exception as e:  # noqa: BLE001 - re-raised with the path
                raise DataError(f"{path}: could not load the tokenizer directory: {e}") from None
            return _with_special_tokens(tok, str(path))
        if (path / "vocab.json").exists() and (path / "merges.txt").exists():
            return _with_special_tokens(_bpe_from_vocab_merges(path), str(path))
        raise DataError(
            f"{path}: no tokenizer found (expected tokenizer.json, tokenizer_config.json, "
            "or vocab.json + merges.txt)"
        )
    if is_hub_id(str(spec)):
        try:
            return _with_special_tokens(AutoTokenizer.from_pretrained(str(spec)), str(spec))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"tokenizer '{spec}': not a local path and could not load it from the hub: {e}") from None
    raise DataError(f"tokenizer '{spec}': path does not exist")


def _bpe_from_vocab_merges(path: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    try:
        bpe = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: vocab.json/merges.txt are not a valid BPE tokenizer: {e}") from None
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    # the end-of-text marker is one special token (as in GPT-2's own tokenizer.json), never split
    tk.add_special_tokens([c for c in EOS_CANDIDATES if tk.token_to_id(c) is not None])
    return PreTrainedTokenizerFast(tokenizer_object=tk)


def _with_special_tokens(tok: Any, where: str) -> Any:
    """Make sure ``eos_token`` is set (GPT-2/Pythia files do not say which token is EOS)."""
    if tok.eos_token is None:
        vocab = tok.get_vocab()
        for cand in EOS_CANDIDATES:
            if cand in vocab:
                tok.eos_token = cand
                break
        else:
            raise DataError(f"{where}: tokenizer has no end-of-text token (looked for {EOS_CANDIDATES})")
    if tok.bos_token is None and tok.eos_token in EOS_CANDIDATES[:1]:
        tok.bos_token = tok.eos_token  # GPT-2 and GPT-NeoX use <|endoftext|> for both
    return tok


def tokenizer_fingerprint(tok: Any) -> str:
    """A short hash of the tokenizer's vocabulary (ids and strings), to detect mismatches."""
    vocab = tok.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def vocab_size(tok: Any) -> int:
    """Number of ids the tokenizer can produce (including added special tokens)."""
    return max(tok.get_vocab().values()) + 1
