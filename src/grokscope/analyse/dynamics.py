"""Learning dynamics: proxy splits, accuracy curves with bootstrap intervals, fit and
generalisation steps, the delay between them, a permutation test of "train leads val", and
the frequency-matched confound control.

Everything here is pure NumPy on in-memory arrays so tests can call it directly;
:mod:`grokscope.analyse.stage` reads the study files and writes the tables.

Notation (shapes named in comments):

* ``n`` pairs, ``T`` checkpoints (sorted steps), ``B`` bootstrap replicates.
* ``correct`` ``[n, T]`` bool: the pair is scored correctly at checkpoint t.
* A *comparison* (proxy / fixed / matched) is described per pair by an **entry index**
  ``e`` in ``0..T`` -- the pair is in the train side at checkpoint index ``t`` iff ``e <= t``
  (``T`` = never) -- and a **stratum** ``b`` (frequency bin for the matched comparison, 0
  otherwise). Proxy splits are monotone in t (exposure counts only grow), so this covers them.
* Pairs fall into *cells* (phenomenon x paradigm). Bootstrap sums are computed once per cell
  (:class:`CellSums`) and added up for phenomena and "all"; permutations shuffle exposure
  within cells and one set of shuffles serves every level. Definitions: docs/analysis.md.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

SPLITS = (
    "proxy_train", "proxy_val", "fixed_seen", "fixed_unseen",
    "bin_0", "bin_1", "bin_2-9", "bin_10-99", "bin_100+", "matched_train", "matched_val",
)
EXPOSURE_BINS: tuple[tuple[str, int, float], ...] = (
    ("bin_0", 0, 0), ("bin_1", 1, 1), ("bin_2-9", 2, 9), ("bin_10-99", 10, 99), ("bin_100+", 100, np.inf),
)
COMPARISONS = ("proxy", "fixed", "matched")
COMPARISON_SPLITS = {
    "proxy": ("proxy_train", "proxy_val"),
    "fixed": ("fixed_seen", "fixed_unseen"),
    "matched": ("matched_train", "matched_val"),
}


# ---------------------------------------------------------------------------------------
# criterion and onset detection
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """When a split counts as having "reached" its accuracy.

    ``mode``: ``level`` (accuracy >= ``level``), ``fraction`` (accuracy >= ``fraction`` x the
    split's final accuracy) or ``both`` (both conditions). Checkpoints where the split has fewer
    than ``min_pairs`` pairs are undefined: they neither reach nor break the criterion.
    """

    mode: str = "level"
    level: float = 0.8
    fraction: float = 0.9
    min_pairs: int = 10

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "level": self.level, "fraction": self.fraction, "min_pairs": self.min_pairs}


def onset_index(acc: np.ndarray, n: np.ndarray | None, criterion: Criterion) -> np.ndarray:
    """First checkpoint index where ``acc`` reaches the criterion and stays there.

    ``acc`` ``[..., T]`` (NaN = undefined), ``n`` ``[..., T]`` pairs behind each value (or
    None: all defined). Returns ``[...]`` int, -1 where never reached. "Stays there" means
    every later *defined* checkpoint also meets the criterion.
    """
    acc = np.asarray(acc, dtype=np.float64)
    defined = ~np.isnan(acc)
    if n is not None:
        defined &= np.asarray(n) >= criterion.min_pairs
    if criterion.mode not in ("level", "fraction", "both"):
        raise ValueError(f"unknown criterion mode {criterion.mode!r}")
    threshold = np.zeros(acc.shape[:-1])
    if criterion.mode in ("level", "both"):
        threshold = np.maximum(threshold, criterion.level)
    if criterion.mode in ("fraction", "both"):
        final = last_defined(acc, defined)
        threshold = np.maximum(threshold, criterion.fraction * final)  # NaN final -> NaN -> never
    with np.errstate(invalid="ignore"):
        meets = defined & (acc >= threshold[..., None] - 1e-12)
    ok = meets | ~defined
    stays = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)  # [..., T]
    hit = stays & meets
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), first, -1)


def last_defined(acc: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """The last defined value along the last axis (NaN if none). ``[..., T] -> [...]``."""
    T = acc.shape[-1]
    idx = T - 1 - np.argmax(np.flip(defined, -1), axis=-1)
    val = np.take_along_axis(acc, idx[..., None], axis=-1)[..., 0]
    return np.where(defined.any(axis=-1), val, np.nan)


# ---------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------
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


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


# ---------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------
def entry_index(counts: np.ndarray, k: int) -> np.ndarray:
    """``[n, T]`` cumulative counts -> ``[n]`` first checkpoint index with count >= k (T = never)."""
    reached = np.asarray(counts) >= k
    T = reached.shape[1]
    return np.where(reached.any(axis=1), np.argmax(reached, axis=1), T)


def train_mask(entry: np.ndarray, T: int) -> np.ndarray:
    """``[n]`` entry indices -> ``[n, T]`` float32 membership of the train side."""
    return (np.asarray(entry)[:, None] <= np.arange(T)[None, :]).astype(np.float32)


def exposure_bin_masks(counts: np.ndarray) -> list[np.ndarray]:
    """``[n, T]`` counts in window(t) -> one ``[n, T]`` float32 mask per exposure bin."""
    return [((counts >= lo) & (counts <= hi)).astype(np.float32) for _, lo, hi in EXPOSURE_BINS]


def quantile_strata(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``values`` into at most ``n_bins`` quantile bins (ties never straddle a bin edge)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    return np.searchsorted(edges[1:-1], values, side="right").astype(np.int64)


def stratum_sizes(mask: np.ndarray, strata: np.ndarray, n_strata: int) -> np.ndarray:
    """``[n, T]`` 0/1 mask, ``[n]`` strata -> ``[n_strata, T]`` column sums per stratum."""
    out = np.zeros((n_strata, mask.shape[1]))
    for b in range(n_strata):
        out[b] = mask[strata == b].sum(axis=0)
    return out


def standardisation_weights(n_tr: np.ndarray, n_va: np.ndarray) -> np.ndarray:
    """Direct standardisation: ``[nb, T]`` train/val sizes per stratum -> pi_b(t), the train
    distribution over the strata that hold both sides at t (0 elsewhere; columns sum to 1 or 0)."""
    both = (n_tr > 0) & (n_va > 0)
    pi = np.where(both, n_tr, 0.0)
    return np.nan_to_num(ratio(pi, pi.sum(axis=0, keepdims=True)))


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
) -> list[list[tuple[float, float, float]]]:
    """One-sided permutation tests that the train side leads the val side, for every group.

    Null hypothesis: within each ``perm_strata`` cell (paradigm, or paradigm x frequency bin),
    correctness does not depend on exposure. Entry indices are shuffled within those cells; the
    statistic of a group is its mean train - val accuracy gap over checkpoints (standardised
    over ``weight_strata``, see :func:`lead_statistic_table`). ``level_groups[l]`` partitions
    the pairs into the groups of level l; the same shuffles serve every level.
    Returns ``[level][group] -> (statistic, p_lead, p_val_leads)`` with
    p = (1 + #{perm >= obs}) / (1 + n_perm).
    """
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
    tol = 1e-9 * np.maximum(1.0, np.abs(observed))[:, None]
    p_lead = (1 + (perm >= observed[:, None] - tol).sum(1)) / (1 + n_perm)
    p_val = (1 + (perm <= observed[:, None] + tol).sum(1)) / (1 + n_perm)
    return [[(float(observed[o + g]), float(p_lead[o + g]), float(p_val[o + g])) for g in range(len(groups))]
            for o, groups in zip(offsets, level_groups)]


# ---------------------------------------------------------------------------------------
# additive bootstrap sums per cell (one paradigm of one phenomenon)
# ---------------------------------------------------------------------------------------
@dataclass
class CellSums:
    """Bootstrap-weighted sums of one set of pairs; sums of disjoint sets add up.

    Shapes (B replicates, nb frequency strata, T checkpoints): ``tr_num``/``tr_den``/
    ``all_num`` ``[B, nb, T]`` (proxy-train correct / proxy-train pairs / all correct, per
    stratum), ``all_den`` ``[B, nb]``, ``seen_num`` ``[B, T]`` and ``seen_den`` ``[B]`` (seen by
    the final checkpoint), ``bin_num``/``bin_den`` ``[B, 4, T]`` (exposure bins 1, 2-9, 10-99,
    100+; bin 0 is the rest).
    """

    tr_num: np.ndarray
    tr_den: np.ndarray
    all_num: np.ndarray
    all_den: np.ndarray
    seen_num: np.ndarray
    seen_den: np.ndarray
    bin_num: np.ndarray
    bin_den: np.ndarray

    def __add__(self, other: CellSums) -> CellSums:
        return CellSums(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def cell_sums(weights: np.ndarray, correct: np.ndarray, entry: np.ndarray, seen: np.ndarray,
              strata: np.ndarray, counts: np.ndarray, n_strata: int) -> CellSums:
    """:class:`CellSums` of pairs with bootstrap multiplicities ``weights`` ``[B, n]``."""
    B = weights.shape[0]
    n, T = correct.shape
    c = correct.astype(np.float32)
    tr = train_mask(entry, T)
    tr_num = np.zeros((B, n_strata, T), np.float32)
    tr_den = np.zeros_like(tr_num)
    all_num = np.zeros_like(tr_num)
    all_den = np.zeros((B, n_strata), np.float32)
    for b in range(n_strata):
        idx = np.flatnonzero(strata == b)
        if idx.size == 0:
            continue
        x = np.concatenate([c[idx] * tr[idx], tr[idx], c[idx]], axis=1)  # [n_b, 3T]
        w = weights[:, idx]
        r = (w @ x).reshape(B, 3, T)
        tr_num[:, b], tr_den[:, b], all_num[:, b] = r[:, 0], r[:, 1], r[:, 2]
        all_den[:, b] = w.sum(axis=1)
    seen_idx = np.flatnonzero(seen)
    seen_num = weights[:, seen_idx] @ c[seen_idx]
    seen_den = weights[:, seen_idx].sum(axis=1)
    masks = exposure_bin_masks(counts)[1:]
    x = np.concatenate([m * c for m in masks] + masks, axis=1)  # [n, 8T]
    r = (weights @ x).reshape(B, 2, len(masks), T)
    return CellSums(tr_num, tr_den, all_num, all_den, seen_num, seen_den, r[:, 0], r[:, 1])


def split_curves(s: CellSums, pi: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (accuracy [B, T], pairs [B, T])`` from summed :class:`CellSums`; ``pi``
    ``[nb, T]`` are the matched comparison's standardisation weights (from the observed data)."""
    T = s.tr_num.shape[-1]
    all_num, all_den = s.all_num.sum(1), np.repeat(s.all_den.sum(1)[:, None], T, axis=1)
    tr_num, tr_den = s.tr_num.sum(1), s.tr_den.sum(1)
    seen_den = np.repeat(s.seen_den[:, None], T, axis=1)
    out = {
        "proxy_train": (tr_num, tr_den), "proxy_val": (all_num - tr_num, all_den - tr_den),
        "fixed_seen": (s.seen_num, seen_den), "fixed_unseen": (all_num - s.seen_num, all_den - seen_den),
        "bin_0": (all_num - s.bin_num.sum(1), all_den - s.bin_den.sum(1)),
    }
    for j, (name, _, _) in enumerate(EXPOSURE_BINS[1:]):
        out[name] = (s.bin_num[:, j], s.bin_den[:, j])
    acc_tr = ratio(s.tr_num, s.tr_den)  # [B, nb, T]
    acc_va = ratio(s.all_num - s.tr_num, s.all_den[:, :, None] - s.tr_den)
    for name, acc, den in (("matched_train", acc_tr, s.tr_den),
                           ("matched_val", acc_va, s.all_den[:, :, None] - s.tr_den)):
        avail = ~np.isnan(acc) & (pi[None] > 0)
        num = np.where(avail, np.nan_to_num(acc) * pi[None], 0.0).sum(1)
        wsum = np.where(avail, pi[None], 0.0).sum(1)
        out[name] = (ratio(num, wsum), np.where(pi[None] > 0, den, 0.0).sum(1))
    return {k: (v[0] if k.startswith("matched") else ratio(*v), v[1]) for k, v in out.items()}


# ---------------------------------------------------------------------------------------
# the whole study
# ---------------------------------------------------------------------------------------
@dataclass
class DynamicsOptions:
    min_count: int = 1
    criterion: Criterion = field(default_factory=Criterion)
    n_boot: int = 1000
    n_perm: int = 1000
    ci: float = 0.95
    match_bins: int = 5
    seed: int = 0


@dataclass
class PairTable:
    """What the dynamics need per pair, aligned over checkpoints.

    ``steps`` ``[T]`` sorted, ``tokens`` ``[T]``, ``correct`` ``[n, T]`` bool, ``counts``
    ``[n, T]`` cumulative good-phrase count in window(t), ``match_value`` ``[n]`` (critical-word
    frequency or phrase length), ``uid``/``phenomenon`` ``[n]``.
    """

    steps: np.ndarray
    tokens: np.ndarray
    correct: np.ndarray
    counts: np.ndarray
    match_value: np.ndarray
    uid: np.ndarray
    phenomenon: np.ndarray


@dataclass
class DynamicsResult:
    curves: pd.DataFrame
    timing: pd.DataFrame


TIMING_INT_COLUMNS = ("fit_step", "gen_step", "fit_tokens", "gen_tokens", "delay_steps", "delay_tokens")


def analyse_dynamics(table: PairTable, opts: DynamicsOptions, levels: tuple[str, ...] = ("all", "phenomenon", "paradigm"),
                     progress: bool = False) -> DynamicsResult:
    """Curves (every split) and timing (every comparison) for every level and group.

    Pairs are partitioned into cells (phenomenon x paradigm). Bootstrap replicates resample
    pairs within each cell and side of the fixed split (so within each split, as far as
    splits are fixed); sums per cell are computed once and added up for phenomena and "all".
    """
    from tqdm.auto import tqdm

    n, T = table.correct.shape
    strata = quantile_strata(np.log1p(np.asarray(table.match_value, dtype=np.float64)), opts.match_bins)
    nb = int(strata.max()) + 1 if n else 1
    e_proxy = entry_index(table.counts, opts.min_count)
    seen = table.counts[:, -1] >= 1
    e_fixed = np.where(seen, 0, T)
    phen = np.asarray(table.phenomenon, dtype=object)
    uid = np.asarray(table.uid, dtype=object)
    cell_of, cells = pd.factorize(pd.Series(phen.astype(str)) + "\x00" + pd.Series(uid.astype(str)))
    cell_idx = [np.flatnonzero(cell_of == c) for c in range(len(cells))]

    boot, obs = [], []
    for c, idx in enumerate(tqdm(cell_idx, desc="bootstrap", unit="cell", disable=not progress)):
        rng = np.random.default_rng([opts.seed, 1, c])
        w = bootstrap_weights(seen[idx].astype(np.int8), opts.n_boot, rng)
        args = (table.correct[idx], e_proxy[idx], seen[idx], strata[idx], table.counts[idx], nb)
        boot.append(cell_sums(w, *args))
        obs.append(cell_sums(np.ones((1, idx.size), np.float32), *args))

    groups: list[tuple[str, str, list[int]]] = []
    if "all" in levels:
        groups.append(("all", "all", list(range(len(cells)))))
    for level, labels in (("phenomenon", phen), ("paradigm", uid)):
        if level in levels:
            cell_label = [labels[i[0]] for i in cell_idx]
            for name in pd.unique(np.asarray(cell_label, dtype=object)):
                groups.append((level, str(name), [c for c, lab in enumerate(cell_label) if lab == name]))

    # permutation tests: one set of shuffles per comparison serves every level
    group_idx = [np.concatenate([cell_idx[c] for c in cs]) for _, _, cs in groups]
    level_names = list(dict.fromkeys(level for level, _, _ in groups))
    level_groups = [[group_idx[g] for g, (lv, _, _) in enumerate(groups) if lv == level] for level in level_names]
    position = {}
    for lev, level in enumerate(level_names):
        for j, g in enumerate([g for g, (lv, _, _) in enumerate(groups) if lv == level]):
            position[g] = (lev, j)
    cell_of = cell_of.astype(np.int64)
    tests = {
        "proxy": (e_proxy, np.zeros(n, np.int64), cell_of),
        "fixed": (e_fixed, np.zeros(n, np.int64), cell_of),
        "matched": (e_proxy, strata, cell_of * nb + strata),
    }
    lead: dict[str, list[list[tuple[float, float, float]]]] = {}
    for j, (comp, (entry, w_strata, p_strata)) in enumerate(tests.items()):
        lead[comp] = permutation_lead_tests(table.correct, entry, w_strata, p_strata, level_groups,
                                            opts.criterion.min_pairs, opts.n_perm, seed=opts.seed * 7919 + j)

    curves, timing = [], []
    for g, (level, name, cs) in enumerate(tqdm(groups, desc="dynamics", unit="group", disable=not progress)):
        s_boot = functools.reduce(lambda a, b: a + b, (boot[c] for c in cs))
        s_obs = functools.reduce(lambda a, b: a + b, (obs[c] for c in cs))
        lev, j = position[g]
        res = _group_result(level, name, s_obs, s_boot, table.steps, table.tokens, opts,
                            {comp: lead[comp][lev][j] for comp in COMPARISONS})
        curves.append(res.curves)
        timing.append(res.timing)
    timing_df = pd.concat(timing, ignore_index=True)
    for col in TIMING_INT_COLUMNS:
        timing_df[col] = timing_df[col].astype("Int64")
    return DynamicsResult(pd.concat(curves, ignore_index=True), timing_df)


def _group_result(level: str, group: str, s_obs: CellSums, s_boot: CellSums, steps: np.ndarray,
                  tokens: np.ndarray, opts: DynamicsOptions, lead: dict[str, tuple[float, float, float]]
                  ) -> DynamicsResult:
    tr_den = s_obs.tr_den[0]  # [nb, T]
    va_den = s_obs.all_den[0][:, None] - tr_den
    pi = standardisation_weights(tr_den, va_den)
    obs = split_curves(s_obs, pi)
    boot = split_curves(s_boot, pi)
    names = list(SPLITS)
    acc_obs = np.stack([obs[s][0][0] for s in names])  # [S, T]
    n_obs = np.stack([obs[s][1][0] for s in names]).round().astype(np.int64)
    lo, hi = percentile_interval(np.stack([boot[s][0] for s in names], axis=1), opts.ci, axis=0)  # [S, T]
    S, T = acc_obs.shape
    curves = pd.DataFrame({
        "level": level, "group": group, "split": np.repeat(np.array(names, dtype=object), T),
        "step": np.tile(steps, S).astype(np.int64), "tokens": np.tile(tokens, S).astype(np.int64),
        "n": n_obs.ravel(), "accuracy": acc_obs.ravel(),
        "ci_low": np.asarray(lo, np.float64).ravel(), "ci_high": np.asarray(hi, np.float64).ravel(),
    })
    rows = []
    for comp, (s_tr, s_va) in COMPARISON_SPLITS.items():
        i_tr, i_va = names.index(s_tr), names.index(s_va)
        rows.append(timing_row(level, group, comp, acc_obs[i_tr], acc_obs[i_va], n_obs[i_tr], n_obs[i_va],
                               boot[s_tr][0], boot[s_va][0], steps, tokens, opts, lead[comp]))
    return DynamicsResult(curves, pd.DataFrame(rows))


def timing_row(level: str, group: str, comp: str, acc_tr: np.ndarray, acc_va: np.ndarray, n_tr: np.ndarray,
               n_va: np.ndarray, boot_tr: np.ndarray, boot_va: np.ndarray, steps: np.ndarray, tokens: np.ndarray,
               opts: DynamicsOptions, lead: tuple[float, float, float]) -> dict[str, object]:
    """One row of timing.parquet: onsets on the observed curves, the delay's bootstrap interval
    from the replicate curves (``[B, T]``), the lead test and the status."""
    crit = opts.criterion
    fit = int(onset_index(acc_tr, n_tr, crit))
    gen = int(onset_index(acc_va, n_va, crit))
    fit_b = onset_index(boot_tr, n_tr[None, :], crit)  # [B]
    gen_b = onset_index(boot_va, n_va[None, :], crit)
    d_b = np.where(fit_b < 0, np.nan, np.where(gen_b < 0, np.inf, (steps[gen_b] - steps[fit_b]).astype(float)))
    ci_lo, ci_hi = percentile_interval(d_b, opts.ci) if (~np.isnan(d_b)).any() else (np.nan, np.nan)
    too_few = n_tr.max(initial=0) < crit.min_pairs or n_va.max(initial=0) < crit.min_pairs
    stat, p_lead, p_val = (np.nan, np.nan, np.nan) if too_few else lead
    alpha = 1.0 - opts.ci
    delay = int(steps[gen] - steps[fit]) if fit >= 0 and gen >= 0 else None
    if too_few:
        status = "too few pairs"
    elif fit < 0 and gen >= 0:
        status = "val leads"
    elif fit < 0 or gen < 0:
        status = "not reached"
    elif delay > 0 and p_lead < alpha and ci_lo > 0:
        status = "delayed"
    elif delay < 0 and p_val < alpha and ci_hi < 0:
        status = "val leads"
    else:
        status = "no delay"
    return {
        "level": level, "group": group, "comparison": comp,
        "fit_step": int(steps[fit]) if fit >= 0 else None,
        "gen_step": int(steps[gen]) if gen >= 0 else None,
        "fit_tokens": int(tokens[fit]) if fit >= 0 else None,
        "gen_tokens": int(tokens[gen]) if gen >= 0 else None,
        "delay_steps": delay,
        "delay_tokens": int(tokens[gen] - tokens[fit]) if delay is not None else None,
        "delay_ci_low": float(ci_lo), "delay_ci_high": float(ci_hi),
        "p_lead": float(p_lead), "status": status, "n_train": int(n_tr[-1]), "n_val": int(n_va[-1]),
        "lead_statistic": float(stat),
    }
