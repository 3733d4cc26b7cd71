"""Margin curves against a direct computation and statsmodels' cluster-robust standard error."""
import numpy as np
import pytest

from grokscope.analyse.margins import margin_curves


def test_margin_curves_mean_and_cluster_robust_interval_match_statsmodels():
    import statsmodels.api as sm
    from scipy import stats

    rng = np.random.default_rng(0)
    n, T = 90, 4
    cluster = rng.integers(0, 15, n)
    margin = rng.normal(0, 1, (n, T)) + rng.normal(0, 1, 15)[cluster][:, None] + np.arange(T)
    counts = np.zeros((n, T), dtype=np.int64)
    counts[: n // 2, 1:] = 3  # half the pairs seen from checkpoint 1 on
    counts[n // 2 : n // 2 + 10, 3] = 1
    phen = np.where(np.arange(n) % 3 == 0, "a", "b")
    steps, tokens = np.array([0, 10, 20, 30]), np.array([0, 100, 200, 300])
    df = margin_curves(margin, counts, 2, phen, cluster, steps, tokens, ci=0.9)
    assert set(df["group"]) == {"all", "a", "b"} and len(df) == 3 * 2 * T
    for t in range(T):
        seen = counts[:, t] >= 2
        for split, member in (("proxy_train", seen), ("proxy_val", ~seen)):
            row = df[(df["group"] == "all") & (df["split"] == split) & (df["step"] == steps[t])].iloc[0]
            assert row["n"] == member.sum()
            if not member.any():
                assert np.isnan(row["margin"])
                continue
            y = margin[member, t]
            assert row["margin"] == pytest.approx(y.mean())
            fit = sm.OLS(y, np.ones((y.size, 1))).fit(cov_type="cluster", cov_kwds={"groups": cluster[member],
                                                                                    "use_correction": False})
            g = np.unique(cluster[member]).size
            # statsmodels' default small-sample factor is G/(G-1) * (N-1)/(N-K); ours is G/(G-1)
            se = float(fit.bse[0]) * np.sqrt(g / (g - 1))
            q = stats.t.ppf(0.95, g - 1)
            assert row["ci_low"] == pytest.approx(y.mean() - q * se, rel=1e-9)
            assert row["ci_high"] == pytest.approx(y.mean() + q * se, rel=1e-9)


def test_one_cluster_has_no_interval():
    margin = np.ones((4, 2))
    df = margin_curves(margin, np.zeros((4, 2)), 1, np.array(["a"] * 4), np.zeros(4), np.array([0, 1]),
                       np.array([0, 1]))
    val = df[(df["split"] == "proxy_val")]
    assert (val["margin"] == 1).all() and val["ci_low"].isna().all()
