"""Onsets: the half-rise rule against hand-worked isotonic fits, the paper rule, "lost"."""
from __future__ import annotations

import numpy as np
import pytest

from grokscope.analyse import dynamics as dy
from grokscope.analyse import onset as on


def test_isotonic_fit_hand_worked_pava():
    # pool-adjacent-violators by hand: (0.7, 0.6) -> weighted mean, (0.9, 0.8) -> 0.85
    acc = np.array([0.5, 0.7, 0.6, 0.9, 0.8, 0.95])
    n = np.array([10, 10, 30, 10, 10, 10])
    fit = on.monotone_fit(acc, n, min_pairs=1)
    np.testing.assert_allclose(fit, [0.5, 0.625, 0.625, 0.85, 0.85, 0.95])
    assert on.first_crossing(fit, 0.75) == 3
    assert on.first_crossing(fit, 0.6) == 1
    assert on.first_crossing(fit, 0.99) == -1
    # a checkpoint with too few pairs is left out (NaN) and cannot be the crossing
    n2 = np.array([10, 10, 30, 2, 10, 10])
    fit2 = on.monotone_fit(acc, n2, min_pairs=5)
    assert np.isnan(fit2[3])
    np.testing.assert_allclose(fit2[[0, 1, 2, 4, 5]], [0.5, 0.625, 0.625, 0.8, 0.95])
    assert on.first_crossing(fit2, 0.75) == 4


def test_floor_ceiling_and_ceiling_window_hand_worked():
    tokens = np.array([0, 10, 100, 1000, 10_000, 100_000, 1_000_000])
    # log10 range 1..6; last 10% = log10 >= 5.5 -> only 1e6
    np.testing.assert_array_equal(on.ceiling_mask(tokens, 0.1), [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(on.ceiling_mask(tokens, 0.25), [0, 0, 0, 0, 0, 1, 1])
    num = np.array([5, 6, 5, 7, 8, 9, 9.5]) * 10
    den = np.full(7, 100.0)
    floor, ceil = on.floor_and_ceiling(num, den, tokens, 2, 0.25, 10)
    assert floor == pytest.approx(0.55)  # (50 + 60) / 200
    assert ceil == pytest.approx(0.925)  # (90 + 95) / 200


def test_paper_rule_first_reach_without_stay():
    acc = np.array([0.5, 0.85, 0.7, 0.82])
    assert on.first_reach(acc, np.full(4, 50), 0.8, 10) == 1
    assert on.first_reach(acc, np.array([50, 5, 50, 50]), 0.8, 10) == 3
    assert on.first_reach(acc, np.full(4, 50), 0.9, 10) == -1


def test_lost_index():
    hi = np.array([0.5, 0.9, 0.6, 0.9, 0.6, 0.65, 0.9])
    assert on.lost_index(1, hi, 0.7) == 4  # index 2 alone is one noisy checkpoint, 4-5 is a run
    assert on.lost_index(4, hi, 0.7) == -1
    assert on.lost_index(1, hi, 0.7, run=1) == 2
    assert on.lost_index(-1, hi, 0.7) == -1


def _table(rng, fit_idx, delay_idx, n=600, T=30, p_lo=0.5, p_hi=0.95, lose_at=None, tokens=None):
    steps = np.arange(T) * 100
    first = np.where(rng.random(n) < 0.6, rng.integers(0, T, size=n), T + 1)
    counts = np.where(np.arange(T)[None] >= first[:, None], 1, 0)
    t = np.arange(T)[None]
    learned = ((t >= fit_idx) & (counts >= 1)) | (t >= fit_idx + delay_idx)
    if lose_at is not None:
        learned &= t < lose_at
    correct = rng.random((n, T)) < np.where(learned, p_hi, p_lo)
    return dy.PairTable(steps=steps, tokens=steps * 1000 if tokens is None else tokens, correct=correct,
                        counts=counts, match_value=np.ones(n), uid=np.array(["u"] * n, dtype=object),
                        phenomenon=np.array(["ph"] * n, dtype=object))


def test_halfrise_recovers_a_planted_delay_at_small_accuracy_gain():
    """A small model: accuracy rises only from 0.5 to 0.65 -- never 0.8 -- and the half-rise
    onsets still recover fit and generalisation within one checkpoint."""
    rng = np.random.default_rng(1)
    t = _table(rng, 8, 6, n=3000, p_hi=0.65)
    res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=200, n_perm=200), levels=("all",))
    row = res.timing.set_index("comparison").loc["proxy"]
    assert abs(int(np.searchsorted(t.steps, row["fit_step"])) - 8) <= 1
    assert abs(int(np.searchsorted(t.steps, row["gen_step"])) - 14) <= 1
    assert row["status"] == "delayed"
    assert row["threshold"] == pytest.approx(0.575, abs=0.02)
    assert row["delay_log10_tokens"] == pytest.approx(np.log10(row["gen_tokens"] / row["fit_tokens"]))
    old = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=50, n_perm=50, criterion=dy.Criterion("level")),
                              levels=("all",)).timing.set_index("comparison").loc["proxy"]
    assert old["status"] == "not reached"
    paper = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=50, n_perm=50, criterion=dy.Criterion("paper")),
                                levels=("all",)).timing.set_index("comparison").loc["proxy"]
    assert paper["status"] == "dropped"


def test_not_learned_when_nothing_rises():
    rng = np.random.default_rng(2)
    t = _table(rng, 40, 0, n=400)  # fit index beyond the run: nothing is learned
    res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=200, n_perm=50), levels=("all",))
    row = res.timing.set_index("comparison").loc["proxy"]
    assert row["status"] == "not learned"
    assert row["rise_ci_low"] <= 0 <= row["rise_ci_high"]


def test_learn_then_lose_is_marked_lost_with_its_step():
    rng = np.random.default_rng(3)
    t = _table(rng, 5, 0, n=800, T=30, lose_at=25)
    t.tokens[:] = np.arange(30) * 1000  # ceiling over the last 10% of log tokens: the final checkpoints
    res = dy.analyse_dynamics(t, dy.DynamicsOptions(n_boot=200, n_perm=50,
                                                    criterion=dy.Criterion(ceiling_share=0.4)), levels=("all",))
    row = res.timing.set_index("comparison").loc["proxy"]
    assert row["status"] == "lost"
    assert row["lost_train_step"] == 2500 or row["lost_val_step"] == 2500
