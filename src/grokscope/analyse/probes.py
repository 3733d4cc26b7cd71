"""Concept vectors: hidden states at the critical token, good vs bad, per layer and checkpoint.

For pairs i = 1..n with good/bad states g_i, b_i (``[n, d]``) at one layer and checkpoint:

* **logistic-regression probe**: classify the 2n states as good (1) / bad (0); accuracy by
  k-fold cross-validation where both states of a pair, and all pairs with the same two word forms,
  fall in the same fold (a probe never sees the other half of a test pair, nor its word forms
  with the other label); features standardised on the training folds.
* **mean-difference direction**: w = mean(g) - mean(b) on the training folds; a state x is
  called good if w.x > w.(mean(g) + mean(b))/2; same folds.
* **dimensionality** of the concept vectors d_i = g_i - b_i: eigenvalues l_1 >= l_2 >= ... of
  their (uncentred) second-moment matrix D^T D / n; participation ratio (sum l)^2 / sum l^2
  (1 if all d_i are parallel, d if isotropic) and the number of components for 90% of sum l.
  Uncentred, so the shared concept direction counts as a dimension.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def spectrum(diffs: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the uncentred second moment of ``diffs`` ``[n, d]``."""
    from grokscope.analyse.concept import singular_values

    x = np.asarray(diffs, dtype=np.float64)
    s = singular_values(x, centre=False)  # from the smaller Gram matrix: far cheaper than an SVD of [n, d]
    return s**2 / max(x.shape[0], 1)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """(sum l)^2 / sum l^2 of a spectrum (NaN for an all-zero spectrum)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    denom = float((lam**2).sum())
    return float(lam.sum() ** 2 / denom) if denom > 0 else float("nan")


def n_components(eigenvalues: np.ndarray, share: float = 0.9) -> int:
    """Fewest leading eigenvalues whose sum reaches ``share`` of the total (0 if all zero)."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    total = lam.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(lam) / total, share - 1e-12) + 1)


def pair_folds(n_pairs: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_pairs]`` fold of each pair (balanced, shuffled)."""
    return rng.permutation(np.arange(n_pairs) % n_folds)


def word_folds(words: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_pairs]`` fold of each pair such that all pairs of one word group share a fold (the
    groups are dealt to folds in a shuffled order). With groups = both word forms of a pair
    (:func:`grokscope.analyse.concept.lemma_groups`) a probe is never tested on a word form it was
    trained on with the other label."""
    uniq, inv = np.unique(np.asarray(words, dtype=str), return_inverse=True)
    return rng.permutation(np.arange(uniq.size) % n_folds)[inv]


def meandiff_accuracy(good: np.ndarray, bad: np.ndarray, folds: np.ndarray) -> float:
    """Cross-validated accuracy of the mean-difference direction classifier (see module doc)."""
    good = np.asarray(good, dtype=np.float64)
    bad = np.asarray(bad, dtype=np.float64)
    hits, total = 0, 0
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        mg, mb = good[tr].mean(0), bad[tr].mean(0)
        w = mg - mb
        thr = w @ (mg + mb) / 2
        hits += int((good[te] @ w > thr).sum() + (bad[te] @ w <= thr).sum())
        total += 2 * int(te.sum())
    return hits / total if total else float("nan")


def logreg_accuracy(good: np.ndarray, bad: np.ndarray, folds: np.ndarray, C: float = 1.0,
                    max_iter: int = 200) -> tuple[float, float]:
    """Cross-validated logistic-regression probe on the states: (mean accuracy, std over folds).

    sklearn's ``LogisticRegression`` (L2, ``C``, Newton-Cholesky solver) on features standardised with the training
    folds' mean and standard deviation (what ``make_pipeline(StandardScaler(), ...)`` does)."""
    from sklearn.linear_model import LogisticRegression

    from grokscope.analyse.concept import PROBE_SOLVER

    x = np.concatenate([good, bad]).astype(np.float64)  # [2n, d]
    y = np.concatenate([np.ones(len(good)), np.zeros(len(bad))])
    fold2 = np.concatenate([folds, folds])
    accs = []
    for f in np.unique(folds):
        tr, te = fold2 != f, fold2 == f
        mu = x[tr].mean(axis=0)
        sd = x[tr].std(axis=0)
        sd[sd == 0] = 1.0
        clf = LogisticRegression(C=C, solver=PROBE_SOLVER, max_iter=max_iter)
        clf.fit((x[tr] - mu) / sd, y[tr])
        accs.append(float((clf.predict((x[te] - mu) / sd) == y[te]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


@dataclass(frozen=True)
class LayerProbe:
    layer: int
    n_pairs: int
    logreg_acc: float
    logreg_acc_std: float
    meandiff_acc: float
    participation_ratio: float
    n_components_90: int


def probe_checkpoint(hidden: np.ndarray, n_folds: int, seed: int, words: np.ndarray | None = None) -> list[LayerProbe]:
    """All probes for one checkpoint. ``hidden`` ``[n, 2, n_layer+1, d_model]`` (good, bad); with
    ``words`` (``[n]`` critical words) the folds are grouped by word (:func:`word_folds`)."""
    n, _, n_layers, _ = hidden.shape
    rng = np.random.default_rng(seed)
    if words is not None:
        n_folds = min(n_folds, len(np.unique(np.asarray(words, dtype=str))))
        folds = word_folds(words, n_folds, rng)
    else:
        folds = pair_folds(n, min(n_folds, n), rng)
    out = []
    for layer in range(n_layers):
        good = np.asarray(hidden[:, 0, layer], dtype=np.float32)  # [n, d]
        bad = np.asarray(hidden[:, 1, layer], dtype=np.float32)
        lam = spectrum(good - bad)
        if n >= 2 * n_folds and n_folds >= 2:
            lr, lr_std = logreg_accuracy(good, bad, folds)
            md = meandiff_accuracy(good, bad, folds)
        else:
            lr, lr_std, md = float("nan"), float("nan"), float("nan")
        out.append(LayerProbe(layer, n, lr, lr_std, md, participation_ratio(lam), n_components(lam, 0.9)))
    return out


def phase_of(steps: np.ndarray, gen_step: int | None) -> np.ndarray:
    """"before" / "after" the generalisation step (the step itself counts as after); "" if none."""
    steps = np.asarray(steps)
    if gen_step is None:
        return np.full(steps.shape, "", dtype=object)
    return np.where(steps >= gen_step, "after", "before").astype(object)


def phase_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Mean of each probe statistic per layer and phase (before/after generalisation)."""
    cols = ["logreg_acc", "meandiff_acc", "participation_ratio", "n_components_90"]
    sub = probes[probes["phase"] != ""]
    return sub.groupby(["layer", "phase"], as_index=False)[cols].mean()
