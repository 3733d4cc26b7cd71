"""Margin curves: the mean log-prob margin good - bad of proxy-train and proxy-validation pairs at
every checkpoint, beside the accuracy curves (``analysis/margin_curves.parquet``).

Accuracy throws the margin away: a split can sit at 0.5 while its margin climbs towards the
decision boundary. Per level (all, phenomenon), split and checkpoint: ``n``, ``margin`` = mean
margin, and a phrase-cluster-robust interval: SE^2 = G/(G-1) * sum_g (S_g - n_g m)^2 / N^2
over the G clusters holding pairs of that side (the CR1 sandwich of an intercept-only
regression, the estimator statsmodels' ``cov_type="cluster"`` computes; the test checks
it against statsmodels), with a t(G-1) quantile. Fewer than 2 clusters -> no interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from grokscope.analyse.splits import entry_index, train_mask


def _side_rows(margin: np.ndarray, member: np.ndarray, cluster: np.ndarray, ci: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``margin``/``member`` ``[n, T]`` -> per checkpoint (n, mean, low, high)."""
    from scipy import stats

    codes, inverse = np.unique(cluster, return_inverse=True)
    G_all = codes.size
    w = member.astype(np.float64)
    S = np.zeros((G_all, margin.shape[1]))
    N = np.zeros_like(S)
    np.add.at(S, inverse, np.nan_to_num(margin) * w)
    np.add.at(N, inverse, w)
    n = N.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = S.sum(0) / n
        G = (N > 0).sum(0)
        resid = np.where(N > 0, S - N * mean[None, :], 0.0)
        se = np.sqrt(G / np.maximum(G - 1, 1) * (resid ** 2).sum(0)) / n
        q = stats.t.ppf(0.5 + ci / 2, np.maximum(G - 1, 1))
    lo = np.where(G >= 2, mean - q * se, np.nan)
    hi = np.where(G >= 2, mean + q * se, np.nan)
    return n.astype(np.int64), np.where(n > 0, mean, np.nan), lo, hi


def margin_curves(margin: np.ndarray, counts: np.ndarray, min_count: int, phenomenon: np.ndarray,
                  cluster: np.ndarray, steps: np.ndarray, tokens: np.ndarray, ci: float = 0.95) -> pd.DataFrame:
    """``level, group, split, step, tokens, n, margin, ci_low, ci_high`` (splits proxy_train /
    proxy_val by ``min_count`` occurrences in window(t), as the accuracy curves)."""
    T = margin.shape[1]
    tr = train_mask(entry_index(counts, min_count), T) > 0
    frames = []
    groups = [("all", "all", np.ones(len(margin), dtype=bool))]
    groups += [("phenomenon", str(p), phenomenon == p) for p in pd.unique(phenomenon)]
    for level, group, sel in groups:
        for split, member in (("proxy_train", tr), ("proxy_val", ~tr)):
            n, mean, lo, hi = _side_rows(margin[sel], member[sel], cluster[sel], ci)
            frames.append(pd.DataFrame({"level": level, "group": group, "split": split,
                                        "step": steps.astype(np.int64), "tokens": tokens.astype(np.int64),
                                        "n": n, "margin": mean, "ci_low": lo, "ci_high": hi}))
    return pd.concat(frames, ignore_index=True)
