"""Dynamics statistics against hand-worked examples and brute-force computations."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from grokscope.analyse import dynamics as dy
from grokscope.analyse.dynamics import Criterion
from grokscope.analyse.resampling import lead_statistic_table


# ---- onset detection ---------------------------------------------------------------------
def test_onset_hand_worked():
    acc = np.array([0.5, 0.85, 0.7, 0.82, 0.9, 0.95])
    assert dy.onset_index(acc, None, Criterion("level", 0.8)) == 3  # 0.85 at 1 does not stay
    assert dy.onset_index(acc, None, Criterion("fraction", fraction=0.9)) == 4  # 0.9 * 0.95 = 0.855
    assert dy.onset_index(acc, None, Criterion("both", 0.8, 0.9)) == 4
    assert dy.onset_index(acc, None, Criterion("level", 0.96)) == -1
    # a checkpoint with too few pairs is undefined: it neither reaches nor breaks the criterion
    n = np.array([100, 100, 100, 3, 100, 100])
    assert dy.onset_index(acc, n, Criterion("level", 0.8, min_pairs=10)) == 4
    acc2 = np.array([0.5, 0.9, 0.2, 0.9])
    n2 = np.array([50, 50, 2, 50])
    assert dy.onset_index(acc2, n2, Criterion("level", 0.8, min_pairs=10)) == 1
    # NaN final value with the fraction criterion: the last *defined* value is used
    acc3 = np.array([0.5, 0.9, 1.0, np.nan])
    assert dy.onset_index(acc3, None, Criterion("fraction", fraction=0.9)) == 1


def test_onset_planted_steps_vectorised():
    rng = np.random.default_rng(0)
    T, m = 40, 500
    planted = rng.integers(0, T, size=m)
    t = np.arange(T)
    acc = np.where(t[None, :] >= planted[:, None], 0.95, 0.5) + rng.uniform(-0.05, 0.05, (m, T))
    got = dy.onset_index(acc, None, Criterion("level", 0.8))
    np.testing.assert_array_equal(got, planted)
    got_f = dy.onset_index(acc, None, Criterion("fraction", fraction=0.9))
    np.testing.assert_array_equal(got_f, planted)


# ---- bootstrap ---------------------------------------------------------------------------
def test_bootstrap_weights_are_stratified_multinomial_counts():
    rng = np.random.default_rng(1)
    strata = np.array([0] * 30 + [1] * 70)
    w = dy.bootstrap_weights(strata, 4000, rng)
    assert w.shape == (4000, 100)
    np.testing.assert_array_equal(w[:, :30].sum(1), 30)
    np.testing.assert_array_equal(w[:, 30:].sum(1), 70)
    # multinomial(m, 1/m): mean 1, variance 1 - 1/m
    assert abs(w.mean() - 1) < 0.01
    assert abs(w[:, 30:].var(axis=0).mean() - (1 - 1 / 70)) < 0.03
    assert abs(w[:, :30].var(axis=0).mean() - (1 - 1 / 30)) < 0.03


def test_percentile_interval_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(999, 6))
    x[::3, 2] = np.nan
    x[:, 4] = np.nan
    x[7, 1] = np.inf
    lo, hi = dy.percentile_interval(x, 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(lo, np.nanquantile(x, 0.05, axis=0, method="inverted_cdf"))
        np.testing.assert_array_equal(hi, np.nanquantile(x, 0.95, axis=0, method="inverted_cdf"))


def test_bootstrap_interval_covers_true_accuracy_at_nominal_rate():
    """400 simulated data sets of 300 pairs with true accuracy 0.7: the 95% percentile
    interval from the pair bootstrap must cover 0.7 in about 95% of them."""
    rng = np.random.default_rng(3)
    n_sets, n, p = 400, 300, 0.7
    covered = 0
    for _ in range(n_sets):
        x = (rng.random(n) < p).astype(np.float32)
        w = dy.bootstrap_weights(np.zeros(n, np.int8), 500, rng)
        acc = (w @ x) / n
        lo, hi = dy.percentile_interval(acc, 0.95)
        covered += lo <= p <= hi
    rate = covered / n_sets
    assert 0.92 <= rate <= 0.98, rate  # binomial SE at 400 sets ~ 0.011


# ---- splits and curves against brute force ------------------------------------------------
def _random_table(rng, n=240, T=12, n_cells=3):
    steps = np.arange(T) * 10
    first = rng.integers(0, T + 3, size=n)  # >= T: never
    inc = rng.poisson(rng.choice([0.3, 3.0, 40.0], size=n)[:, None], size=(n, T))
    counts = np.where(np.arange(T)[None] >= first[:, None], 1 + np.cumsum(inc, axis=1), 0)
    correct = rng.random((n, T)) < np.linspace(0.4, 0.9, T)[None]
    return dy.PairTable(
        steps=steps, tokens=steps * 100, correct=correct, counts=counts,
        match_value=rng.integers(1, 1000, size=n).astype(float),
        uid=np.array([f"u{i % n_cells}" for i in range(n)], dtype=object),
        phenomenon=np.array(["ph"] * n, dtype=object),
    )


def _brute_force_curves(t: dy.PairTable, k: int, n_bins: int, min_pairs: int):
    n, T = t.correct.shape
    strata = dy.quantile_strata(np.log1p(t.match_value), n_bins)
    out = {}
    for j in range(T):
        c, cnt = t.correct[:, j], t.counts[:, j]
        masks = {
            "proxy_train": cnt >= k, "proxy_val": cnt < k,
            "fixed_seen": t.counts[:, -1] >= 1, "fixed_unseen": t.counts[:, -1] == 0,
            "bin_0": cnt == 0, "bin_1": cnt == 1, "bin_2-9": (cnt >= 2) & (cnt <= 9),
            "bin_10-99": (cnt >= 10) & (cnt <= 99), "bin_100+": cnt >= 100,
        }
        for s, m in masks.items():
            out[(s, j)] = (c[m].mean() if m.any() else np.nan, int(m.sum()))
        # matched: direct standardisation over paradigm x frequency-bin strata holding both sides
        tr = cnt >= k
        cell = np.array([f"{u}|{b}" for u, b in zip(t.uid, strata)])
        both = [b for b in np.unique(cell) if (tr & (cell == b)).any() and (~tr & (cell == b)).any()]
        sizes = np.array([(tr & (cell == b)).sum() for b in both], dtype=float)
        if both:
            pi = sizes / sizes.sum()
            out[("matched_train", j)] = (sum(p * c[tr & (cell == b)].mean() for p, b in zip(pi, both)),
                                         int(sum((tr & (cell == b)).sum() for b in both)))
            out[("matched_val", j)] = (sum(p * c[~tr & (cell == b)].mean() for p, b in zip(pi, both)),
                                       int(sum((~tr & (cell == b)).sum() for b in both)))
        else:
            out[("matched_train", j)] = (np.nan, 0)
            out[("matched_val", j)] = (np.nan, 0)
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_curves_match_brute_force(k):
    rng = np.random.default_rng(4 + k)
    t = _random_table(rng)
    opts = dy.DynamicsOptions(min_count=k, n_boot=50, n_perm=50, match_bins=4)
    res = dy.analyse_dynamics(t, opts, levels=("all",))
    bf = _brute_force_curves(t, k, 4, opts.criterion.min_pairs)
    cur = res.curves
    assert set(cur["split"]) == set(dy.SPLITS)
    for (split, j), (acc, n) in bf.items():
        row = cur[(cur["split"] == split) & (cur["step"] == t.steps[j])].iloc[0]
        assert row["n"] == n, (split, j)
        if np.isnan(acc):
            assert np.isnan(row["accuracy"])
        else:
            assert row["accuracy"] == pytest.approx(acc, abs=1e-6), (split, j)
            assert row["ci_low"] <= row["accuracy"] + 1e-9 <= row["ci_high"] + 2e-9 or row["n"] < 5


def test_levels_add_up():
    """Paradigm groups partition the phenomenon group: n adds up; accuracies are n-weighted."""
    rng = np.random.default_rng(9)
    t = _random_table(rng, n=300, n_cells=3)
    res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=20, n_perm=20))
    cur = res.curves[res.curves["split"] == "proxy_train"]
    par = cur[cur["level"] == "paradigm"]
    allr = cur[cur["level"] == "all"].set_index("step")
    agg = par.assign(c=par["accuracy"].fillna(0) * par["n"]).groupby("step")[["c", "n"]].sum()
    np.testing.assert_array_equal(agg["n"].to_numpy(), allr["n"].to_numpy())
    ok = allr["n"] > 0
    np.testing.assert_allclose((agg["c"] / agg["n"])[ok], allr["accuracy"][ok], atol=1e-6)


# ---- permutation test --------------------------------------------------------------------
def _brute_lead_statistic(correct, entry, min_pairs):
    n, T = correct.shape
    gaps = []
    for j in range(T):
        tr = entry <= j
        if tr.sum() >= min_pairs and (~tr).sum() >= min_pairs:
            gaps.append(correct[tr, j].mean() - correct[~tr, j].mean())
    return np.mean(gaps) if gaps else 0.0


def test_lead_statistic_is_mean_accuracy_gap():
    rng = np.random.default_rng(5)
    correct = rng.random((60, 9)) < 0.6
    entry = rng.integers(0, 10, size=60)
    k = lead_statistic_table(correct, entry, np.zeros(60, np.int64), min_pairs=5)
    assert k[np.arange(60), entry].sum() == pytest.approx(_brute_lead_statistic(correct, entry, 5))


def test_permutation_p_value_matches_exhaustive_enumeration():
    """Two cells of 4 pairs: all 4! x 4! within-cell permutations enumerated by brute force."""
    rng = np.random.default_rng(6)
    n, T = 8, 5
    correct = rng.random((n, T)) < 0.5
    correct[:4, 2:] = True  # some structure so p is not trivially 1
    entry = np.array([0, 1, 5, 5, 2, 5, 0, 3])
    cells = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    obs = _brute_lead_statistic(correct, entry, 1)
    stats = []
    for p0 in itertools.permutations(range(4)):
        for p1 in itertools.permutations(range(4, 8)):
            e = entry[list(p0) + list(p1)]
            stats.append(_brute_lead_statistic(correct, e, 1))
    stats = np.array(stats)
    exact = (stats >= obs - 1e-12).mean()
    (res,) = dy.permutation_lead_tests(correct, entry, np.zeros(n, np.int64), cells, [[np.arange(n)]],
                                       min_pairs=1, n_perm=20000, seed=1)
    stat, p_lead, _ = res[0]
    assert stat == pytest.approx(obs, abs=1e-6)
    assert p_lead == pytest.approx(exact, abs=0.015)


def test_permutation_test_false_positive_rate_at_stated_level():
    """Under the null (correctness independent of exposure), p_lead < 0.05 in ~5% of data sets."""
    rng = np.random.default_rng(7)
    n, T, sets = 200, 15, 300
    rejections = 0
    for s in range(sets):
        correct = rng.random((n, T)) < np.linspace(0.5, 0.9, T)[None]
        entry = rng.integers(0, T + 5, size=n).clip(max=T)
        cells = np.repeat(np.arange(2), n // 2)
        (res,) = dy.permutation_lead_tests(correct, entry, np.zeros(n, np.int64), cells, [[np.arange(n)]],
                                           min_pairs=10, n_perm=199, seed=s)
        rejections += res[0][1] < 0.05
    rate = rejections / sets
    assert rate <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / sets), rate
    assert rate >= 0.01, rate  # the test is not degenerate


# ---- planted delay -------------------------------------------------------------------------
def _planted_table(rng, delay_idx: int, fit_idx: int = 8, n: int = 600, T: int = 30, p_lo=0.5, p_hi=0.95):
    steps = np.arange(T) * 100
    first = np.where(rng.random(n) < 0.6, rng.integers(0, T, size=n), T + 1)
    counts = np.where(np.arange(T)[None] >= first[:, None], 1, 0)
    seen = counts >= 1
    t = np.arange(T)[None]
    learned = ((t >= fit_idx) & seen) | (t >= fit_idx + delay_idx)
    correct = rng.random((n, T)) < np.where(learned, p_hi, p_lo)
    return dy.PairTable(steps=steps, tokens=steps * 1000, correct=correct, counts=counts,
                        match_value=np.ones(n), uid=np.array(["u"] * n, dtype=object),
                        phenomenon=np.array(["ph"] * n, dtype=object))


@pytest.mark.parametrize("delay_idx", [0, 3, 7])
def test_planted_delay_recovered_within_one_checkpoint(delay_idx):
    rng = np.random.default_rng(10 + delay_idx)
    t = _planted_table(rng, delay_idx)
    res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=200, n_perm=300), levels=("all",))
    row = res.timing[res.timing["comparison"] == "proxy"].iloc[0]
    fit_idx = int(np.searchsorted(t.steps, row["fit_step"]))
    gen_idx = int(np.searchsorted(t.steps, row["gen_step"]))
    assert abs(fit_idx - 8) <= 1
    assert abs((gen_idx - fit_idx) - delay_idx) <= 1
    if delay_idx == 0:
        assert row["status"] == "no delay"
    else:
        assert row["status"] == "delayed"
        assert row["p_lead"] < 0.05
        assert row["delay_ci_low"] <= row["delay_steps"] <= row["delay_ci_high"]
        assert row["delay_tokens"] == row["delay_steps"] * 1000


@pytest.mark.slow
def test_no_delay_reported_where_none_planted_full_pipeline():
    """Status "delayed" on null data (delay 0) in at most ~alpha of simulated studies."""
    delayed = 0
    sets = 100
    for s in range(sets):
        rng = np.random.default_rng(1000 + s)
        t = _planted_table(rng, 0, n=300)
        res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=100, n_perm=199, seed=s), levels=("all",))
        delayed += (res.timing["status"] == "delayed").iloc[0]
    assert delayed / sets <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / sets)


def test_quantile_strata_and_entry_index():
    np.testing.assert_array_equal(dy.quantile_strata(np.array([1, 1, 1, 2, 3, 4, 5, 6]), 2), [0, 0, 0, 0, 1, 1, 1, 1])
    counts = np.array([[0, 1, 2, 5], [0, 0, 0, 0], [3, 3, 3, 3]])
    np.testing.assert_array_equal(dy.entry_index(counts, 1), [1, 4, 0])
    np.testing.assert_array_equal(dy.entry_index(counts, 3), [3, 4, 0])
    np.testing.assert_array_equal(dy.train_mask(np.array([1, 4, 0]), 4),
                                  [[0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])


def test_timing_table_columns_and_types():
    rng = np.random.default_rng(11)
    res = dy.analyse_dynamics(_random_table(rng), dy.DynamicsOptions(n_boot=20, n_perm=20))
    cols = ["level", "group", "comparison", "fit_step", "gen_step", "fit_tokens", "gen_tokens", "delay_steps",
            "delay_tokens", "delay_ci_low", "delay_ci_high", "p_lead", "status", "n_train", "n_val"]
    assert all(c in res.timing.columns for c in cols)
    for c in dy.TIMING_INT_COLUMNS:
        assert str(res.timing[c].dtype) == "Int64"
    assert set(res.timing["status"]) <= {"delayed", "no delay", "not reached", "val leads", "too few pairs"}
    assert list(res.curves.columns) == ["level", "group", "split", "step", "tokens", "n", "accuracy", "ci_low", "ci_high"]
    assert isinstance(res.curves, pd.DataFrame)
