"""Pooling verdicts over runs: the random-effects pool against a direct Paule-Mandel computation,
and ``grokscope pool`` on simulated studies."""
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from grokscope.analyse.pooling import pool_timing


def _timing(rows):
    out = []
    for level, group, eff, se, status, delay in rows:
        out.append({"level": level, "group": group, "comparison": "adjusted", "effect": eff, "effect_se": se,
                    "status": status, "delay_steps": np.nan})
        out.append({"level": level, "group": group, "comparison": "proxy", "effect": np.nan, "effect_se": np.nan,
                    "status": "delayed", "delay_steps": delay})
    return pd.DataFrame(out)


def _paule_mandel(y, v):
    k = y.size

    def q_minus(tau2):
        w = 1 / (v + tau2)
        m = (w * y).sum() / w.sum()
        return (w * (y - m) ** 2).sum() - (k - 1)

    tau2 = 0.0 if q_minus(0.0) <= 0 else optimize.brentq(q_minus, 0.0, 100.0, xtol=1e-12)
    w = 1 / (v + tau2)
    return (w * y).sum() / w.sum(), 1 / np.sqrt(w.sum()), tau2


def test_random_effects_pool_equals_a_direct_paule_mandel_fit():
    y = np.array([0.9, 0.1, 0.5, 1.4])
    se = np.array([0.2, 0.25, 0.15, 0.3])
    timings = [_timing([("all", "all", y[r], se[r], "delayed" if r != 1 else "no delay", 10 * (r + 1))])
               for r in range(4)]
    row = pool_timing(timings).iloc[0]
    mean, sd, tau2 = _paule_mandel(y, se ** 2)
    assert tau2 > 0
    assert row["effect"] == pytest.approx(mean, rel=1e-5)
    assert row["effect_se"] == pytest.approx(sd, rel=1e-4)
    assert row["tau2"] == pytest.approx(tau2, rel=1e-4)
    t = stats.t.ppf(0.975, 3)
    assert row["effect_ci_low"] == pytest.approx(row["effect"] - t * row["effect_se"])
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(row["effect"] / row["effect_se"]), 3))
    assert row["k"] == 4 and row["n_delayed"] == 3 and row["statuses"] == "delayed/no delay/delayed/delayed"
    assert (row["delay_steps_min"], row["delay_steps_median"], row["delay_steps_max"]) == (10, 25, 40)


def test_homogeneous_runs_pool_to_the_inverse_variance_mean_and_statuses_follow_q():
    timings = [_timing([("all", "all", 0.5, 0.1, "delayed", 5), ("phenomenon", "x", 0.02, 0.2, "no delay", 0),
                        ("phenomenon", "y", -0.8, 0.1, "val leads", -3), ("phenomenon", "z", np.nan, np.nan,
                                                                            "not learned", np.nan)])
               for _ in range(3)]
    df = pool_timing(timings).set_index("group")
    assert df.loc["all", "tau2"] == pytest.approx(0.0, abs=1e-12)
    assert df.loc["all", "effect"] == pytest.approx(0.5)
    assert df.loc["all", "effect_se"] == pytest.approx(0.1 / np.sqrt(3))
    assert list(df["status"]) == ["delayed", "no delay", "val leads", "not learned"]  # z: no run learned it
    p = df.loc[["all", "x", "y"], "p"].to_numpy()
    order = np.argsort(p)
    bh = np.minimum.accumulate((p[order] * 3 / np.arange(1, 4))[::-1])[::-1]
    np.testing.assert_allclose(df.loc[["all", "x", "y"], "q"].to_numpy()[order], bh)


def test_pool_command_on_simulated_runs(tmp_path, capsys):
    from grokscope import cli
    from grokscope.analyse.simulate import SimPhenomenon, simulate_study
    from grokscope.analyse.stage import analyse_study
    from grokscope.core import store
    from grokscope.core.config import AnalyseSection

    fast = AnalyseSection(n_boot=100, n_perm=100, probes=False, heads=False, concepts=False, ablation=False,
                          event_study=False, min_distinct_phrases=10, sensitivity_min_counts=[])
    roots = []
    for seed in (1, 2):
        sim = simulate_study(tmp_path / f"seed{seed}", phenomena=[SimPhenomenon("agreement", 2000, 8000)],
                             paradigms_per_phenomenon=2, n_pairs_per_paradigm=200, hidden_pairs=0, seed=seed)
        analyse_study(sim.study, fast, force=True)
        roots.append(str(sim.study.root))
    first = store.read_parquet_metadata(store.Study(roots[0]).phrases_path)["benchmark_fingerprint"]
    second = store.Study(roots[1]).phrases_path  # the simulated pairs differ by seed: same benchmark, for pooling
    store.write_parquet(second, pd.read_parquet(second), metadata={**store.read_parquet_metadata(second),
                                                                  "benchmark_fingerprint": first})
    assert cli.main(["pool", *roots, "--out", str(tmp_path / "pooled")]) == 0
    out = capsys.readouterr().out
    assert "pooled over 2 runs" in out
    df = pd.read_parquet(tmp_path / "pooled" / "pooled.parquet")
    assert {"all", "agreement"} <= set(df["group"]) and (df["k"] <= 2).all()
    assert cli.main(["pool", roots[0], str(tmp_path / "nothing")]) == 2
    assert "grokscope analyse" in capsys.readouterr().err
    other = store.Study(roots[1]).phrases_path  # another benchmark
    store.write_parquet(other, pd.read_parquet(other), metadata={**store.read_parquet_metadata(other),
                                                                "benchmark_fingerprint": "ff" * 16})
    assert cli.main(["pool", *roots]) == 2
    assert "different benchmarks" in capsys.readouterr().err


def test_a_run_decided_on_the_margin_pools_every_run_on_the_margin():
    """One run's correctness fit separated (log OR NaN, basis margin): the group is pooled on every run's
    margin effect (no run drops out), equal to a direct Paule-Mandel fit of those; a group where every
    run has a log OR is pooled on it."""
    m = np.array([0.8, 1.2, 0.5])
    m_se = np.array([0.2, 0.3, 0.25])
    timings = []
    for r in range(3):
        separated = r == 1
        t = _timing([("all", "all", np.nan if separated else 1.0 + r, np.nan if separated else 0.4, "delayed", 10),
                     ("paradigm", "x", 0.5 + r, 0.3, "no delay", 10)])
        t["basis"] = ["margin" if separated else "correctness", None, "correctness", None]
        t["margin_effect"] = [m[r], np.nan, 0.1, np.nan]
        t["margin_effect_se"] = [m_se[r], np.nan, 0.1, np.nan]
        timings.append(t)
    out = pool_timing(timings).set_index("group")
    mean, sd, _ = _paule_mandel(m, m_se ** 2)
    assert out.loc["all", "basis"] == "margin" and out.loc["all", "k"] == 3
    assert out.loc["all", "effect"] == pytest.approx(mean, rel=1e-6)
    assert out.loc["all", "effect_se"] == pytest.approx(sd, rel=1e-6)
    assert out.loc["x", "basis"] == "correctness" and out.loc["x", "k"] == 3
    assert out.loc["x", "effect"] == pytest.approx(1.5)  # 0.5, 1.5, 2.5 with equal SEs


def test_runs_that_all_failed_to_learn_pool_to_not_learned_and_a_split_pool_is_explained():
    """Every run "not learned": the pool says so whatever the runs' effects are (before, two runs' wide
    log ORs pooled to "no delay"). Every run "delayed" but heterogeneous, so the t pool (2 df) crosses
    0: the status stays "no delay" and the text names the group and why."""
    from grokscope.analyse.pooling import pooled_text

    effects = [(0.2, 5.0), (-0.1, 4.0), (0.3, 6.0)]
    delayed = [(0.4, 0.15), (3.0, 0.2), (1.5, 0.15)]
    timings = [_timing([("paradigm", "nl", *effects[r], "not learned", np.nan),
                        ("paradigm", "het", *delayed[r], "delayed", 25)]) for r in range(3)]
    df = pool_timing(timings).set_index("group")
    assert df.loc["nl", "status"] == "not learned" and df.loc["nl", "k"] == 3
    assert df.loc["het", "n_delayed"] == 3 and df.loc["het", "status"] == "no delay"
    assert df.loc["het", "effect_ci_low"] < 0 < df.loc["het", "tau2"]
    text = pooled_text(df.reset_index(), ["a", "b", "c"])
    assert "every run says delayed but the pool does not for het" in text and "t with 2 df" in text
    mixed = [_timing([("paradigm", "nl", *effects[r], "not learned" if r else "no delay", np.nan)]) for r in range(3)]
    assert pool_timing(mixed).iloc[0]["status"] == "no delay"
