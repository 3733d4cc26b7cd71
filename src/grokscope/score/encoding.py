"""Token ids of minimal pairs as each reference tool scores them, and the prefix-tree rows
that let one forward pass score many sentences.

Conventions (:data:`CONVENTIONS`):

* ``lm_eval`` (default) — lm-evaluation-harness's BLiMP task: context ``""``, continuation
  ``" " + sentence`` (its target delimiter is a space). An empty context is replaced by the
  prefix token (BOS, or EOS when the tokenizer has no BOS), so the scored tokens are
  ``tokenize(" " + sentence)`` after that token.
* ``minicons`` — minicons ``sequence_score(..., bos_token=True)``: ``tokenize(sentence)`` after
  the BOS (or EOS) token.
* ``none`` — ``tokenize(sentence)`` with no prefix; the first token is not scored.

Character spans of the critical phrase, critical word and context word (CONTRACTS "Phrases")
become token positions: the scored tokens inside the phrase, the critical token whose hidden
states are kept, and the attention query and keys.

Prefix trees (:func:`pack_rows`): sentences sorted lexicographically so that sentences sharing a
prefix (good and bad up to their first difference, the BOS token, a sentence-initial name) are
neighbours, each distinct prefix one node, a tree-shaped mask and per-node position ids keeping
every sentence exactly as if it were alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.core.config import CONVENTIONS
from grokscope.core.errors import DataError, GrokscopeError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


_SPAN_COLUMNS = (
    "phrase_start", "phrase_end", "bad_phrase_start", "bad_phrase_end",
    "critical_start", "critical_end", "bad_critical_start", "bad_critical_end",
    "context_start", "context_end", "bad_context_start", "bad_context_end",
)


@dataclass
class EncodedSentence:
    """Token ids of one scored sentence (prefix token included) and the token positions that
    matter. Position ``j`` (>= 1) is scored given positions ``< j``."""

    ids: list[int]
    phrase_tokens: list[int]  # scored positions inside the critical phrase
    critical_token: int = -1  # last token of the critical word
    attn_query: int = -1  # last token of the later of critical/context word
    attn_keys: list[int] = field(default_factory=list)  # tokens of the earlier word

    def state_token(self, at: str = "later") -> int:
        """Position whose hidden states are kept: the critical word's last token, or (``later``) the
        later of it and the context word's last token (the critical token where there is no context)."""
        if at == "later" and self.attn_query >= 0:
            return max(self.critical_token, self.attn_query)
        return self.critical_token

    @property
    def need(self) -> int:
        """Last position whose hidden state is needed (to predict, or to capture)."""
        return max(0, len(self.ids) - 2, self.critical_token, self.attn_query)


@dataclass
class PackedRow:
    """Several sentences in one row, as a prefix tree of their fed tokens: node ``r`` holds token
    ``ids[r]`` at position ``positions[r]`` and attends only to itself and its ancestors
    (``visible[r]``), so every sentence is computed exactly as if it were alone, while a prefix
    shared by several sentences (the BOS token, the words before good and bad differ, a name
    that starts many sentences) is computed once."""

    ids: np.ndarray  # [n] int64
    positions: np.ndarray  # [n] int64
    visible: np.ndarray  # [n, n] bool
    sentences: list[int]  # global sentence index: 2 * pair + side (0 good, 1 bad)
    paths: list[np.ndarray]  # per sentence: node of each fed position 0..need


def prefix_token_id(tokenizer: Any) -> int:
    """lm-evaluation-harness's ``prefix_token_id``: BOS, or EOS when there is no BOS."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise DataError("the tokenizer has neither a BOS nor an EOS token; use --convention none")


def encode_pairs(tokenizer: Any, pairs: pd.DataFrame,
                 convention: str = "lm_eval") -> list[tuple[EncodedSentence, EncodedSentence]]:
    """Tokenise every pair under ``convention`` and map the critical phrase / word / context
    word character spans (columns of ``pairs`` when present, see CONTRACTS "Phrases") to token
    positions."""
    if convention not in CONVENTIONS:
        raise GrokscopeError(f"score: convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    lead = " " if convention == "lm_eval" else ""
    prefix = prefix_token_id(tokenizer) if convention != "none" else None
    encoded: dict[str, list[tuple[list[int], list[tuple[int, int]], str]]] = {}
    for side in ("good", "bad"):
        texts = [lead + s for s in pairs[side].astype(str).tolist()]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        encoded[side] = list(zip(enc["input_ids"], enc["offset_mapping"], texts))
        empty = [i for i, ids in enumerate(enc["input_ids"]) if not ids]
        if empty:
            r = pairs.iloc[empty[0]]
            who = f"pair ({r['uid']}, {r['pair_id']})" if "uid" in pairs.columns else f"pair {empty[0]}"
            raise DataError(f"the tokenizer encodes the {side} sentence of {len(empty)} pair(s) to no tokens, "
                            f"e.g. {who}: {texts[empty[0]]!r}; the tokenizer does not fit this text")
    spans = _span_arrays(pairs)
    shift = len(lead)
    out = []
    for i in range(len(pairs)):
        good = _encode_one(*encoded["good"][i], prefix, shift, spans, i, "good")
        bad = _encode_one(*encoded["bad"][i], prefix, shift, spans, i, "bad")
        out.append((good, bad))
    return out


def _span_arrays(pairs: pd.DataFrame) -> dict[str, np.ndarray]:
    n = len(pairs)
    spans = {}
    for col in _SPAN_COLUMNS:
        if col in pairs.columns:
            spans[col] = pairs[col].fillna(-1).to_numpy(dtype=np.int64)
        else:
            spans[col] = np.full(n, -1, dtype=np.int64)
    if "supported" in pairs.columns:
        unsupported = ~pairs["supported"].fillna(False).to_numpy(dtype=bool)
        for col in spans:
            spans[col] = np.where(unsupported, -1, spans[col])
    return spans


def _encode_one(ids: list[int], offsets: list[tuple[int, int]], text: str, prefix: int | None, shift: int,
                spans: dict[str, np.ndarray], i: int, side: str) -> EncodedSentence:
    ids = list(ids)
    offsets = list(offsets)
    if prefix is not None:
        if ids and ids[0] == prefix:
            pass  # lm-eval: the text already starts with the prefix token; it becomes the context
        else:
            ids = [prefix] + ids
            offsets = [(0, 0)] + offsets
    # character extent of each token without its leading whitespace
    starts = np.empty(len(offsets), dtype=np.int64)
    ends = np.empty(len(offsets), dtype=np.int64)
    for k, (s, e) in enumerate(offsets):
        while s < e and text[s].isspace():
            s += 1
        starts[k], ends[k] = s, e
    if prefix is not None and ids and offsets[0] == (0, 0):
        starts[0] = ends[0] = -1  # the prefix token covers no character

    pre = "" if side == "good" else "bad_"

    def tokens_in(name: str) -> np.ndarray:
        a, b = spans[f"{pre}{name}_start"][i], spans[f"{pre}{name}_end"][i]
        if a < 0 or b <= a:
            return np.empty(0, dtype=np.int64)
        a, b = a + shift, b + shift
        return np.nonzero((np.maximum(starts, a) < np.minimum(ends, b)) & (ends > starts))[0]

    phrase = tokens_in("phrase")
    critical = tokens_in("critical")
    context = tokens_in("context")
    enc = EncodedSentence(ids=ids, phrase_tokens=[int(t) for t in phrase if t >= 1])
    if len(critical):
        enc.critical_token = int(critical[-1])
        if len(context):
            if context[-1] < critical[0]:  # context word first: query = critical token
                enc.attn_query, enc.attn_keys = int(critical[-1]), [int(t) for t in context]
            elif critical[-1] < context[0]:  # critical word first: query = last context token
                enc.attn_query, enc.attn_keys = int(context[-1]), [int(t) for t in critical]
    return enc


def with_phrases(pairs: pd.DataFrame, phrases: pd.DataFrame | None) -> pd.DataFrame:
    for col in ("uid", "pair_id", "good", "bad"):
        if col not in pairs.columns:
            raise DataError(f"score: pairs table has no '{col}' column (expected uid, pair_id, good, bad)")
    pairs = pairs.reset_index(drop=True)
    if phrases is None:
        return pairs
    keep = [c for c in ("supported", "good", *_SPAN_COLUMNS) if c in phrases.columns]
    ph = phrases[["uid", "pair_id", *keep]].rename(columns={"good": "_phrase_good"})
    base = pairs.drop(columns=[c for c in keep if c in pairs.columns and c != "good"])
    merged = base.merge(ph, on=["uid", "pair_id"], how="left", validate="one_to_one", sort=False)
    if "_phrase_good" in merged.columns:
        present = merged["_phrase_good"].notna()
        mismatch = present & (merged["_phrase_good"] != merged["good"])
        if mismatch.any():
            r = merged[mismatch].iloc[0]
            raise DataError(
                f"phrases table does not match the benchmark: pair ({r['uid']}, {r['pair_id']}) has good "
                f"sentence {r['good']!r} in the benchmark but {r['_phrase_good']!r} in the phrases table; "
                "re-run `grokscope phrases` on this benchmark"
            )
        merged = merged.drop(columns=["_phrase_good"])
    if "supported" in merged.columns:
        merged["supported"] = merged["supported"].astype("boolean").fillna(False).astype(bool)
    return merged


def pack_rows(sentences: list[EncodedSentence], sentences_per_row: int = 16,
              share_prefix: bool = True) -> list[PackedRow]:
    """Lay sentences out as rows of prefix trees (see :class:`PackedRow`).

    Sentences are sorted lexicographically by their fed tokens (positions ``0..need``), so the
    ones sharing a prefix are neighbours, then cut into rows of ``sentences_per_row``; in a
    row, each sentence reuses the nodes of its longest common prefix with the previous one
    (with ``share_prefix=False`` no node is shared: a block-diagonal row)."""
    fed = [s.ids[: s.need + 1] for s in sentences]
    order = sorted(range(len(sentences)), key=lambda k: fed[k])
    rows = []
    for a in range(0, len(order), sentences_per_row):
        members = order[a : a + sentences_per_row]
        ids: list[int] = []
        positions: list[int] = []
        parent: list[int] = []
        paths: list[np.ndarray] = []
        prev: list[int] | None = None
        for k in members:
            f = fed[k]
            lcp = 0
            if share_prefix and prev is not None:
                limit = min(len(prev), len(f))
                while lcp < limit and prev[lcp] == f[lcp]:
                    lcp += 1
            path = list(paths[-1][:lcp]) if lcp else []
            for j in range(lcp, len(f)):
                parent.append(path[-1] if path else -1)
                path.append(len(ids))
                ids.append(f[j])
                positions.append(j)
            paths.append(np.asarray(path, dtype=np.int64))
            prev = f
        n = len(ids)
        visible = np.zeros((n, n), dtype=bool)
        for r in range(n):
            if parent[r] >= 0:
                visible[r] = visible[parent[r]]
            visible[r, r] = True
        rows.append(PackedRow(np.asarray(ids, dtype=np.int64), np.asarray(positions, dtype=np.int64), visible,
                              list(members), paths))
    return rows
