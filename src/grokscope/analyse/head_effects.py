"""Which heads carry each phenomenon: every head ablated on its own, heads selected on one half
of a phenomenon's pairs and measured on the other.

* **sweep** (:func:`single_head_sweep`): one unablated pass over a phenomenon-stratified
  subsample, then each of the L*H heads ablated alone (mean-ablation by default, zeroing as an
  option; :mod:`grokscope.analyse.heads`) -- per pair the log-prob margin good - bad and the
  decision, L*H + 1 forward passes in all.
* **halves** (:func:`selection_halves`): within each phenomenon the phrase clusters are split at
  random into a selection half A and a measurement half B (no phrase in both).
* **effects** (:func:`effects_table`), per phenomenon and head: the mean margin change on A
  (used only to rank) and on B, with a one-sided t-test on B's phrase-cluster means (scipy) that
  the margin falls; the accuracy change on B; the margin change on the *other* phenomena's pairs
  and the specificity = target change - others' change; the head's critical->context attention
  on A and B (distance-normalised where the score stage recorded its baseline). The top-k heads
  by margin drop on A are the ablation-selected heads, the top-k by attention on A the
  attention-selected ones. A head is ``causal`` for a phenomenon when it is ablation-selected on
  A and its drop on B is significant after Benjamini-Hochberg over the selected heads of every
  phenomenon (statsmodels): selection and test never see the same pair.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from grokscope.analyse import heads as hd

MarginFn = Callable[[Any], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Sweep:
    """``base_margin``/``base_correct`` ``[n]``; ``margin``/``correct`` ``[L, H, n]`` with head (l, h) ablated."""

    base_margin: np.ndarray
    base_correct: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    mode: str


def single_head_sweep(model: Any, margin_fn: MarginFn, mode: str = "mean", progress: bool = False) -> Sweep:
    """The unablated pass (which also records the heads' means) and one pass per head
    (:func:`grokscope.analyse.heads.each_head_ablated`); ``margin_fn`` as
    :func:`grokscope.analyse.heads.score_margin_fn` makes it."""
    (base_margin, base_correct), ablated = hd.each_head_ablated(model, margin_fn, mode, progress)
    n_layer, n_head = ablated[-1][0] + 1, ablated[-1][1] + 1
    margin = np.stack([m for _, _, (m, _) in ablated]).reshape(n_layer, n_head, -1)
    correct = np.stack([c for _, _, (_, c) in ablated]).reshape(n_layer, n_head, -1)
    return Sweep(base_margin, base_correct, margin, correct, mode)


def stratified_subsample(phenomenon: np.ndarray, per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: up to ``per_group`` seeded random pairs of every phenomenon (0 = all)."""
    out = []
    for p in pd.unique(phenomenon):
        idx = np.flatnonzero(phenomenon == p)
        out.append(rng.permutation(idx)[:per_group] if per_group > 0 else idx)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def selection_halves(phenomenon: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` bool, True = selection half A: per phenomenon, its phrase clusters in random order,
    taken into A until A holds half of the phenomenon's pairs (so no cluster is in both halves)."""
    in_a = np.zeros(len(phenomenon), dtype=bool)
    for p in pd.unique(phenomenon):
        idx = np.flatnonzero(phenomenon == p)
        names, inverse, sizes = np.unique(groups[idx], return_inverse=True, return_counts=True)
        taken = 0
        for g in rng.permutation(names.size):
            if taken >= idx.size / 2:
                break
            in_a[idx[inverse == g]] = True
            taken += sizes[g]
    return in_a


def _cluster_drop_p(delta: np.ndarray, groups: np.ndarray) -> float:
    """One-sided t-test over phrase-cluster means that the margin falls (NaN: < 3 clusters or no spread)."""
    from scipy import stats

    means = pd.Series(delta).groupby(groups).mean().to_numpy()
    if means.size < 3 or np.ptp(means) == 0:
        return float("nan")
    return float(stats.ttest_1samp(means, 0.0, alternative="less").pvalue)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = largest; NaN last."""
    v = np.nan_to_num(values.astype(np.float64), nan=-np.inf)
    order = np.argsort(-v, kind="stable")
    r = np.empty(v.size, dtype=np.int64)
    r[order] = np.arange(1, v.size + 1)
    return r


def effects_table(sweep: Sweep, phenomenon: np.ndarray, groups: np.ndarray, in_a: np.ndarray,
                  attention: np.ndarray | None, k: int, alpha: float = 0.05,
                  attention_baseline: np.ndarray | None = None) -> pd.DataFrame:
    """One row per phenomenon x head (see the module docstring); ``attention`` ``[n, L, H]`` is the
    score stage's critical->context weight of the good sentence for the same pairs, and
    ``attention_baseline`` (same shape) the head's weight at the same distances."""
    from statsmodels.stats.multitest import multipletests

    n_layer, n_head, _ = sweep.margin.shape
    delta = sweep.margin - sweep.base_margin  # [L, H, n]
    dacc = sweep.correct.astype(np.float64) - sweep.base_correct.astype(np.float64)
    att = None
    if attention is not None:
        att = (np.asarray(attention, dtype=np.float64) if attention_baseline is None
               else hd.pair_ratio(attention, attention_baseline))
    rows = []
    for p in pd.unique(phenomenon):
        target = phenomenon == p
        a, b, others = target & in_a, target & ~in_a, ~target
        drop_a = -delta[:, :, a].mean(axis=2).ravel() if a.any() else np.full(n_layer * n_head, np.nan)
        rank_abl = _ranks(drop_a)
        if att is not None and a.any():
            with np.errstate(invalid="ignore"):
                att_a = np.nanmean(att[a], axis=0).ravel()
                att_b = np.nanmean(att[b], axis=0).ravel() if b.any() else np.full(att_a.shape, np.nan)
        else:
            att_a = att_b = np.full(n_layer * n_head, np.nan)
        rank_att = _ranks(att_a)
        for j in range(n_layer * n_head):
            layer, h = divmod(j, n_head)
            d_b = delta[layer, h, b]
            d_o = delta[layer, h, others]
            d_t = float(d_b.mean()) if d_b.size else float("nan")
            d_oth = float(d_o.mean()) if d_o.size else float("nan")
            rows.append({
                "phenomenon": p, "layer": layer, "head": h, "n_a": int(a.sum()), "n_b": int(b.sum()),
                "base_margin": float(sweep.base_margin[b].mean()) if b.any() else float("nan"),
                "base_accuracy": float(sweep.base_correct[b].mean()) if b.any() else float("nan"),
                "delta_margin_a": -float(drop_a[j]), "delta_margin": d_t,
                "delta_accuracy": float(dacc[layer, h, b].mean()) if b.any() else float("nan"),
                "p": _cluster_drop_p(d_b, groups[b]) if b.any() else float("nan"),
                "delta_margin_others": d_oth, "specificity": d_t - d_oth,
                "attention_a": float(att_a[j]), "attention": float(att_b[j]),
                "rank_ablation_a": int(rank_abl[j]), "rank_attention_a": int(rank_att[j]),
                "selected_by_ablation": bool(rank_abl[j] <= k and np.isfinite(drop_a[j])),
                "selected_by_attention": bool(rank_att[j] <= k and np.isfinite(att_a[j])),
                "mode": sweep.mode,
            })
    table = pd.DataFrame(rows)
    table["q"] = np.nan
    tested = table["selected_by_ablation"] & table["p"].notna()
    if tested.any():
        table.loc[tested, "q"] = multipletests(table.loc[tested, "p"].to_numpy(), method="fdr_bh")[1]
    table["causal"] = (table["q"] <= alpha) & (table["delta_margin"] < 0)
    table["attention_normalised"] = attention_baseline is not None
    return table


def head_summary(effects: pd.DataFrame) -> pd.DataFrame:
    """Per phenomenon: the heads selected on A (by ablation and by attention), the margin change on
    B of each selection (mean over its heads), the causal heads and the specificity of the
    strongest one."""
    rows = []
    for p, g in effects.groupby("phenomenon", sort=False):
        by_abl = g[g["selected_by_ablation"]].sort_values("rank_ablation_a")
        by_att = g[g["selected_by_attention"]].sort_values("rank_attention_a")
        causal = g[g["causal"]].sort_values("delta_margin")
        best = causal.iloc[0] if len(causal) else None

        def names(frame: pd.DataFrame) -> str:
            return hd.format_heads(list(zip(frame["layer"].astype(int), frame["head"].astype(int))))

        rows.append({
            "phenomenon": p, "n_a": int(g["n_a"].iloc[0]), "n_b": int(g["n_b"].iloc[0]),
            "base_margin": float(g["base_margin"].iloc[0]), "base_accuracy": float(g["base_accuracy"].iloc[0]),
            "heads_by_ablation": names(by_abl), "delta_margin_by_ablation": float(by_abl["delta_margin"].mean()),
            "heads_by_attention": names(by_att), "delta_margin_by_attention": float(by_att["delta_margin"].mean()),
            "attention_selected_causal": int(by_att["causal"].sum()),
            "causal_heads": names(causal), "n_causal": int(len(causal)),
            "best_delta_margin": float(best["delta_margin"]) if best is not None else float("nan"),
            "best_delta_accuracy": float(best["delta_accuracy"]) if best is not None else float("nan"),
            "best_specificity": float(best["specificity"]) if best is not None else float("nan"),
        })
    return pd.DataFrame(rows)


def summary_line(summary: pd.DataFrame) -> str:
    parts = [f"{r.phenomenon} {r.causal_heads or 'none'}" for r in summary.itertuples()]
    return "causal heads per phenomenon (selected on half A, confirmed on half B): " + "; ".join(parts)
