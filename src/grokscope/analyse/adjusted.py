"""The headline comparison, ``adjusted``: the effect of having seen the critical phrase on a pair's
correctness (binomial GLM, log odds ratio) and on its log-prob margin (Gaussian GLM = OLS, log-prob
units), adjusted for the pair's covariates (:mod:`grokscope.analyse.covariates`), with standard
errors clustered by critical phrase (statsmodels GEE, Mancl-DeRouen bias-reduced sandwich; t reference
with G - 1 degrees of freedom: :func:`fit_effect`).

Design, per group: the rows are (pair, checkpoint) for the checkpoints of the group's **rise
window** -- where the pooled isotonic accuracy fit is between 10% and 90% of the way from the floor
to the ceiling (:mod:`grokscope.analyse.onset`; at least the half-rise crossing; at most
``max_window`` of them, evenly spaced) -- which is where seen and unseen pairs can differ at all.
Groups of more than ``max_pairs`` pairs are fitted on a seeded random subset of whole clusters.
Regressors: seen_it (count in window(t) >= k), checkpoint fixed effects, paradigm fixed effects, each
covariate (standardised; as a cubic B-spline basis or as indicators of its values, :func:`standardised`)
and its interaction with the checkpoint's position in the window (the confounder's effect may change
as the model learns).
A binomial fit that separates (:func:`separates`, |log OR| or its interval past ``MAX_LOG_OR``, or no
convergence) is reported as NaN.

Status (after Benjamini-Hochberg across all groups and comparisons, :func:`finalise_verdicts`):
``not learned`` (the pooled rise's cluster-bootstrap interval includes 0), ``too few clusters``
(fewer than ``min_clusters`` phrase clusters seen or unseen in the window), ``delayed`` (effect on
correctness > 0 with q < alpha: seen pairs are right before unseen ones, given the covariates),
``val leads`` (< 0 with q < alpha), ``no estimate`` (no fit), else ``no delay``.
When the binomial fit separates -- every seen (or every unseen) pair right, or wrong, across the
window, so the log odds ratio has no finite estimate, or a fit whose interval reaches past
``MAX_LOG_OR`` (quasi-separation: a window of one checkpoint where nearly everything is right) --
the verdict rests on the margin model instead (``basis`` = "margin": its p and sign), which stays
finite; ``basis`` = "correctness" otherwise.

Sensitivity (E-value, VanderWeele & Ding 2017): the odds ratio is turned into a risk ratio by
RR = sqrt(OR) (common outcome); E = RR + sqrt(RR (RR - 1)) is the strength (risk ratio with both
exposure and outcome) an unmeasured confounder would need to explain the effect away; ``e_value_ci``
does the same for the interval bound nearest 1 (1 when the interval includes it).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grokscope.analyse.onset import first_crossing, floor_and_ceiling, monotone_fit
from grokscope.analyse.resampling import bh_q, cluster_bootstrap_weights, percentile_interval


@dataclass
class AdjustedData:
    """Per pair: ``correct`` ``[n, T]`` bool, ``margin`` ``[n, T]`` (good - bad log-prob; None if not
    scored), ``seen`` ``[n, T]`` bool, ``covariates`` (``n`` rows), ``paradigm``/``cluster`` ``[n]``;
    ``tokens`` ``[T]``."""

    correct: np.ndarray
    margin: np.ndarray | None
    seen: np.ndarray
    covariates: pd.DataFrame
    paradigm: np.ndarray
    cluster: np.ndarray
    tokens: np.ndarray


@dataclass(frozen=True)
class AdjustedOptions:
    ci: float = 0.95
    min_pairs: int = 10
    min_clusters: int = 10
    floor_checkpoints: int = 3
    ceiling_share: float = 0.1
    n_boot: int = 200
    seed: int = 0
    max_window: int = 8  # at most this many checkpoints of the rise window (evenly spaced) enter the fit
    max_pairs: int = 20000  # larger groups are fitted on a seeded random subset of whole clusters


def e_value(rr: float) -> float:
    """VanderWeele-Ding E-value of a risk ratio (its inverse when below 1)."""
    if not np.isfinite(rr) or rr <= 0:
        return float("nan")
    rr = rr if rr >= 1 else 1.0 / rr
    return float(rr + np.sqrt(rr * (rr - 1.0)))


def e_values(log_or: float, lo: float, hi: float) -> tuple[float, float]:
    """E-values of the point estimate and of the interval bound nearest the null (odds ratios via
    RR = sqrt(OR))."""
    if not np.isfinite(log_or):
        return float("nan"), float("nan")
    point = e_value(float(np.exp(min(log_or, 700) / 2)))
    if lo <= 0 <= hi:
        return point, 1.0
    bound = lo if log_or > 0 else hi
    return point, e_value(float(np.exp(bound / 2)))


def rise_window(num: np.ndarray, den: np.ndarray, tokens: np.ndarray, opts: AdjustedOptions) -> np.ndarray:
    """Checkpoint indices of the rise window of a pooled curve (correct counts ``num``, pairs ``den`` ``[T]``)."""
    floor, ceil = floor_and_ceiling(num, den, tokens, opts.floor_checkpoints, opts.ceiling_share, opts.min_pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        fit = monotone_fit(num / den, den, opts.min_pairs)
    if not (np.isfinite(floor) and np.isfinite(ceil)):
        return np.zeros(0, np.int64)
    rise = ceil - floor
    with np.errstate(invalid="ignore"):
        inside = (fit >= floor + 0.1 * rise) & (fit <= ceil - 0.1 * rise)
    if inside.any() and rise > 0:
        idx = np.flatnonzero(inside)
        if idx.size > opts.max_window:
            idx = idx[np.unique(np.round(np.linspace(0, idx.size - 1, opts.max_window)).astype(np.int64))]
        return idx
    half = int(first_crossing(fit, 0.5 * (floor + ceil)))
    return np.array([half], np.int64) if half >= 0 else np.zeros(0, np.int64)


def design(seen: np.ndarray, covariates: np.ndarray, paradigm: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Design matrix of the stacked (pair, window checkpoint) rows, pair-major: ``[n W, p]`` with
    columns const, seen, checkpoint and paradigm dummies, the covariates and their interactions with
    the (centred, scaled) checkpoint position. ``seen`` ``[n, W]``, ``covariates`` ``[n, k]`` (standardised)."""
    n, W = seen.shape
    t_dum = np.eye(W)[:, 1:]  # [W, W-1]
    par = pd.factorize(pd.Series(paradigm).astype(str))[0]
    p_dum = np.eye(int(par.max()) + 1)[par][:, 1:] if n else np.zeros((0, 0))  # [n, P-1]
    cols = [np.ones(n * W), seen.reshape(-1).astype(np.float64), np.tile(t_dum, (n, 1)),
            np.repeat(p_dum, W, axis=0)]
    if covariates.shape[1]:
        x = np.repeat(covariates, W, axis=0)  # [nW, k]
        pos = np.tile((np.arange(W) - (W - 1) / 2) / max(W - 1, 1), n)[:, None]  # [nW, 1] in [-0.5, 0.5]
        cols += [x] + ([x * pos] if W > 1 else [])
    return independent_columns(np.column_stack(cols))


def independent_columns(X: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """``X`` without the columns that are linear combinations of earlier ones (pivoted QR keeps the
    first two, const and seen, whenever they are independent)."""
    from scipy.linalg import qr

    if X.shape[1] == 0:
        return X
    _, r, piv = qr(X, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int((d > tol * d.max()).sum())
    keep = np.sort(piv[:rank])
    if 1 not in keep:  # seen is collinear with the rest: no estimate
        return X[:, :0]
    return X[:, keep]


def standardised(cov: pd.DataFrame, knots: int = 4) -> np.ndarray:
    """Covariates centred and scaled, constant columns dropped; a covariate with more than ``2 knots``
    distinct values enters as a cubic B-spline basis with ``knots`` quantile knots (scikit-learn
    ``SplineTransformer``), one with 3 to ``2 knots`` values as indicators of its values, so its effect
    on ease need not be linear on the logit scale."""
    from sklearn.preprocessing import SplineTransformer

    parts = []
    for col in cov.columns:
        x = cov[col].to_numpy(dtype=np.float64)
        sd = x.std()
        if sd <= 1e-12:
            continue
        levels = np.unique(x)
        if knots > 1 and levels.size > 2 * knots:
            b = SplineTransformer(n_knots=knots, degree=3, knots="quantile").fit_transform(x[:, None])
            b = b[:, 1:]  # the basis sums to 1: drop one column (the constant is in the design)
            parts.append((b - b.mean(0)) / np.maximum(b.std(0), 1e-12))
        elif levels.size > 2:  # few distinct values: one indicator per value but the first
            parts.append((x[:, None] == levels[None, 1:]).astype(np.float64))
        else:
            parts.append(((x - x.mean()) / sd)[:, None])
    return np.column_stack(parts) if parts else np.zeros((len(cov), 0))


# the columns of the estimate that decides an adjusted row's verdict (effect, se, ci_low, ci_high, p)
BASIS_COLUMNS: dict[str, tuple[str, str, str, str, str]] = {
    "correctness": ("effect", "effect_se", "effect_ci_low", "effect_ci_high", "p_effect"),
    "margin": ("margin_effect", "margin_effect_se", "margin_ci_low", "margin_ci_high", "p_margin"),
}


def basis_columns(basis: object) -> tuple[str, str, str, str, str]:
    """:data:`BASIS_COLUMNS` of a row's ``basis`` (correctness unless it says "margin")."""
    return BASIS_COLUMNS["margin" if basis == "margin" else "correctness"]


MAX_LOG_OR = 15.0  # a binomial fit whose estimate or interval reaches past this is taken as separated


def separates(y: np.ndarray, seen: np.ndarray) -> bool:
    """Whether seen-it separates a 0/1 outcome: all seen rows, or all unseen rows, have one value
    (the log odds ratio of seen-it then has no finite maximum-likelihood estimate)."""
    return any(np.unique(y[rows]).size < 2 for rows in (seen, ~seen))


def model_based_se(res: object) -> float:
    """SE of column 1 (seen) from a fitted binomial model's own information (inverse Fisher information
    at the fitted means): a GEE result's ``cov_naive``, a GLM result's ``normalized_cov_params`` (scale 1)."""
    cov = getattr(res, "cov_naive", None)
    if cov is None:
        cov = res.normalized_cov_params  # type: ignore[attr-defined]
    var = float(np.asarray(cov)[1, 1])
    return float(np.sqrt(var)) if np.isfinite(var) and var > 0 else float("inf")


MAX_CLUSTER_ROWS = 4000  # the bias-reduced sandwich solves one system of this size per cluster


def fit_effect(y: np.ndarray, X: np.ndarray, groups: np.ndarray, family: str, ci: float,
               max_cluster_rows: int = MAX_CLUSTER_ROWS) -> tuple[float, ...]:
    """Coefficient of column 1 (seen) of a binomial or Gaussian regression with standard errors
    clustered by ``groups``: ``(estimate, se, p, ci_low, ci_high, se_kind)``, se_kind 1.0 for the
    bias-reduced sandwich, 0.0 for the CR1 fallback (all NaN when the fit fails).

    The fit is statsmodels' GEE with an independence working correlation -- the same estimate as the
    GLM -- with the Mancl-DeRouen bias-reduced sandwich (``cov_type="bias_reduced"``, each cluster's
    residuals divided by ``I - H_gg``) and a t reference with G - 1 degrees of freedom. The plain
    (CR1) sandwich is too small with tens of clusters and a design of tens of columns: in
    ``bench/calibrate_dynamics.py`` its 95% intervals covered a null effect in 86-90% of groups of 60
    clusters. When a cluster has more than ``max_cluster_rows`` rows (or ``I - H_gg`` is singular) the
    CR1 sandwich of the GLM is used instead, and ``se_kind`` says so."""
    import statsmodels.api as sm
    from scipy import stats

    nan6 = (float("nan"),) * 6
    if X.shape[1] < 2 or (family == "binomial" and separates(y, X[:, 1] != 0)):
        return nan6
    fam = sm.families.Binomial() if family == "binomial" else sm.families.Gaussian()
    codes, sizes = np.unique(groups, return_counts=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, kind = None, 0.0
            if sizes.max() <= max_cluster_rows:
                try:
                    res = sm.GEE(y, X, groups=groups, family=fam, cov_struct=sm.cov_struct.Independence()).fit(
                        cov_type="bias_reduced")
                    kind = 1.0
                except np.linalg.LinAlgError:
                    res = None
            if res is None or not np.isfinite(res.bse[1]):
                res = sm.GLM(y, X, family=fam).fit(cov_type="cluster", cov_kwds={"groups": groups})
                kind = 0.0
        est, se = float(res.params[1]), float(res.bse[1])
        if family == "binomial" and not res.converged:
            return nan6
        # under (quasi-)separation the information diverges while the sandwich can stay small (its scores
        # vanish at the boundary): the model-based SE says whether the data bound the log odds ratio
        bound_se = model_based_se(res) if family == "binomial" else 0.0
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError):
        return nan6
    if not (np.isfinite(se) and se > 0):
        return nan6
    df = max(codes.size - 1, 1)
    q = float(stats.t.ppf(0.5 + ci / 2, df))
    if family == "binomial" and abs(est) + q * max(se, bound_se) > MAX_LOG_OR:  # log odds not bounded by the data
        return nan6
    p = float(2 * stats.t.sf(abs(est / se), df))
    return est, se, p, est - q * se, est + q * se, kind


def rise_interval(correct: np.ndarray, cluster: np.ndarray, tokens: np.ndarray, opts: AdjustedOptions,
                  rng: np.random.Generator) -> tuple[float, float]:
    """Cluster-bootstrap interval of the pooled rise (ceiling - floor) of ``correct`` ``[n, T]``."""
    n = correct.shape[0]
    w = cluster_bootstrap_weights(np.zeros(n, np.int8), cluster, opts.n_boot, rng)  # [B, n]
    num = w @ correct.astype(np.float64)  # [B, T]
    den = np.repeat(w.sum(1)[:, None], correct.shape[1], axis=1)
    f, c = floor_and_ceiling(num, den, tokens, opts.floor_checkpoints, opts.ceiling_share, opts.min_pairs)
    lo, hi = percentile_interval(c - f, opts.ci)
    return float(lo), float(hi)


def cluster_subset(cluster: np.ndarray, idx: np.ndarray, max_pairs: int, seed: int) -> np.ndarray:
    """``idx`` itself, or for more than ``max_pairs`` pairs the pairs of a seeded random subset of
    whole clusters holding about ``max_pairs`` of them (a random subsample keeps the estimate unbiased;
    it only bounds the design matrix)."""
    if idx.size <= max_pairs:
        return idx
    codes = pd.factorize(pd.Series(np.asarray(cluster)[idx]).astype(str))[0]
    order = np.random.default_rng([seed, 99]).permutation(int(codes.max()) + 1)
    sizes = np.bincount(codes)[order]
    chosen = order[: int(np.searchsorted(np.cumsum(sizes), max_pairs)) + 1]
    return idx[np.isin(codes, chosen)]


def adjusted_row(data: AdjustedData, idx: np.ndarray, opts: AdjustedOptions, seed: int) -> dict[str, object]:
    """The adjusted comparison of the pairs ``idx`` (one group): effects, intervals, p, E-values, and
    the pre-FDR status (``finalise_verdicts`` sets the final one)."""
    idx = cluster_subset(data.cluster, idx, opts.max_pairs, seed)
    correct, seen, cl = data.correct[idx], data.seen[idx], data.cluster[idx]
    n, T = correct.shape
    num, den = correct.sum(0).astype(np.float64), np.full(T, float(n))
    window = rise_window(num, den, data.tokens, opts)
    rise_lo, rise_hi = rise_interval(correct, cl, data.tokens, opts, np.random.default_rng(seed))
    row: dict[str, object] = {"window_first_step_index": int(window[0]) if window.size else -1,
                              "window_checkpoints": int(window.size), "rise_ci_low": rise_lo, "rise_ci_high": rise_hi}
    nan6: tuple[float, ...] = (float("nan"),) * 6
    eff, eff_m = nan6, nan6
    sw = seen[:, window]
    n_cl_seen = len(set(cl[sw.any(1)])) if window.size else 0
    n_cl_unseen = len(set(cl[(~sw).any(1)])) if window.size else 0
    few = min(n_cl_seen, n_cl_unseen) < opts.min_clusters or min(sw.sum(0).max(initial=0),
                                                                    (~sw).sum(0).max(initial=0)) < opts.min_pairs
    if window.size and not few:
        X = design(sw, standardised(data.covariates.iloc[idx]), data.paradigm[idx], window)
        groups = np.repeat(pd.factorize(pd.Series(cl).astype(str))[0], window.size)
        eff = fit_effect(correct[:, window].reshape(-1).astype(np.float64), X, groups, "binomial", opts.ci)
        if data.margin is not None:
            eff_m = fit_effect(data.margin[idx][:, window].reshape(-1), X, groups, "gaussian", opts.ci)
    ev, ev_ci = e_values(eff[0], eff[3], eff[4])
    status = "not learned" if not (rise_lo > 0) else ("too few clusters" if few else "")
    basis = "correctness" if np.isfinite(eff[2]) else "margin" if np.isfinite(eff_m[2]) else ""
    row.update({"basis": basis, "effect": eff[0], "effect_se": eff[1], "p_effect": eff[2], "effect_ci_low": eff[3],
                "effect_ci_high": eff[4], "margin_effect": eff_m[0], "margin_effect_se": eff_m[1],
                "p_margin": eff_m[2], "margin_ci_low": eff_m[3], "margin_ci_high": eff_m[4],
                "se_bias_reduced": eff[5],
                "e_value": ev, "e_value_ci": ev_ci, "clusters_seen": n_cl_seen, "clusters_unseen": n_cl_unseen,
                "status": status})
    return row


def adjusted_rows(data: AdjustedData, groups: list[tuple[str, str, np.ndarray]], opts: AdjustedOptions,
                  progress: bool = False) -> pd.DataFrame:
    """One adjusted row per (level, group, pair indices)."""
    from tqdm.auto import tqdm

    rows = []
    for g, (level, name, idx) in enumerate(tqdm(groups, desc="adjusted", unit="group", disable=not progress)):
        r = adjusted_row(data, idx, opts, opts.seed * 7919 + g)
        rows.append({"level": level, "group": name, "comparison": "adjusted", "role": "headline", **r})
    return pd.DataFrame(rows)


def finalise_verdicts(timing: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Benjamini-Hochberg ``q`` over every row's p (``p_lead`` of descriptive comparisons, ``p_effect``
    of ``adjusted``), then the adjusted rows' status from q."""
    t = timing.copy()
    p = t["p_lead"].to_numpy(dtype=np.float64, copy=True) if "p_lead" in t else np.full(len(t), np.nan)
    deciding = [basis_columns(b) for b in (t["basis"] if "basis" in t else [None] * len(t))]
    adj = (t["comparison"] == "adjusted").to_numpy()
    for i in np.flatnonzero(adj):
        p[i] = t[deciding[i][4]].iat[i]
    t["q"] = bh_q(p)
    for i in np.flatnonzero(adj):
        if t["status"].iat[i]:
            continue
        q, e = t["q"].iat[i], t[deciding[i][0]].iat[i]
        t.iat[i, t.columns.get_loc("status")] = ("no estimate" if not np.isfinite(q) else
                                                 "delayed" if q < alpha and e > 0 else
                                                 "val leads" if q < alpha and e < 0 else "no delay")
    return t
