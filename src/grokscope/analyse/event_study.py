"""The event study (memorisation profile): each pair's accuracy and margin aligned at its own
first-exposure checkpoint, against pairs not (yet) exposed at the same checkpoints -- a staggered
difference-in-differences with pair and checkpoint fixed effects (as Lesci et al., ACL 2024, for
Pythia's data order).

Model, for pair i at checkpoint t with first-exposure index e_i (never-exposed pairs: no event):

    y_it = a_i + b_t + sum_k beta_k 1[t - e_i = k] + eps_it,   k in {<-K, -K..K} \\ {-1}, >K binned

Event time -1 (the checkpoint before first exposure) is the reference. Never-exposed and
not-yet-exposed pairs are the controls. The panel is balanced (every pair at every checkpoint), so
the two-way within transformation removes a_i and b_t exactly and OLS on the demeaned data gives
the fixed-effects estimates (statsmodels OLS, standard errors clustered by critical phrase; the
small-sample factor counts the event dummies only). ``beta_k`` for k >= 0: how much better a pair
does k checkpoints after it first saw its phrase than it would have without (given the pair's and
the checkpoint's own levels); for k < -1: pre-trends (should be ~0).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def event_labels(K: int) -> list[str]:
    """Names of the event-time columns: ``<-K``, -K..K without -1, ``>K``."""
    return [f"<{-K}"] + [str(k) for k in range(-K, K + 1) if k != -1] + [f">{K}"]


def event_dummies(entry: np.ndarray, T: int, K: int) -> np.ndarray:
    """``[n, T, J]`` 0/1 indicators of event time t - e_i (binned beyond +-K; never exposed: all 0)."""
    entry = np.asarray(entry, dtype=np.int64)
    k = np.arange(T)[None, :] - entry[:, None]  # [n, T]
    ever = (entry < T)[:, None]
    cols = [ever & (k < -K)] + [ever & (k == j) for j in range(-K, K + 1) if j != -1] + [ever & (k > K)]
    return np.stack(cols, axis=-1).astype(np.float64)


def twoway_demean(x: np.ndarray) -> np.ndarray:
    """Within transformation of a balanced panel ``[n, T, ...]``: x - row mean - column mean + grand mean."""
    return x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean((0, 1), keepdims=True)


def event_study(y: np.ndarray, entry: np.ndarray, cluster: np.ndarray, K: int, ci: float) -> pd.DataFrame:
    """Event-time effects of ``y`` ``[n, T]`` (see module docstring): one row per event time with
    ``estimate, se, ci_low, ci_high, p, n_exposed`` (pairs contributing to that event time)."""
    import statsmodels.api as sm

    n, T = y.shape
    D = event_dummies(entry, T, K)  # [n, T, J]
    labels = event_labels(K)
    present = D.sum((0, 1)) > 0
    out = pd.DataFrame({"event_time": labels, "estimate": np.nan, "se": np.nan, "ci_low": np.nan,
                        "ci_high": np.nan, "p": np.nan, "n_exposed": (D.sum(1) > 0).sum(0).astype(np.int64)})
    if not present.any() or n < 2 or T < 2:
        return out
    Xd = twoway_demean(D[:, :, present]).reshape(n * T, -1)
    yd = twoway_demean(np.asarray(y, dtype=np.float64)).reshape(-1)
    groups = np.repeat(pd.factorize(pd.Series(np.asarray(cluster)).astype(str))[0], T)
    keep = np.abs(Xd).sum(0) > 1e-12
    if not keep.any():
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.OLS(yd, Xd[:, keep]).fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
        conf = np.asarray(res.conf_int(alpha=1 - ci))
    idx = np.flatnonzero(present)[keep]
    out.loc[idx, "estimate"] = res.params
    out.loc[idx, "se"] = res.bse
    out.loc[idx, "ci_low"] = conf[:, 0]
    out.loc[idx, "ci_high"] = conf[:, 1]
    out.loc[idx, "p"] = res.pvalues
    return out


def event_tables(correct: np.ndarray, margin: np.ndarray | None, entry: np.ndarray, cluster: np.ndarray,
                 groups: list[tuple[str, str, np.ndarray]], K: int, ci: float) -> pd.DataFrame:
    """``event_study.parquet``: level, group, outcome (correct | margin), event_time and the estimates."""
    frames = []
    for level, name, idx in groups:
        outcomes = [("correct", correct[idx].astype(np.float64))]
        if margin is not None:
            outcomes.append(("margin", margin[idx]))
        for outcome, y in outcomes:
            df = event_study(y, entry[idx], cluster[idx], K, ci)
            df.insert(0, "outcome", outcome)
            df.insert(0, "group", name)
            df.insert(0, "level", level)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
