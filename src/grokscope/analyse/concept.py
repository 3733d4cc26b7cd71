"""Concept vectors measured as the paper measures them, per phenomenon, layer and checkpoint.

For pairs i with good/bad hidden states g_i, b_i (``[n, d]``) the concept vector is
d_i = s_i (g_i - b_i), where s_i = +1/-1 is a *form convention* of the pair (:func:`orientation`):
+1 when the good critical word sorts before the bad one. Within a paradigm the convention is
the same grammatical feature (e.g. "dog"/"dogs": singular-good +1, plural-good -1), so the
concept vectors of singular- and plural-good pairs no longer cancel in their mean.

* **mean-direction probe** (the paper's): m = mean of d_i over the proxy-train(t) pairs; each
  good/bad state h of a proxy-val(t) pair i is scored s_i <m, h>; AUROC (sklearn
  ``roc_auc_score``) of that score separating good (1) from bad (0) states. 0.5 = no signal.
  The orientation makes a purely lexical direction (word form) separate too, so the same
  number at the embedding layer (layer 0) is the lexical baseline.
* **grouped logistic probe**: logistic regression on the oriented states (s_i h) with folds
  grouped by the pair's two word forms (:func:`lemma_groups`, sklearn ``GroupKFold``): neither
  form of a test pair's critical word is seen in training.
* **effective rank** of the *centred* matrix of concept vectors: exp of the Shannon entropy of
  the normalised singular values (Roy & Vetterli 2007), and the participation ratio of the
  centred covariance; on equal-size subsamples (interval over subsamples) and against a
  baseline of random good_i - good_j differences at the same checkpoint (general drift).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def orientation(good_words: np.ndarray, bad_words: np.ndarray) -> np.ndarray:
    """``[n]`` +1 where the good critical word sorts (case-folded) before the bad one, else -1."""
    g = np.array([str(w).lower() for w in good_words], dtype=object)
    b = np.array([str(w).lower() for w in bad_words], dtype=object)
    return np.where(g <= b, 1.0, -1.0)


def lemma_groups(good_words: np.ndarray, bad_words: np.ndarray) -> np.ndarray:
    """``[n]`` group key of each pair: its two critical word forms, case-folded and sorted
    ("dog|dogs" for both the singular- and the plural-good pair), so grouped folds never test a
    word form the probe was trained on with the other label."""
    return np.array(["|".join(sorted((str(g).lower(), str(b).lower()))) for g, b in zip(good_words, bad_words)],
                    dtype=object)


def concept_vectors(good: np.ndarray, bad: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """``[n, d]`` oriented concept vectors s_i (g_i - b_i)."""
    return np.asarray(sign, np.float64)[:, None] * (np.asarray(good, np.float64) - np.asarray(bad, np.float64))


def direction_auroc(direction: np.ndarray, good: np.ndarray, bad: np.ndarray, sign: np.ndarray) -> float:
    """AUROC of s_i <direction, h> separating good from bad states (NaN if undefined): the
    Mann-Whitney U of the good vs the bad scores over n_good * n_bad, U from the mid-ranks of
    scipy ``rankdata`` (ties count 1/2) -- equal to sklearn's ``roc_auc_score`` (tested) at a
    fraction of its per-call overhead."""
    from scipy.stats import rankdata

    s = np.asarray(sign, np.float64)
    w = np.asarray(direction, np.float64)
    if len(s) == 0:
        return float("nan")
    pos, neg = s * (np.asarray(good, np.float64) @ w), s * (np.asarray(bad, np.float64) @ w)
    if np.ptp(np.concatenate([pos, neg])) == 0:
        return 0.5  # all scores tied (e.g. a zero direction)
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks for ties
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def mean_direction_auroc(train_good: np.ndarray, train_bad: np.ndarray, train_sign: np.ndarray,
                         val_good: np.ndarray, val_bad: np.ndarray, val_sign: np.ndarray) -> float:
    """The paper's probe: mean oriented concept vector of the train pairs, AUROC on the val pairs."""
    if len(train_sign) == 0:
        return float("nan")
    m = concept_vectors(train_good, train_bad, train_sign).mean(axis=0)
    return direction_auroc(m, val_good, val_bad, val_sign)


PROBE_SOLVER = "newton-cholesky"  # Newton steps on the d x d Hessian: converges in a few iterations where
# lbfgs ran into max_iter on nearly separable states (425 of the CPU study's fits), at a fraction of its time


def grouped_logreg_accuracy(good: np.ndarray, bad: np.ndarray, sign: np.ndarray, groups: np.ndarray,
                            n_folds: int, C: float = 1.0, max_iter: int = 200,
                            labels: np.ndarray | None = None) -> float:
    """Cross-validated accuracy of a logistic probe on oriented states, folds grouped by word.

    ``labels`` (``[2n]``) replaces the good/bad labels (a random-label selectivity control)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    s = np.asarray(sign, np.float64)[:, None]
    x = np.concatenate([s * good, s * bad]).astype(np.float64)
    y = np.concatenate([np.ones(len(good)), np.zeros(len(bad))]) if labels is None else np.asarray(labels)
    g = np.concatenate([groups, groups])
    k = min(n_folds, len(np.unique(groups)))
    if k < 2:
        return float("nan")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, solver=PROBE_SOLVER, max_iter=max_iter))
    return float(cross_val_score(pipe, x, y, groups=g, cv=GroupKFold(n_splits=k)).mean())


def singular_values(matrix: np.ndarray, centre: bool = True) -> np.ndarray:
    """Singular values (descending) of the (column-centred) ``[n, d]`` matrix, from the eigenvalues
    of its smaller Gram matrix (``eigvalsh``; several times faster than an SVD for n << d).
    Eigenvalues below 1e-12 of the largest (rounding of the Gram product) are set to 0, i.e.
    singular values below 1e-6 of the largest are not resolved."""
    return batched_singular_values(np.asarray(matrix, dtype=np.float64)[None], centre)[0]


def batched_singular_values(stack: np.ndarray, centre: bool = True) -> np.ndarray:
    """:func:`singular_values` of every ``[n, d]`` matrix of a ``[k, n, d]`` stack at once (one
    batched ``eigvalsh`` of the Gram matrices): ``[k, min(n, d)]``, each row descending."""
    x = np.asarray(stack, dtype=np.float64)
    if x.shape[1] == 0 or x.shape[2] == 0:
        return np.zeros((x.shape[0], 0))
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    gram = x @ x.transpose(0, 2, 1) if x.shape[1] <= x.shape[2] else x.transpose(0, 2, 1) @ x
    lam = np.linalg.eigvalsh(gram)[:, ::-1]
    top = lam[:, :1]
    return np.sqrt(np.where(lam > top * 1e-12, lam, 0.0))


def entropy_rank(s: np.ndarray) -> float:
    """exp of the Shannon entropy of singular values ``s`` normalised to sum 1 (NaN if all 0)."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s[s > total * 1e-9] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank(matrix: np.ndarray, centre: bool = True) -> float:
    """exp(H(p)), p = singular values / their sum, of the (column-centred) ``[n, d]`` matrix
    (Roy & Vetterli 2007)."""
    return entropy_rank(singular_values(matrix, centre))


def participation_ratio_of(s: np.ndarray) -> float:
    """(sum l)^2 / sum l^2 of l = s^2 (NaN if all 0)."""
    lam = np.asarray(s, dtype=np.float64) ** 2
    denom = float((lam**2).sum())
    return float(lam.sum() ** 2 / denom) if denom > 0 else float("nan")


def centred_participation_ratio(matrix: np.ndarray) -> float:
    """(sum l)^2 / sum l^2 of the eigenvalues l of the centred covariance of ``[n, d]`` rows."""
    lam = np.linalg.svd(np.asarray(matrix, np.float64) - np.asarray(matrix, np.float64).mean(0),
                        compute_uv=False) ** 2
    denom = float((lam**2).sum())
    return float(lam.sum() ** 2 / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class RankEstimate:
    eff_rank: float  # median over subsamples
    eff_rank_low: float
    eff_rank_high: float
    pr_centred: float
    baseline_eff_rank: float  # random good_i - good_j differences, same n
    n_sub: int


def subsampled_rank(diffs: np.ndarray, good: np.ndarray, n_sub: int, repeats: int, rng: np.random.Generator,
                    ci: float = 0.9) -> RankEstimate:
    """Effective rank on ``repeats`` subsamples of ``n_sub`` concept vectors (percentile interval),
    the centred participation ratio, and the drift baseline: the effective rank of ``n_sub``
    random differences good_i - good_j (i != j) of the same checkpoint's good states (on
    ceil(repeats / 4) subsamples: it only has to show the scale of a random matrix)."""
    n = len(diffs)
    n_sub = min(n_sub, n)
    if n_sub < 3:
        return RankEstimate(*(float("nan"),) * 5, n_sub)
    d = np.asarray(diffs, dtype=np.float64)
    idx = np.stack([rng.choice(n, n_sub, replace=False) for _ in range(repeats)])  # [R, n_sub]
    svs = batched_singular_values(d[idx])  # one LAPACK call for every subsample
    ers = [entropy_rank(sv) for sv in svs]
    prs = [participation_ratio_of(sv) for sv in svs]
    n_base = -(-repeats // 4)
    i = np.stack([rng.choice(n, n_sub, replace=False) for _ in range(n_base)])
    j = (i + rng.integers(1, n, size=i.shape)) % n  # j != i
    g = np.asarray(good, dtype=np.float64)
    base = [entropy_rank(sv) for sv in batched_singular_values(g[i] - g[j])]
    lo, hi = np.quantile(ers, [(1 - ci) / 2, (1 + ci) / 2])
    return RankEstimate(float(np.median(ers)), float(lo), float(hi), float(np.median(prs)),
                        float(np.median(base)), n_sub)


def aligned_phase(tokens: np.ndarray, gen_tokens: float | None, width_log: float | None = None) -> np.ndarray:
    """"before" / "after" a phenomenon's generalisation in windows of equal length in log-tokens.

    Untrained checkpoints (0 tokens) are excluded (""). The window width is ``width_log`` (natural
    log units) or the largest that fits on both sides: min(log g - log t_first, log t_last - log g).
    "before" = [g e^-w, g), "after" = [g, g e^w]."""
    t = np.asarray(tokens, dtype=np.float64)
    out = np.full(t.shape, "", dtype=object)
    trained = t > 0
    if gen_tokens is None or not np.isfinite(gen_tokens) or gen_tokens <= 0 or not trained.any():
        return out
    lg = np.log(gen_tokens)
    lt = np.where(trained, np.log(np.where(trained, t, 1.0)), -np.inf)
    if width_log is None:
        width_log = min(lg - lt[trained].min(), lt[trained].max() - lg)
    if width_log <= 0:
        return out
    out[trained & (lt < lg) & (lt >= lg - width_log - 1e-9)] = "before"
    out[trained & (lt >= lg) & (lt <= lg + width_log + 1e-9)] = "after"
    return out
