"""Support of the good vs the bad form, dose-response, informative splits and k sensitivity:
numbers checked against hand-worked examples and a direct recomputation, on planted data."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from grokscope.analyse import dynamics as dy
from grokscope.analyse import support as sp
from grokscope.analyse.sensitivity import k_sensitivity
from grokscope.analyse.simulate import SimPhenomenon, simulate_study
from grokscope.analyse.stage import analyse_study
from grokscope.core import store
from grokscope.core.config import AnalyseSection

FAST = dict(n_boot=100, n_perm=100, probes=False, heads=False, ablation=False)


def test_support_share_and_classes_by_hand():
    good = np.array([[0, 3], [2, 2], [0, 0], [1, 1]])
    bad = np.array([[0, 1], [0, 0], [4, 4], [1, 3]])
    share = sp.support_share(good, bad)
    np.testing.assert_allclose(share, [[np.nan, 0.75], [1.0, 1.0], [0.0, 0.0], [0.5, 0.25]])
    np.testing.assert_array_equal(sp.support_classes(good, bad, 1), [[3, 2], [0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(sp.support_classes(good, bad, 2), [[3, 0], [0, 0], [1, 1], [3, 1]])
    long = sp.support_table(np.array(["u"] * 4, object), np.arange(4), np.array([10, 20]), good, bad)
    assert list(long.columns) == ["uid", "pair_id", "step", "good_count", "bad_count", "support_share"]
    assert long.loc[(long.pair_id == 3) & (long.step == 20), "support_share"].item() == 0.25


def test_support_splits_and_wilson_intervals():
    rng = np.random.default_rng(0)
    n, steps = 400, np.array([1, 2, 3])
    good = np.cumsum(rng.poisson(0.4, (n, 3)), axis=1)
    bad = np.cumsum(rng.poisson(0.3, (n, 3)), axis=1)
    correct = rng.random((n, 3)) < 0.3 + 0.6 * (good > 0)  # planted: the good form's support helps
    df = sp.support_splits(correct, good, bad, steps, min_count=1, ci=0.9)
    assert set(df["split"]) == set(sp.SUPPORT_SPLITS) and df.groupby("step")["n"].sum().eq(n).all()
    for r in df.itertuples():
        j = list(steps).index(r.step)
        g, b = good[:, j] >= 1, bad[:, j] >= 1
        mask = {"good_only": g & ~b, "bad_only": ~g & b, "both": g & b, "neither": ~g & ~b}[r.split]
        assert r.n == mask.sum() and r.correct == correct[mask, j].sum()
        if r.n:
            ci = binomtest(int(r.correct), int(r.n)).proportion_ci(0.9, method="wilson")
            assert r.ci_lo == pytest.approx(ci.low) and r.ci_hi == pytest.approx(ci.high)
    last = df[df.step == 3].set_index("split")["accuracy"]
    assert last["good_only"] > last["bad_only"] + 0.4 and last["both"] > last["neither"] + 0.4


def test_dose_response_bins_by_hand():
    good = np.array([[0], [1], [2], [3], [4], [9], [0], [5]])
    bad = np.array([[0], [1], [0], [1], [0], [1], [3], [5]])
    correct = np.array([[0], [1], [1], [0], [1], [1], [0], [1]], dtype=bool)
    df = sp.dose_response(correct, good, bad, np.array([7]))
    gc = df[df.axis == "good_count"].set_index("bin")
    assert list(gc.index) == ["0", "1", "2-3", "4-7", "8-15"]
    assert list(gc["n"]) == [2, 1, 2, 2, 1] and list(gc["correct"]) == [0, 1, 1, 2, 1]
    ss = df[df.axis == "support_share"].set_index("bin")
    # shares: nan, .5, 1, .75, 1, .9, 0, .5 -> bins 0-.2: 1, .4-.6: 2, .6-.8: 1, .8-1: 3 (1.0 in the last)
    assert list(ss["n"]) == [1, 0, 2, 1, 3] and ss["n"].sum() == 7
    assert ss.loc["0.8-1.0", "correct"] == 3 and np.isnan(ss.loc["0.2-0.4", "accuracy"])


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("support") / "study"
    return simulate_study(root, phenomena=[SimPhenomenon("agreement", 2000, 8000), SimPhenomenon("island", 4000, 0)],
                          paradigms_per_phenomenon=2, n_pairs_per_paradigm=200, hidden_pairs=50, n_layer=3, n_head=4,
                          d_model=8, seed=3)


def test_uninformative_paradigms_left_out_and_named(sim):
    phrases = pd.read_parquet(sim.study.phrases_path)
    distinct = phrases.groupby("uid")["critical_phrase"].nunique()
    cut = int(distinct.sort_values().iloc[1]) + 1  # the two paradigms with the fewest phrases fall below
    summary = analyse_study(sim.study, AnalyseSection(**FAST, min_distinct_phrases=cut), force=True)
    info = pd.read_parquet(sim.study.analysis_dir / "paradigms.parquet").set_index("uid")
    assert (info["distinct_phrases"] == distinct.loc[info.index]).all()
    left = set(distinct[distinct < cut].index)
    assert set(info.index[~info["informative"]]) == left and len(left) >= 2
    exposure = pd.read_parquet(sim.study.exposure_path)
    last = int(sim.steps[-1])
    seen = (exposure[f"good_count_{last}"] >= 1).groupby(exposure["uid"]).mean()
    np.testing.assert_allclose(info["seen_last"], seen.loc[info.index])
    assert all(u in summary for u in left) and "left out of the verdicts" in summary
    timing = pd.read_parquet(sim.study.analysis_dir / "timing.parquet")
    assert not set(timing.loc[timing.level == "paradigm", "group"]) & left
    meta = store.read_parquet_metadata(sim.study.analysis_dir / "timing.parquet")
    assert meta["n_pairs"] == int((~phrases["uid"].isin(left)).sum())
    kept = analyse_study(sim.study, AnalyseSection(**FAST, min_distinct_phrases=cut, keep_uninformative=True),
                         force=True)
    assert "kept in the verdicts" in kept
    assert left <= set(pd.read_parquet(sim.study.analysis_dir / "timing.parquet")["group"])


def test_k_sensitivity_equals_separate_runs(sim):
    analyse_study(sim.study, AnalyseSection(**FAST, min_distinct_phrases=0, sensitivity_min_counts=[1, 3]),
                  force=True)
    ks = pd.read_parquet(sim.study.analysis_dir / "k_sensitivity.parquet")
    assert sorted(set(ks["min_count"])) == [1, 3]
    exposure = pd.read_parquet(sim.study.exposure_path)
    from grokscope.analyse.stage import load_inputs, window_counts

    inputs = load_inputs(sim.study)
    table = dy.PairTable(inputs.steps, inputs.tokens, inputs.correct,
                         window_counts(exposure, inputs.steps, sim.study.exposure_path),
                         np.ones(len(exposure)), inputs.phrases["uid"].to_numpy(object),
                         inputs.phrases["phenomenon"].to_numpy(object))
    opts = dy.DynamicsOptions(n_boot=100, n_perm=100)
    direct = dy.analyse_dynamics(table, dataclasses.replace(opts, min_count=3), levels=("all", "phenomenon")).timing
    got = ks[(ks.min_count == 3) & (ks.comparison == "proxy")].set_index(["level", "group"])
    want = direct[direct.comparison == "proxy"].set_index(["level", "group"])
    for key in got.index:
        assert got.loc[key, "fit_step"] == want.loc[key, "fit_step"]
        assert got.loc[key, "gen_step"] == want.loc[key, "gen_step"]
    again = k_sensitivity(table, opts, [3])
    assert list(again.loc[again.comparison == "proxy", "gen_step"]) == list(got["gen_step"])
