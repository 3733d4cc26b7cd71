"""Word-boundary tables over a tokenizer's vocabulary: which tokens begin or end with a letter or
digit, so that a match of " this sketch" does not count inside " this sketchbook" (see
:mod:`grokscope.exposure.engine`, which takes them as plain arrays)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


# ---------------------------------------------------------------------------------------------
# word-boundary tables
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordTables:
    """Per-token word-boundary facts. ``continues_word[v]``: token ``v``'s text begins with a
    letter or digit; ``ends_word[v]``: it ends with one. ``[vocab_size]`` bool each.

    Byte-level BPE splits some characters across tokens (GPT-2 writes "“" as ``E2 80`` + ``9C``).
    A token made only of UTF-8 continuation bytes cannot say alone what it ends with, so
    ``ends_word`` is True for it (conservative), and the scan refines it from the token before:
    ``pair_word[tail_index[u], cont_index[v]]`` tells whether the character completed by ``v``
    after a token ``u`` that ends in an unfinished character is a letter/digit (-1 indexes:
    no entry); at position 1 of a row (the character began in the previous row) it counts as
    cut by the row boundary, i.e. non-word."""

    continues_word: np.ndarray
    ends_word: np.ndarray
    tail_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    cont_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    pair_word: np.ndarray = field(default_factory=lambda: np.ones((1, 1), dtype=np.bool_))

    def __post_init__(self) -> None:
        n = self.continues_word.shape[0]
        if self.tail_index.shape[0] != n:  # no pair information: all -1
            object.__setattr__(self, "tail_index", np.full(n, -1, dtype=np.int32))
            object.__setattr__(self, "cont_index", np.full(n, -1, dtype=np.int32))

    @property
    def vocab_size(self) -> int:
        return int(self.continues_word.shape[0])


def _char_len(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _is_cont(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


def _partial_char_is_word(prefix: bytes) -> bool:
    """An unfinished UTF-8 character (lead byte + some continuation bytes): is it most likely a
    letter/digit? Majority vote over its possible completions (one free byte enumerated, any
    further ones fixed at 0x80). "E2 80" (U+2000–U+203F: quotes, dashes) → no; "C3" → yes."""
    missing = _char_len(prefix[0]) - len(prefix)
    votes = total = 0
    for x in range(0x80, 0xC0):
        try:
            ch = (prefix + bytes([x]) + b"\x80" * (missing - 1)).decode("utf-8")
        except UnicodeDecodeError:
            continue
        total += 1
        votes += ch.isalnum()
    return total > 0 and 2 * votes >= total


def _first_char_is_word(b: bytes) -> bool:
    if not b:
        return False
    if b[0] < 0x80:
        return chr(b[0]).isalnum()
    if _is_cont(b[0]):  # the middle of a character begun in the previous token
        return True
    n = _char_len(b[0])
    if len(b) < n:
        return _partial_char_is_word(b)
    try:
        return b[:n].decode("utf-8").isalnum()
    except UnicodeDecodeError:
        return True


def _last_char_is_word(b: bytes) -> bool:
    if not b:
        return False
    if b[-1] < 0x80:
        return chr(b[-1]).isalnum()
    k = len(b) - 1
    while k > 0 and _is_cont(b[k]) and len(b) - k < 4:
        k -= 1
    if _is_cont(b[k]):
        return True  # only continuation bytes: unknown alone (see WordTables.pair_word)
    if len(b) - k < _char_len(b[k]):
        return _partial_char_is_word(b[k:])
    try:
        return b[k:].decode("utf-8").isalnum()
    except UnicodeDecodeError:
        return True


def _unfinished_tail(b: bytes) -> bytes | None:
    """The trailing unfinished character of ``b`` (lead byte + fewer continuations than it
    needs), or None."""
    k = len(b) - 1
    while k >= 0 and _is_cont(b[k]):
        k -= 1
    if k >= 0 and b[k] >= 0xC0 and len(b) - k < _char_len(b[k]):
        return b[k:]
    return None


def word_tables_from_bytes(token_bytes: Sequence[bytes | None]) -> WordTables:
    """Tables from each token's byte string (``None`` = a special token: non-word both sides)."""
    n = len(token_bytes)
    cont = np.zeros(n, dtype=np.bool_)
    ends = np.zeros(n, dtype=np.bool_)
    tails: dict[int, bytes] = {}
    conts: dict[int, bytes] = {}
    for i, b in enumerate(token_bytes):
        if b is None:
            continue
        cont[i] = _first_char_is_word(b)
        ends[i] = _last_char_is_word(b)
        t = _unfinished_tail(b) if b else None
        if t is not None:
            tails[i] = t
        if b and len(b) <= 3 and all(_is_cont(x) for x in b):
            conts[i] = b
    tail_index = np.full(n, -1, dtype=np.int32)
    cont_index = np.full(n, -1, dtype=np.int32)
    pair = np.ones((max(1, len(tails)), max(1, len(conts))), dtype=np.bool_)
    for a, (i, t) in enumerate(tails.items()):
        tail_index[i] = a
        for c, (j, cb) in enumerate(conts.items()):
            cont_index[j] = c
            whole = t + cb
            if len(whole) == _char_len(t[0]):
                try:
                    pair[a, c] = whole.decode("utf-8").isalnum()
                except UnicodeDecodeError:
                    pass
    return WordTables(cont, ends, tail_index, cont_index, pair)


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (used by every byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Each token id's bytes as it appears in text (``None`` for special/added tokens).
    Handles byte-level BPE (GPT-2, Pythia/GPT-NeoX, OLMo: 'Ġ' = space) and SentencePiece
    ('▁' = space, '<0xNN>' byte pieces)."""
    vocab: dict[str, int] = tokenizer.get_vocab()
    n = max(vocab.values()) + 1
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i in added}
    pieces: list[str | None] = [None] * n
    for piece, i in vocab.items():
        pieces[i] = piece
    byte_level = sum(1 for s in vocab if s.startswith("Ġ")) > 100
    dec = _byte_decoder()
    out: list[bytes | None] = [None] * n
    for i, s in enumerate(pieces):
        if s is None or i in special:
            continue
        if byte_level and all(c in dec for c in s):
            out[i] = bytes(dec[c] for c in s)
        elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            out[i] = bytes([int(s[3:5], 16)])
        else:
            out[i] = s.replace("▁", " ").encode("utf-8")
    return out


def word_tables(tokenizer: Any) -> WordTables:
    """:class:`WordTables` for a ``transformers`` tokenizer."""
    return word_tables_from_bytes(token_bytes(tokenizer))


def pad_tables(tables: WordTables, n: int) -> WordTables:
    """Tables for ids the tokenizer's vocabulary lists but that have no text (non-word)."""
    pad = n - tables.vocab_size
    return WordTables(np.concatenate([tables.continues_word, np.zeros(pad, bool)]),
                      np.concatenate([tables.ends_word, np.zeros(pad, bool)]),
                      np.concatenate([tables.tail_index, np.full(pad, -1, np.int32)]),
                      np.concatenate([tables.cont_index, np.full(pad, -1, np.int32)]), tables.pair_word)
