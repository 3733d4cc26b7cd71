"""The ``withheld`` comparison on planted ground truth: kept phrases learned at one checkpoint,
withheld ones later (delay and effect found, intervals cover them), no difference when none is
planted, and the analyse stage adds the tables when the stream records a withheld set."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokscope.analyse.dynamics import Criterion
from grokscope.analyse.simulate import SimPhenomenon, simulate_study
from grokscope.analyse.stage import analyse_study
from grokscope.analyse.withheld import compare_group, withheld_arms, withheld_comparison
from grokscope.core import store
from grokscope.core.config import AnalyseSection

STEPS = np.array([0, 10, 20, 40, 80, 160, 320, 640])
CRIT = Criterion("level", 0.8, 0.9, 10)


def planted(rng, n_phrases: int, kept_at: int, held_at: int, pairs_per_phrase: int = 4):
    """Pairs in phrase clusters; half the phrases withheld. A pair is right with p 0.97 from its
    arm's onset index on, 0.5 before; a phrase adds a shared shift (pairs of a phrase are alike)."""
    cluster = np.repeat(np.arange(n_phrases), pairs_per_phrase)
    held_phrase = rng.permutation(n_phrases) < n_phrases // 2
    held = held_phrase[cluster]
    onset = np.where(held, held_at, kept_at)
    p = np.where(np.arange(STEPS.size)[None, :] >= onset[:, None], 0.97, 0.5)
    p = np.clip(p + rng.normal(0, 0.02, n_phrases)[cluster][:, None], 0, 1)
    return rng.random(p.shape) < p, held, cluster, p


def test_planted_delay_and_effect_are_found():
    rng = np.random.default_rng(0)
    correct, held, cluster, p = planted(rng, 200, 2, 5)
    row, curves = compare_group(correct, held, cluster, STEPS, CRIT, 300, 0.95, rng)
    assert (row["kept_onset_step"], row["withheld_onset_step"]) == (STEPS[2], STEPS[5])
    assert row["delay_steps"] == STEPS[5] - STEPS[2]
    assert row["delay_ci_low"] <= STEPS[5] - STEPS[2] <= row["delay_ci_high"]
    truth = np.mean(p[~held].mean(0) - p[held].mean(0))  # the planted effect of exposure
    assert row["effect_ci_low"] <= truth <= row["effect_ci_high"]
    # point estimates by hand
    acc_k = correct[~held].mean(0)
    acc_h = correct[held].mean(0)
    assert row["effect"] == pytest.approx(np.mean(acc_k - acc_h))
    got = curves.pivot(index="step", columns="arm", values="accuracy")
    assert np.allclose(got["kept"], acc_k) and np.allclose(got["withheld"], acc_h)
    assert (row["n_kept"], row["n_withheld"], row["phrases_withheld"]) == ((~held).sum(), held.sum(), 100)


def test_halfrise_and_paper_onsets_of_the_arms():
    """The study's default rule: one threshold half-way between the pooled floor (first 3 checkpoints)
    and ceiling (last 10% of log tokens), crossed by each arm's isotonic fit; worked by hand on a
    noise-free group whose arms rise from 0.5 to 0.9 at indices 2 and 5."""
    n_ph, m = 20, 5
    cluster = np.repeat(np.arange(n_ph), m)
    held = (np.arange(n_ph) % 2 == 1)[cluster]
    onset = np.where(held, 5, 2)
    rise = np.arange(STEPS.size)[None, :] >= onset[:, None]
    # right on a fixed 90% of the pairs after the onset, half of them before (exactly, per arm)
    idx = np.zeros(held.size, dtype=np.int64)
    for arm in (held, ~held):
        idx[arm] = np.arange(arm.sum()) % 10
    idx = idx[:, None]
    correct = np.where(rise, idx < 9, idx < 5)
    acc_all = correct.mean(0)
    floor = acc_all[:3].mean()
    tok = STEPS.astype(float)
    lt = np.log10(tok[tok > 0])
    last = (tok > 0) & (np.log10(np.maximum(tok, 1)) >= lt.max() - 0.1 * (lt.max() - lt.min()) - 1e-12)
    threshold = 0.5 * (floor + acc_all[last].mean())
    kept = correct[~held].mean(0)
    assert kept[1] < threshold <= kept[2]  # the hand-worked threshold separates the plateaus
    crit = Criterion("halfrise", min_pairs=10)
    row, _ = compare_group(correct, held, cluster, STEPS, crit, 0, 0.95, np.random.default_rng(0))
    assert (row["kept_onset_step"], row["withheld_onset_step"]) == (STEPS[2], STEPS[5])
    paper = Criterion("paper", level=0.85, min_pairs=10)
    row, _ = compare_group(correct, held, cluster, STEPS, paper, 0, 0.95, np.random.default_rng(0))
    assert (row["kept_onset_step"], row["withheld_onset_step"]) == (STEPS[2], STEPS[5])
    never = Criterion("paper", level=0.95, min_pairs=10)
    row, _ = compare_group(correct, held, cluster, STEPS, never, 0, 0.95, np.random.default_rng(0))
    assert row["kept_onset_step"] is None and np.isnan(row["delay_steps"])


def test_no_planted_difference_gives_no_delay():
    rng = np.random.default_rng(1)
    correct, held, cluster, _ = planted(rng, 200, 3, 3)
    row, _ = compare_group(correct, held, cluster, STEPS, CRIT, 300, 0.95, rng)
    assert row["delay_steps"] == 0 and row["delay_ci_low"] <= 0 <= row["delay_ci_high"]
    assert row["effect_ci_low"] <= 0 <= row["effect_ci_high"]


def test_cluster_bootstrap_is_wider_than_the_pair_bootstrap_when_phrases_cluster():
    """Phrase-level shifts make pairs of a phrase alike: resampling phrases must see it."""
    rng = np.random.default_rng(2)
    n_ph, m = 60, 10
    cluster = np.repeat(np.arange(n_ph), m)
    held = (np.arange(n_ph) % 2 == 1)[cluster]
    p = np.clip(0.5 + rng.normal(0, 0.25, n_ph)[cluster], 0.02, 0.98)[:, None].repeat(STEPS.size, 1)
    correct = rng.random(p.shape) < p
    by_phrase, _ = compare_group(correct, held, cluster, STEPS, CRIT, 400, 0.95, np.random.default_rng(3))
    by_pair, _ = compare_group(correct, held, np.arange(held.size), STEPS, CRIT, 400, 0.95, np.random.default_rng(3))
    w_phrase = by_phrase["effect_ci_high"] - by_phrase["effect_ci_low"]
    w_pair = by_pair["effect_ci_high"] - by_pair["effect_ci_low"]
    assert w_phrase > 1.8 * w_pair


def test_groups_and_arms_from_the_stream(tmp_path):
    rng = np.random.default_rng(4)
    correct, held, cluster, _ = planted(rng, 40, 1, 4)
    uid = np.where(cluster % 2 == 0, "a", "b")
    arms = held.astype(float)
    arms[:3] = np.nan  # not in the coin's table: left out
    summary, curves = withheld_comparison(correct, arms, cluster, uid, STEPS, CRIT, 50, 0.9, 0)
    assert summary["group"].tolist() == ["all", "a", "b"]
    assert summary["n_kept"].iloc[0] + summary["n_withheld"].iloc[0] == held.size - 3
    assert set(curves["arm"]) == {"kept", "withheld"}
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    phrases = pd.DataFrame({"critical_phrase": ["this cat", " these dogs", "other", None]})
    assert withheld_arms(tokens, phrases) is None
    store.write_json(tokens / "manifest.json", {"withhold": {"table": "withheld.parquet"}})
    store.write_parquet(tokens / "withheld.parquet", pd.DataFrame({"phrase": ["this cat", "these dogs"],
                                                                   "withheld": [True, False]}))
    got = withheld_arms(tokens, phrases)
    assert got[:2].tolist() == [1.0, 0.0] and np.isnan(got[2:]).all()


def test_analyse_stage_adds_the_comparison_when_the_stream_withheld(tmp_path):
    sim = simulate_study(tmp_path / "s", phenomena=[SimPhenomenon("agreement", 2000, 8000)],
                         paradigms_per_phenomenon=2, n_pairs_per_paradigm=150, hidden_pairs=50, n_layer=2, planted_head=1,
                         n_head=2, d_model=8, seed=3)
    study = sim.study
    phrases = pd.read_parquet(study.phrases_path)
    distinct = sorted(set(phrases["critical_phrase"].astype(str)))
    coin = np.random.default_rng(0).random(len(distinct)) < 0.5
    store.write_parquet(study.tokens_dir / "withheld.parquet", pd.DataFrame({"phrase": distinct, "withheld": coin}))
    manifest = store.read_json(study.tokens_dir / "manifest.json")
    store.write_json(study.tokens_dir / "manifest.json", {**manifest, "withhold": {"table": "withheld.parquet"}})
    text = analyse_study(study, AnalyseSection(n_boot=50, n_perm=50, probes=False, heads=False, ablation=False,
                                                keep_uninformative=True),
                         force=True)
    assert "withheld (randomised)" in text
    got = pd.read_parquet(study.analysis_dir / "withheld.parquet")
    assert got["group"].tolist()[0] == "all" and set(got["group"][1:]) == set(phrases["uid"])
    assert got["n_kept"].iloc[0] + got["n_withheld"].iloc[0] == int(phrases["supported"].sum())
    assert (study.analysis_dir / "withheld_curves.parquet").exists()
