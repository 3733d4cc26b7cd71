"""Per-pair covariates of the ``adjusted`` comparison and the clusters inference resamples.

What drives both exposure and ease, as far as the study's tables tell (columns of
:func:`pair_covariates`, all numeric, one row per pair):

* ``log_critical_freq`` / ``log_context_freq``: log(1 + stream count of the critical / context word
  *outside* the benchmark's critical phrases) -- the word's unigram count (its rarest token for
  multi-token words, as :func:`grokscope.analyse.stage.word_frequencies`) minus the occurrences of
  every distinct critical phrase that has this word in this role (``good_total_count``: every
  occurrence of a phrase holds the word once). Subtracting only the pair's own phrase would leave a
  covariate that, among pairs sharing a word (every "this N" pair shares "this"), differs only by
  their exposure, i.e. a copy of what is being estimated (where the word occurs in few other places,
  as in the testbed, the fit then cannot tell the two apart). Only with a prepared ``tokens/``
  directory; the context frequency only where pairs have a context word.
* ``phrase_tokens``: length of the critical phrase in tokens (mid-text form, the stream's tokenizer),
  in words without one.
* ``distance``: words between the context and the critical word (0 where adjacent or absent).
* ``log_bad_count``: log(1 + stream count of the bad phrase).

The bigram of context and critical word is the critical phrase itself where they are adjacent, so
its frequency *is* the exposure; it is not a covariate. Paradigm enters as fixed effects.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

CLUSTER_CHOICES = ("phrase", "critical_word", "pair")


def cluster_ids(phrases: pd.DataFrame, by: str) -> np.ndarray:
    """``[n]`` cluster of each pair: its paradigm's critical phrase (lowercased), critical word, or itself."""
    uid = phrases["uid"].astype(str)
    if by == "pair":
        return (uid + "\x00" + phrases["pair_id"].astype(str)).to_numpy(dtype=object)
    col = "critical_phrase" if by == "phrase" else "critical_word"
    return (uid + "\x00" + phrases[col].fillna("").astype(str).str.lower()).to_numpy(dtype=object)


def _words_between(good: str, a: tuple[int, int], b: tuple[int, int]) -> int:
    if min(a + b) < 0:
        return 0
    lo, hi = (a[1], b[0]) if a[0] <= b[0] else (b[1], a[0])
    return len(good[lo:hi].split()) if hi > lo else 0


def inside_phrase_counts(words: np.ndarray, phrases: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """``[n]``: for each pair's ``words[i]``, the summed stream count of every distinct critical phrase
    (lowercased) whose pairs have that word in that role (``counts``: each pair's phrase count)."""
    key = pd.Series(words).str.lower().to_numpy()
    df = pd.DataFrame({"word": key, "phrase": phrases["critical_phrase"].fillna("").astype(str).str.lower().to_numpy(),
                       "count": counts})
    per_word = df.drop_duplicates(["word", "phrase"]).groupby("word")["count"].sum()
    return per_word.reindex(key).to_numpy(dtype=np.float64)


def pair_covariates(phrases: pd.DataFrame, exposure: pd.DataFrame, tokenizer: Any | None = None,
                    unigram: np.ndarray | None = None) -> pd.DataFrame:
    """The covariates (module docstring) of every pair, in phrases order."""
    from grokscope.analyse.stage import word_frequencies

    n = len(phrases)
    inside = exposure["good_total_count"].fillna(0).to_numpy(dtype=np.float64) if "good_total_count" in exposure \
        else np.zeros(n)
    out: dict[str, np.ndarray] = {}
    if tokenizer is not None and unigram is not None:
        crit_words = phrases["critical_word"].fillna("").astype(str).to_numpy()
        crit = word_frequencies(crit_words, tokenizer, unigram)
        out["log_critical_freq"] = np.log1p(np.maximum(crit - inside_phrase_counts(crit_words, phrases, inside), 0.0))
        ctx_words = phrases["context_word"].fillna("").astype(str).to_numpy() if "context_word" in phrases \
            else np.array([""] * n)
        if (ctx_words != "").any():
            ctx = word_frequencies(ctx_words, tokenizer, unigram)
            outside = np.maximum(ctx - inside_phrase_counts(ctx_words, phrases, inside), 0.0)
            out["log_context_freq"] = np.where(ctx_words != "", np.log1p(outside), 0.0)
        texts = (" " + phrases["critical_phrase"].fillna("").astype(str)).tolist()
        out["phrase_tokens"] = np.array([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts],
                                        dtype=np.float64)
    else:
        out["phrase_tokens"] = phrases["critical_phrase"].fillna("").astype(str).str.split().str.len() \
            .to_numpy(dtype=np.float64)
    if {"context_start", "context_end", "critical_start", "critical_end"} <= set(phrases.columns):
        out["distance"] = np.array([
            _words_between(g, (int(cs), int(ce)), (int(ks), int(ke))) for g, cs, ce, ks, ke in zip(
                phrases["good"].astype(str), phrases["context_start"].fillna(-1), phrases["context_end"].fillna(-1),
                phrases["critical_start"].fillna(-1), phrases["critical_end"].fillna(-1))], dtype=np.float64)
    if "bad_total_count" in exposure:
        out["log_bad_count"] = np.log1p(exposure["bad_total_count"].fillna(0).to_numpy(dtype=np.float64))
    return pd.DataFrame(out, index=phrases.index)
