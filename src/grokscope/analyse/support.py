"""Support of the good vs the bad form, and which paradigms' splits can carry information.

Per pair and window(t): the good phrase's count ``g``, the bad phrase's count ``b`` and the
**support share** ``g / (g + b)`` (undefined, NaN, when neither occurred) -- the quantity
"Natural Ungrokking" (arXiv 2606.26050) finds decides which rules survive pre-training.

* :func:`support_splits` -- accuracy of the pairs exposed to the good form only, the bad form
  only, both, or neither (each ">= k occurrences in the window"), per checkpoint.
* :func:`dose_response` -- accuracy against log2 bins of the good count and against bins of the
  support share, per checkpoint.
* :func:`paradigm_information` -- per paradigm: distinct critical phrases, pairs without a
  context word, share of pairs seen at the first and at the last checkpoint, and whether its
  split can carry information (enough distinct phrases, a context word).

Intervals are Wilson score intervals (statsmodels ``proportion_confint``) over pairs; pairs that
share a phrase are not independent, so they are descriptive (the verdicts' clustered inference
lives in :mod:`grokscope.analyse.dynamics`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.core.errors import DataError

SUPPORT_SPLITS = ("good_only", "bad_only", "both", "neither")
SHARE_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def side_counts(exposure: pd.DataFrame, steps: np.ndarray, side: str, path: Path) -> np.ndarray:
    """``[n, T]`` cumulative count of the ``side`` ("good"/"bad") phrase in window(t)."""
    cols = [f"{side}_count_{int(s)}" for s in steps]
    missing = [c for c in cols if c not in exposure.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]} ({len(missing)} missing); re-run grokscope exposure with "
                        "--checkpoints covering every scored step")
    return exposure[cols].fillna(0).to_numpy(dtype=np.int64)


def support_share(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``good / (good + bad)`` elementwise; NaN where both are 0."""
    tot = good + bad
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, good / np.maximum(tot, 1), np.nan)


def support_table(uid: np.ndarray, pair_id: np.ndarray, steps: np.ndarray, good: np.ndarray,
                  bad: np.ndarray) -> pd.DataFrame:
    """Long table: one row per pair and step with ``good_count, bad_count, support_share``."""
    n, t = good.shape
    return pd.DataFrame({
        "uid": np.repeat(uid, t), "pair_id": np.repeat(pair_id, t), "step": np.tile(steps, n),
        "good_count": good.ravel(), "bad_count": bad.ravel(), "support_share": support_share(good, bad).ravel(),
    })


def _rate_rows(correct: np.ndarray, mask: np.ndarray, ci: float) -> tuple[np.ndarray, ...]:
    """Per column: n, correct, accuracy and Wilson interval of ``correct[mask]``."""
    from statsmodels.stats.proportion import proportion_confint

    n = mask.sum(axis=0)
    k = (correct & mask).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    lo, hi = proportion_confint(k, np.maximum(n, 1), alpha=1 - ci, method="wilson")
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return n, k, acc, lo, hi


def _frame(steps: np.ndarray, label: dict[str, object], parts: tuple[np.ndarray, ...]) -> pd.DataFrame:
    n, k, acc, lo, hi = parts
    cols: dict[str, object] = {"step": steps}
    cols.update({key: [v] * len(steps) for key, v in label.items()})
    cols.update({"n": n.astype(np.int64), "correct": k.astype(np.int64), "accuracy": acc, "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(cols)


def support_classes(good: np.ndarray, bad: np.ndarray, min_count: int) -> np.ndarray:
    """``[n, T]`` index into :data:`SUPPORT_SPLITS`: good only 0, bad only 1, both 2, neither 3."""
    g, b = good >= min_count, bad >= min_count
    return np.where(g & ~b, 0, np.where(~g & b, 1, np.where(g & b, 2, 3)))


def support_splits(correct: np.ndarray, good: np.ndarray, bad: np.ndarray, steps: np.ndarray, min_count: int = 1,
                   ci: float = 0.95) -> pd.DataFrame:
    """Accuracy per checkpoint of pairs exposed (>= ``min_count``) to the good form only, the bad
    only, both, neither: columns ``step, split, n, correct, accuracy, ci_lo, ci_hi``."""
    cls = support_classes(good, bad, min_count)
    frames = [_frame(steps, {"split": name}, _rate_rows(correct, cls == c, ci))
              for c, name in enumerate(SUPPORT_SPLITS)]
    return pd.concat(frames, ignore_index=True)


def count_bins(counts: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Log2 bins of a count: bin 0 = 0, bin j >= 1 = ``[2**(j-1), 2**j)``; returns the bin of each
    entry and each bin's (label, low, high-exclusive) up to the largest count."""
    c = np.asarray(counts, dtype=np.int64)
    b = np.where(c > 0, np.floor(np.log2(np.maximum(c, 1))).astype(np.int64) + 1, 0)
    top = int(b.max()) if b.size else 0
    labels = [("0", 0.0, 1.0)] + [(f"{2 ** (j - 1)}-{2 ** j - 1}" if j > 1 else "1", float(2 ** (j - 1)),
                                   float(2 ** j)) for j in range(1, top + 1)]
    return b, labels


def share_bins(share: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Bins of the support share (:data:`SHARE_EDGES`, the last closed); NaN -> -1."""
    edges = np.asarray(SHARE_EDGES)
    b = np.clip(np.searchsorted(edges, np.nan_to_num(share, nan=-1.0), side="right") - 1, 0, edges.size - 2)
    b = np.where(np.isnan(share), -1, b)
    labels = [(f"{edges[j]:.1f}-{edges[j + 1]:.1f}", float(edges[j]), float(edges[j + 1]))
              for j in range(edges.size - 1)]
    return b, labels


def dose_response(correct: np.ndarray, good: np.ndarray, bad: np.ndarray, steps: np.ndarray,
                  ci: float = 0.95) -> pd.DataFrame:
    """Accuracy against log2 bins of the good count (``axis = "good_count"``) and against bins
    of the support share (``axis = "support_share"``; pairs with neither form seen are left out),
    per checkpoint: ``step, axis, bin, lo, hi, n, correct, accuracy, ci_lo, ci_hi``."""
    frames = []
    axes = (("good_count", count_bins(good)), ("support_share", share_bins(support_share(good, bad))))
    for axis, (b, labels) in axes:
        for j, (label, lo, hi) in enumerate(labels):
            part = _rate_rows(correct, b == j, ci)
            frames.append(_frame(steps, {"axis": axis, "bin": label, "lo": lo, "hi": hi}, part))
    return pd.concat(frames, ignore_index=True)


def paradigm_information(phrases: pd.DataFrame, good: np.ndarray, min_count: int,
                         min_distinct_phrases: int) -> pd.DataFrame:
    """Per paradigm of the (supported) pairs in ``phrases`` (``good``: their ``[n, T]`` counts):
    ``uid, phenomenon, pairs, distinct_phrases, no_context, seen_first, seen_last, informative,
    reason`` ("" when informative)."""
    d = pd.DataFrame({
        "uid": phrases["uid"].to_numpy(dtype=object), "phenomenon": phrases["phenomenon"].to_numpy(dtype=object),
        "phrase": phrases["critical_phrase"].fillna("").astype(str).to_numpy(),
        "no_context": phrases["context_word"].fillna("").astype(str).to_numpy() == "",
        "seen_first": good[:, 0] >= min_count if good.size else False,
        "seen_last": good[:, -1] >= min_count if good.size else False,
    })
    rows = []
    for (uid, phen), g in d.groupby(["uid", "phenomenon"], sort=True):
        distinct = int(g["phrase"].nunique())
        no_ctx = int(g["no_context"].sum())
        reasons = []
        if distinct < min_distinct_phrases:
            reasons.append(f"{distinct} distinct phrase{'s' if distinct != 1 else ''} (< {min_distinct_phrases})")
        if no_ctx == len(g):
            reasons.append("no context word")
        rows.append({"uid": uid, "phenomenon": phen, "pairs": len(g), "distinct_phrases": distinct,
                     "no_context": no_ctx, "seen_first": float(g["seen_first"].mean()),
                     "seen_last": float(g["seen_last"].mean()), "informative": not reasons,
                     "reason": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=["uid", "phenomenon", "pairs", "distinct_phrases", "no_context", "seen_first",
                                       "seen_last", "informative", "reason"])


def left_out_summary(info: pd.DataFrame, kept: bool) -> str:
    """One line naming the uninformative paradigms and why (or that they were kept)."""
    bad = info[~info["informative"]]
    if bad.empty:
        return "informative splits: every paradigm has enough distinct phrases and a context word"
    names = "; ".join(f"{r.uid} ({r.reason})" for r in bad.itertuples())
    verb = "kept in the verdicts (keep_uninformative)" if kept else "left out of the verdicts"
    return f"informative splits: {len(bad)} paradigm(s) {verb}: {names}"
