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

from grokscope.analyse.onset import (
    Onsets,
    Pooled,
    first_reach,
    halfrise_onsets,
    log10_delay,
    lost_index,
    onset_delays,
)
from grokscope.analyse.resampling import (
    bootstrap_weights,  # noqa: F401 - re-exported (tests, bench)
    cluster_bootstrap_weights,
    percentile_interval,
    permutation_lead_tests,
)
from grokscope.analyse.splits import (
    EXPOSURE_BINS,
    entry_index,
    exposure_bin_masks,
    quantile_strata,
    ratio,
    standardisation_weights,  # noqa: F401 - re-exported
    stratum_sizes,
    train_mask,
)

SPLITS = (
    "proxy_train", "proxy_val", "fixed_seen", "fixed_unseen",
    "bin_0", "bin_1", "bin_2-9", "bin_10-99", "bin_100+", "matched_train", "matched_val",
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

    ``mode``: ``halfrise`` (default) or ``paper`` (see :mod:`grokscope.analyse.onset`), ``level``
    (accuracy >= ``level``), ``fraction`` (accuracy >= ``fraction`` x the
    split's final accuracy) or ``both`` (both conditions). Checkpoints where the split has fewer
    than ``min_pairs`` pairs are undefined: they neither reach nor break the criterion.
    """

    mode: str = "halfrise"
    level: float = 0.8
    fraction: float = 0.9
    min_pairs: int = 10
    floor_checkpoints: int = 3
    ceiling_share: float = 0.1

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "level": self.level, "fraction": self.fraction, "min_pairs": self.min_pairs,
                "floor_checkpoints": self.floor_checkpoints, "ceiling_share": self.ceiling_share}


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
    if criterion.mode not in ("level", "fraction", "both"):  # halfrise/paper: grokscope.analyse.onset
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
# additive bootstrap sums per cell (one paradigm of one phenomenon)
# ---------------------------------------------------------------------------------------
@dataclass
class CellSums:
    """Bootstrap-weighted sums of one set of pairs; sums of disjoint sets add up.

    Shapes (B replicates, nb frequency strata, T checkpoints): ``tr_num``/``tr_den``/
    ``all_num`` ``[B, nb, T]`` (proxy-train correct / proxy-train pairs / all correct, per
    stratum), ``all_den`` ``[B, nb]``, ``seen_num`` ``[B, T]`` and ``seen_den`` ``[B]`` (seen by
    the final checkpoint), ``bin_num``/``bin_den`` ``[B, 4, T]`` (exposure bins 1, 2-9, 10-99,
    100+; bin 0 is the rest), ``matched`` ``[B, 6, T]``: the matched comparison's additive parts
    (sum of w_b acc_b for train and val, the sums of w_b where each is defined, and the pairs in
    strata holding both sides) with w_b(t) = observed train pairs of stratum b where both sides
    hold pairs. Strata are frequency bins *within a cell*, so adding cells standardises over
    paradigm x bin.
    """

    tr_num: np.ndarray
    tr_den: np.ndarray
    all_num: np.ndarray
    all_den: np.ndarray
    seen_num: np.ndarray
    seen_den: np.ndarray
    bin_num: np.ndarray
    bin_den: np.ndarray
    matched: np.ndarray  # [B, 6, T]: train/val standardised sums, their weights, their pairs

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
    matched = matched_sums(tr_num, tr_den, all_num, all_den, stratum_sizes(tr, strata, n_strata),
                           stratum_sizes(1.0 - tr, strata, n_strata))
    return CellSums(tr_num, tr_den, all_num, all_den, seen_num, seen_den, r[:, 0], r[:, 1], matched)


def matched_sums(tr_num: np.ndarray, tr_den: np.ndarray, all_num: np.ndarray, all_den: np.ndarray,
                 n_tr_obs: np.ndarray, n_va_obs: np.ndarray) -> np.ndarray:
    """The matched comparison's additive parts ``[B, 6, T]`` (see :class:`CellSums`) from one cell's
    per-stratum sums ``[B, nb, T]`` and its observed train/val sizes ``[nb, T]``."""
    w = np.where((n_tr_obs > 0) & (n_va_obs > 0), n_tr_obs, 0.0)[None]  # [1, nb, T]
    va_den = all_den[:, :, None] - tr_den
    acc_tr, acc_va = ratio(tr_num, tr_den), ratio(all_num - tr_num, va_den)
    parts = []
    for acc in (acc_tr, acc_va):
        avail = ~np.isnan(acc) & (w > 0)
        parts.append((np.where(avail, np.nan_to_num(acc) * w, 0.0).sum(1), np.where(avail, w, 0.0).sum(1)))
    n_tr, n_va = np.where(w > 0, tr_den, 0.0).sum(1), np.where(w > 0, va_den, 0.0).sum(1)
    return np.stack([parts[0][0], parts[1][0], parts[0][1], parts[1][1], n_tr, n_va], axis=1).astype(np.float64)


def split_curves(s: CellSums) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (accuracy [B, T], pairs [B, T])`` from summed :class:`CellSums`."""
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
    m = s.matched
    out["matched_train"] = (ratio(m[:, 0], m[:, 2]), m[:, 4])
    out["matched_val"] = (ratio(m[:, 1], m[:, 3]), m[:, 5])
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
    onset_boot: int = 200  # replicates used for halfrise onset intervals (isotonic fits are the cost)


@dataclass
class PairTable:
    """What the dynamics need per pair, aligned over checkpoints.

    ``steps`` ``[T]`` sorted, ``tokens`` ``[T]``, ``correct`` ``[n, T]`` bool, ``counts``
    ``[n, T]`` cumulative good-phrase count in window(t), ``match_value`` ``[n]`` (critical-word
    frequency or phrase length), ``uid``/``phenomenon`` ``[n]``, ``cluster`` ``[n]``: pairs sharing a
    critical phrase (bootstrap and permutations resample clusters, not pairs).
    """

    steps: np.ndarray
    tokens: np.ndarray
    correct: np.ndarray
    counts: np.ndarray
    match_value: np.ndarray
    uid: np.ndarray
    phenomenon: np.ndarray
    cluster: np.ndarray | None = None  # [n] critical-phrase cluster (None: every pair its own)


@dataclass
class DynamicsResult:
    curves: pd.DataFrame
    timing: pd.DataFrame


TIMING_INT_COLUMNS = ("fit_step", "gen_step", "fit_tokens", "gen_tokens", "delay_steps", "delay_tokens",
                      "lost_train_step", "lost_val_step")


def analyse_dynamics(table: PairTable, opts: DynamicsOptions,
                     levels: tuple[str, ...] = ("all", "phenomenon", "paradigm"),
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
        w = cluster_bootstrap_weights(seen[idx].astype(np.int8), None if table.cluster is None else table.cluster[idx],
                                      opts.n_boot, rng).astype(np.float32)
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
        "matched": (e_proxy, cell_of * nb + strata, cell_of * nb + strata),  # paradigm x bin
    }
    lead: dict[str, list[list[tuple[float, float, float]]]] = {}
    for j, (comp, (entry, w_strata, p_strata)) in enumerate(tests.items()):
        lead[comp] = permutation_lead_tests(table.correct, entry, w_strata, p_strata, level_groups,
                                            opts.criterion.min_pairs, opts.n_perm, seed=opts.seed * 7919 + j,
                                            clusters=table.cluster)

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
    obs = split_curves(s_obs)
    boot = split_curves(s_boot)
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
    T_ = s_obs.all_num.shape[-1]
    pooled = Pooled(s_obs.all_num[0].sum(0), np.repeat(s_obs.all_den[0].sum(), T_),
                    s_boot.all_num.sum(1), np.repeat(s_boot.all_den.sum(1)[:, None], T_, axis=1))
    rows = []
    for comp, (s_tr, s_va) in COMPARISON_SPLITS.items():
        i_tr, i_va = names.index(s_tr), names.index(s_va)
        sides = Sides(acc_obs[i_tr], acc_obs[i_va], n_obs[i_tr], n_obs[i_va], boot[s_tr][0], boot[s_va][0],
                      np.asarray(hi[i_tr], np.float64), np.asarray(hi[i_va], np.float64))
        rows.append(timing_row(level, group, comp, sides, pooled, steps, tokens, opts, lead[comp]))
    return DynamicsResult(curves, pd.DataFrame(rows))


@dataclass
class Sides:
    """The two sides of one comparison: observed accuracy and pairs ``[T]``, replicate curves
    ``[B, T]`` and the upper interval bounds ``[T]`` (for "lost")."""

    acc_tr: np.ndarray
    acc_va: np.ndarray
    n_tr: np.ndarray
    n_va: np.ndarray
    boot_tr: np.ndarray
    boot_va: np.ndarray
    hi_tr: np.ndarray
    hi_va: np.ndarray


def comparison_onsets(sd: Sides, pooled: Pooled, tokens: np.ndarray, opts: DynamicsOptions) -> Onsets:
    """Onsets of both sides under ``opts.criterion`` (any mode)."""
    crit = opts.criterion
    if crit.mode == "halfrise":
        return halfrise_onsets(sd.acc_tr, sd.n_tr, sd.acc_va, sd.n_va, sd.boot_tr, sd.boot_va, pooled, tokens,
                               crit.floor_checkpoints, crit.ceiling_share, crit.min_pairs, opts.ci, opts.onset_boot)
    if crit.mode == "paper":
        def onset(a: np.ndarray, n: np.ndarray) -> np.ndarray:
            return first_reach(a, n, crit.level, crit.min_pairs)
    else:
        def onset(a: np.ndarray, n: np.ndarray) -> np.ndarray:
            return onset_index(a, n, crit)
    return Onsets(int(onset(sd.acc_tr, sd.n_tr)), int(onset(sd.acc_va, sd.n_va)),
                  onset(sd.boot_tr, sd.n_tr[None, :]), onset(sd.boot_va, sd.n_va[None, :]), threshold=crit.level)


def timing_row(level: str, group: str, comp: str, sd: Sides, pooled: Pooled, steps: np.ndarray,
               tokens: np.ndarray, opts: DynamicsOptions, lead: tuple[float, float, float]) -> dict[str, object]:
    """One row of timing.parquet: onsets on the observed curves, the delay's bootstrap interval
    from the replicate curves, the lead test and the status."""
    crit = opts.criterion
    on = comparison_onsets(sd, pooled, tokens, opts)
    fit, gen = on.fit, on.gen
    d_b = onset_delays(steps, tokens, on.fit_b, on.gen_b)
    ci_lo, ci_hi = percentile_interval(d_b["steps"], opts.ci) if (~np.isnan(d_b["steps"])).any() else (np.nan, np.nan)
    lg_lo, lg_hi = (percentile_interval(d_b["log10_tokens"], opts.ci) if (~np.isnan(d_b["log10_tokens"])).any()
                    else (np.nan, np.nan))
    too_few = sd.n_tr.max(initial=0) < crit.min_pairs or sd.n_va.max(initial=0) < crit.min_pairs
    stat, p_lead, p_val = (np.nan, np.nan, np.nan) if too_few else lead
    alpha = 1.0 - opts.ci
    delay: int | None = int(steps[gen] - steps[fit]) if fit >= 0 and gen >= 0 else None
    thr = on.threshold if crit.mode in ("halfrise", "paper", "level") else np.nan
    lost_tr, lost_va = lost_index(fit, sd.hi_tr, thr), lost_index(gen, sd.hi_va, thr)
    if too_few:
        status = "too few pairs"
    elif crit.mode == "halfrise" and on.not_learned:
        status = "not learned"
    elif crit.mode == "paper" and gen < 0:
        status = "dropped"
    elif fit < 0 and gen >= 0:
        status = "val leads"
    elif fit < 0 or gen < 0:
        status = "not reached"
    elif lost_tr >= 0 or lost_va >= 0:
        status = "lost"
    elif delay is not None and delay > 0 and p_lead < alpha and ci_lo > 0:
        status = "delayed"
    elif delay is not None and delay < 0 and p_val < alpha and ci_hi < 0:
        status = "val leads"
    else:
        status = "no delay"
    return {
        "level": level, "group": group, "comparison": comp, "role": "descriptive",
        "fit_step": int(steps[fit]) if fit >= 0 else None,
        "gen_step": int(steps[gen]) if gen >= 0 else None,
        "fit_tokens": int(tokens[fit]) if fit >= 0 else None,
        "gen_tokens": int(tokens[gen]) if gen >= 0 else None,
        "delay_steps": delay,
        "delay_tokens": int(tokens[gen] - tokens[fit]) if delay is not None else None,
        "delay_ci_low": float(ci_lo), "delay_ci_high": float(ci_hi),
        "delay_log10_tokens": log10_delay(tokens, fit, gen),
        "delay_log10_ci_low": float(lg_lo), "delay_log10_ci_high": float(lg_hi),
        "p_lead": float(p_lead), "status": status, "n_train": int(sd.n_tr[-1]), "n_val": int(sd.n_va[-1]),
        "lead_statistic": float(stat), "threshold": float(on.threshold), "floor": on.floor, "ceiling": on.ceiling,
        "rise_ci_low": on.rise_ci[0], "rise_ci_high": on.rise_ci[1],
        "lost_train_step": int(steps[lost_tr]) if lost_tr >= 0 else None,
        "lost_val_step": int(steps[lost_va]) if lost_va >= 0 else None,
    }
