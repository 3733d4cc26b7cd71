"""Resampling for the dynamics statistics: the bootstrap by cluster (multiplicities per replicate,
within strata; a cluster = the pairs sharing a critical phrase), percentile intervals, the
permutation test that the train side leads the val side (clusters' exposure histories shuffled
within strata, a Numba kernel that serves every level of grouping with one set of shuffles) and
Benjamini-Hochberg q-values across groups and comparisons (statsmodels)."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from grokscope.analyse.splits import ratio, standardisation_weights, stratum_sizes, train_mask


def bootstrap_weights(strata: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 128) -> np.ndarray:
    """Multiplicities of a pair bootstrap, resampling within each stratum.

    Returns ``[n_boot, n]`` float32: how often each pair is drawn in each replicate (every
    row of a stratum of size m sums to m). Equivalent to drawing an index array
    ``[n_boot, m]`` with replacement per stratum and counting.
    """
    strata = np.asarray(strata)
    n = strata.shape[0]
    w = np.zeros((n_boot, n), dtype=np.float32)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        m = idx.size
        for lo in range(0, n_boot, chunk):
            hi = min(n_boot, lo + chunk)
            draws = rng.integers(0, m, size=(hi - lo, m))  # [b, m] resampled positions
            draws += (np.arange(hi - lo) * m)[:, None]
            counts = np.bincount(draws.ravel(), minlength=(hi - lo) * m).reshape(hi - lo, m)
            w[lo:hi, idx] = counts
    return w


def cluster_bootstrap_weights(strata: np.ndarray, clusters: np.ndarray | None, n_boot: int,
                              rng: np.random.Generator) -> np.ndarray:
    """Multiplicities ``[n_boot, n]`` of a bootstrap that resamples whole clusters within strata.

    Each stratum's m clusters are drawn m times with replacement; a pair's multiplicity is how
    often its cluster was drawn. ``clusters`` None: every pair is its own cluster (the pair
    bootstrap, :func:`bootstrap_weights`)."""
    strata = np.asarray(strata)
    if clusters is None:
        return bootstrap_weights(strata, n_boot, rng)
    key = pd.factorize(pd.Series(strata.astype(str)) + "\x00" + pd.Series(np.asarray(clusters).astype(str)))[0]
    u_key, first = np.unique(key, return_index=True)
    w_units = bootstrap_weights(strata[first], n_boot, rng)  # [B, U]
    return w_units[:, np.searchsorted(u_key, key)]


def bh_q(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (statsmodels ``multipletests(method="fdr_bh")``) of the finite
    entries of ``p``; NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def percentile_interval(values: np.ndarray, ci: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``values`` along ``axis``: the ``(1-ci)/2`` and
    ``(1+ci)/2`` empirical quantiles (inverted-CDF definition, no interpolation), NaNs ignored,
    +inf allowed. All-NaN positions give NaN."""
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    v = np.sort(v, axis=0)  # NaNs sort last
    m = (~np.isnan(v)).sum(axis=0)  # valid values per position
    alpha = (1.0 - ci) / 2.0

    def q(p: float) -> np.ndarray:
        k = np.clip(np.ceil(p * m - 1e-9).astype(np.int64) - 1, 0, None)
        k = np.minimum(k, np.maximum(m - 1, 0))
        out = np.take_along_axis(v, k[None], axis=0)[0]
        return np.where(m > 0, out, np.nan)

    return q(alpha), q(1.0 - alpha)


# ---------------------------------------------------------------------------------------
# permutation test: does train lead val?
# ---------------------------------------------------------------------------------------
def lead_statistic_table(correct: np.ndarray, entry: np.ndarray, strata: np.ndarray, min_pairs: int) -> np.ndarray:
    """``K[i, e']``: pair i's contribution to the lead statistic if its entry index were e'.

    The statistic is the mean over checkpoints (where both sides have >= min_pairs pairs) of
    (train accuracy - val accuracy), with accuracies directly standardised over ``strata``
    (:func:`standardisation_weights`; one stratum = plain accuracies). It is linear in the
    pairs: S = sum_i K[i, e_i]. Permuting entry indices within (sub)strata leaves every
    stratum's train/val sizes unchanged, so K is valid for every such permutation.
    Returns ``[n, T+1]`` float64.
    """
    n, T = correct.shape
    nb = int(strata.max()) + 1 if n else 1
    tr = train_mask(entry, T)
    n_tr = stratum_sizes(tr, strata, nb)  # [nb, T]
    n_va = stratum_sizes(1.0 - tr, strata, nb)
    pi = standardisation_weights(n_tr, n_va)
    both = (n_tr > 0) & (n_va > 0)
    tot_tr, tot_va = (n_tr * both).sum(0), (n_va * both).sum(0)
    if nb == 1:
        tot_tr, tot_va = n_tr[0], n_va[0]
    valid = (tot_tr >= min_pairs) & (tot_va >= min_pairs)  # [T]
    n_valid = max(int(valid.sum()), 1)
    in_train = np.arange(T + 1)[:, None] <= np.arange(T)[None, :]  # [T+1, T]: entry e' -> train at t?
    w_tr = np.nan_to_num(pi * ratio(np.ones_like(n_tr), n_tr))  # [nb, T]
    w_va = np.nan_to_num(pi * ratio(np.ones_like(n_va), n_va))
    table = np.where(in_train[None], w_tr[:, None, :], -w_va[:, None, :]) * (valid / n_valid)  # [nb, T+1, T]
    c = correct.astype(np.float64)
    k = np.empty((n, T + 1))
    for b in range(nb):
        idx = np.flatnonzero(strata == b)
        k[idx] = c[idx] @ table[b].T
    return k


def _permutation_sums(k, gid, entry, order, starts, n_groups, n_perm, seed):  # pragma: no cover - numba
    """Monte-Carlo permutation distribution of the lead statistic, for several levels at once.

    ``k`` ``[n, L, T+1]`` float32 (per pair and level, its contribution for every entry index),
    ``gid`` ``[n, L]`` the pair's group (row of the output) at each level, ``order`` pair indices grouped
    by permutation stratum with segment boundaries ``starts``. Each permutation shuffles the
    entry indices within every segment (Fisher-Yates, xorshift64* generator) and adds
    k[l, i, e_shuffled(i)] to out[gid[l, i], r]. Returns ``[n_groups, n_perm]``.
    """
    out = np.zeros((n_groups, n_perm))
    n = order.shape[0]
    e = np.empty(n, np.int64)
    for i in range(n):
        e[i] = entry[order[i]]
    x = np.uint64(seed) * np.uint64(2654435761) + np.uint64(88172645463325252)
    for s in range(starts.shape[0] - 1):  # segment-major: its rows of k stay in cache
        lo, hi = starts[s], starts[s + 1]
        for r in range(n_perm):
            for j in range(hi - 1, lo, -1):
                x ^= x >> np.uint64(12)
                x ^= x << np.uint64(25)
                x ^= x >> np.uint64(27)
                rnd = (x * np.uint64(2685821657736338717)) >> np.uint64(32)  # 32 random bits
                m = lo + np.int64((rnd * np.uint64(j - lo + 1)) >> np.uint64(32))  # uniform in [0, j-lo]
                tmp = e[j]
                e[j] = e[m]
                e[m] = tmp
            for j in range(lo, hi):
                i = order[j]
                for lev in range(k.shape[1]):
                    out[gid[i, lev], r] += k[i, lev, e[j]]
    return out


@functools.lru_cache(maxsize=1)
def _permutation_kernel():
    import numba

    return numba.njit(cache=True, nogil=True)(_permutation_sums)


def permutation_lead_tests(
    correct: np.ndarray, entry: np.ndarray, weight_strata: np.ndarray, perm_strata: np.ndarray,
    level_groups: list[list[np.ndarray]], min_pairs: int, n_perm: int, seed: int,
    clusters: np.ndarray | None = None,
) -> list[list[tuple[float, float, float]]]:
    """One-sided permutation tests that the train side leads the val side, for every group.

    Null hypothesis: within each ``perm_strata`` cell (paradigm, or paradigm x frequency bin),
    correctness does not depend on exposure. Entry indices are shuffled within those cells; the
    statistic of a group is its mean train - val accuracy gap over checkpoints (standardised
    over ``weight_strata``, see :func:`lead_statistic_table`). ``level_groups[l]`` partitions
    the pairs into the groups of level l; the same shuffles serve every level. ``clusters``: the
    test runs on *units* -- the pairs of one cluster (critical phrase) within one stratum with one
    entry index -- whose exposure histories move together; the statistic then averages the units'
    mean correctness (each unit counts once), so that it stays linear under the shuffles, and a
    checkpoint counts where both sides hold >= ``MIN_CLUSTERS`` units (None: single pairs).
    Returns ``[level][group] -> (statistic, p_lead, p_val_leads)`` with
    p = (1 + #{perm >= obs}) / (1 + n_perm).
    """
    if clusters is not None:
        return _cluster_lead_tests(correct, entry, weight_strata, perm_strata, level_groups, n_perm, seed, clusters)
    n, T = correct.shape
    entry = np.asarray(entry, dtype=np.int64)
    n_levels = len(level_groups)
    k = np.zeros((n, n_levels, T + 1), dtype=np.float32)  # float32: half the memory traffic
    gid = np.zeros((n, n_levels), dtype=np.int64)
    offsets, g0 = [], 0
    for lev, groups in enumerate(level_groups):
        offsets.append(g0)
        for g, idx in enumerate(groups):
            k[idx, lev] = lead_statistic_table(correct[idx], entry[idx], weight_strata[idx], min_pairs)
            gid[idx, lev] = g0 + g
        g0 += len(groups)
    rows = np.arange(n)
    observed = np.zeros(g0)
    for lev in range(n_levels):
        np.add.at(observed, gid[:, lev], k[rows, lev, entry].astype(np.float64))
    order = np.argsort(perm_strata, kind="stable").astype(np.int64)
    bounds = np.flatnonzero(np.diff(np.asarray(perm_strata)[order])) + 1
    starts = np.concatenate([[0], bounds, [n]]).astype(np.int64)
    perm = _permutation_kernel()(k, gid, entry, order, starts, g0, int(n_perm), int(seed))  # [groups, n_perm]
    tol = 1e-6 * np.maximum(1.0, np.abs(observed))[:, None]  # k is float32: ties must stay ties
    p_lead = (1 + (perm >= observed[:, None] - tol).sum(1)) / (1 + n_perm)
    p_val = (1 + (perm <= observed[:, None] + tol).sum(1)) / (1 + n_perm)
    return [[(float(observed[o + g]), float(p_lead[o + g]), float(p_val[o + g])) for g in range(len(groups))]
            for o, groups in zip(offsets, level_groups)]


MIN_CLUSTERS = 2


def _cluster_lead_tests(correct: np.ndarray, entry: np.ndarray, weight_strata: np.ndarray, perm_strata: np.ndarray,
                        level_groups: list[list[np.ndarray]], n_perm: int, seed: int, clusters: np.ndarray,
                        ) -> list[list[tuple[float, float, float]]]:
    """:func:`permutation_lead_tests` on cluster units (see there)."""
    cl = pd.factorize(pd.Series(np.asarray(clusters).astype(str)))[0]
    keys = np.stack([np.asarray(perm_strata, np.int64), np.asarray(weight_strata, np.int64), cl,
                     np.asarray(entry, np.int64)], axis=1)
    _, first, unit = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    unit = unit.reshape(-1)
    sizes = np.bincount(unit, minlength=first.size).astype(np.float64)
    u_correct = np.zeros((first.size, correct.shape[1]))
    np.add.at(u_correct, unit, correct.astype(np.float64))
    u_correct /= sizes[:, None]
    u_groups = [[np.unique(unit[idx]) for idx in groups] for groups in level_groups]
    return permutation_lead_tests(u_correct, np.asarray(entry)[first], np.asarray(weight_strata)[first],
                                  np.asarray(perm_strata)[first], u_groups, MIN_CLUSTERS, n_perm, seed)
