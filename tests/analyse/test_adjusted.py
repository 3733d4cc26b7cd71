"""The adjusted comparison and the event study against direct regressions, and the E-value by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from grokscope.analyse import adjusted as ad
from grokscope.analyse import event_study as es
from grokscope.analyse.simulate import GroupScenario, simulate_group


def test_e_value_hand_worked():
    # VanderWeele & Ding (2017): RR = 3.9 -> E = 3.9 + sqrt(3.9 * 2.9) = 7.26
    assert ad.e_value(3.9) == pytest.approx(7.263, abs=1e-3)
    assert ad.e_value(1 / 3.9) == pytest.approx(7.263, abs=1e-3)
    point, bound = ad.e_values(np.log(4.0), np.log(1.44), np.log(9.0))  # OR 4 -> RR 2; bound OR 1.44 -> RR 1.2
    assert point == pytest.approx(2 + np.sqrt(2))
    assert bound == pytest.approx(1.2 + np.sqrt(1.2 * 0.2))
    assert ad.e_values(0.5, -0.1, 1.0)[1] == 1.0


def test_glm_coefficient_matches_a_direct_statsmodels_fit():
    """The seen coefficient equals a GLM fitted by hand on the same rows, its SE the Mancl-DeRouen sandwich by hand
    (pair-major stacking, checkpoint dummies, paradigm dummy, covariate)."""
    rng = np.random.default_rng(0)
    n, W = 120, 3
    seen = rng.random((n, W)) < np.linspace(0.3, 0.7, W)
    seen = np.maximum.accumulate(seen, axis=1)
    x = rng.normal(size=n)
    par = np.where(np.arange(n) < 60, "A", "B")
    logit = -0.5 + 0.8 * seen + 0.3 * x[:, None] + np.array([0, 0.4, 0.8])[None] + (par == "B")[:, None] * 0.5
    y = rng.random((n, W)) < 1 / (1 + np.exp(-logit))
    cluster = np.arange(n) // 3
    X = ad.design(seen, ((x - x.mean()) / x.std())[:, None], par, np.arange(W))
    # by hand: const, seen, t1, t2, paradigm B, x, x * position
    pos = np.tile(np.array([-0.5, 0.0, 0.5]), n)
    xs = np.repeat((x - x.mean()) / x.std(), W)
    X2 = np.column_stack([np.ones(n * W), seen.reshape(-1), np.tile([0, 1, 0], n), np.tile([0, 0, 1], n),
                          np.repeat(par == "B", W), xs, xs * pos]).astype(float)
    np.testing.assert_allclose(X, X2)
    groups = np.repeat(cluster, W)
    yv = y.reshape(-1).astype(float)
    est, se, p, lo, hi, kind = ad.fit_effect(yv, X, groups, "binomial", 0.95)
    ref = sm.GLM(yv, X2, family=sm.families.Binomial()).fit()
    assert est == pytest.approx(ref.params[1]) and kind == 1.0
    # the Mancl-DeRouen sandwich by hand: B = X'WX, H_gg = W_g X_g B^-1 X_g', u_g = X_g' (I - H_gg)^-1 r_g
    mu = ref.fittedvalues
    w = mu * (1 - mu)
    Binv = np.linalg.inv(X2.T @ (w[:, None] * X2))
    meat = np.zeros_like(Binv)
    for g in np.unique(groups):
        m = groups == g
        Xg = X2[m]
        H = (w[m][:, None] * Xg) @ Binv @ Xg.T
        u = Xg.T @ np.linalg.solve(np.eye(m.sum()) - H, yv[m] - mu[m])
        meat += np.outer(u, u)
    se_hand = np.sqrt((Binv @ meat @ Binv)[1, 1])
    assert se == pytest.approx(se_hand, rel=1e-6)
    G = np.unique(groups).size
    from scipy import stats
    assert p == pytest.approx(2 * stats.t.sf(abs(est / se_hand), G - 1), rel=1e-6)
    assert hi - est == pytest.approx(stats.t.ppf(0.975, G - 1) * se_hand, rel=1e-6)
    # larger than the CR1 sandwich, which is too small at few clusters
    cr1 = sm.GLM(yv, X2, family=sm.families.Binomial()).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert se > cr1.bse[1]
    # a cluster too large for the per-cluster solve: the CR1 sandwich, said by the last field
    fb = ad.fit_effect(yv, X, groups, "binomial", 0.95, max_cluster_rows=8)
    assert fb[5] == 0.0 and fb[1] == pytest.approx(cr1.bse[1])
    # Gaussian: the OLS coefficient equals numpy least squares
    yc = rng.normal(size=n * W) + 0.7 * seen.reshape(-1)
    est_m = ad.fit_effect(yc, X, groups, "gaussian", 0.95)[0]
    assert est_m == pytest.approx(np.linalg.lstsq(X2, yc, rcond=None)[0][1])


def test_adjusted_removes_a_measured_frequency_confound_and_finds_a_planted_delay():
    sc_null = GroupScenario(confound=2.0, n_phrases=120)
    sc_delay = GroupScenario(confound=2.0, n_phrases=120, delay=4)
    rows = []
    for sc in (sc_null, sc_delay):
        g = simulate_group(sc, np.random.default_rng(5))
        data = ad.AdjustedData(g.correct, g.margin, g.counts >= 1, g.covariates, g.paradigm, g.cluster, g.tokens)
        rows.append(ad.adjusted_rows(data, [("all", "all", np.arange(len(g.correct)))], ad.AdjustedOptions(n_boot=50)))
    t = ad.finalise_verdicts(pd.concat(rows, ignore_index=True), 0.05)
    assert t["status"].tolist() == ["no delay", "delayed"]
    assert t["e_value"].iloc[1] > 1.5
    naive = simulate_group(sc_null, np.random.default_rng(5))
    data = ad.AdjustedData(naive.correct, None, naive.counts >= 1, naive.covariates.iloc[:, :0], naive.paradigm,
                           naive.cluster, naive.tokens)
    r = ad.finalise_verdicts(ad.adjusted_rows(data, [("all", "all", np.arange(len(naive.correct)))],
                                              ad.AdjustedOptions(n_boot=50)), 0.05)
    assert r["status"].iloc[0] == "delayed"  # without the covariates the confound looks like a delay


def test_event_study_matches_dummy_variable_regression():
    """Two-way demeaned OLS equals OLS with explicit pair and checkpoint dummies (balanced panel)."""
    rng = np.random.default_rng(1)
    n, T, K = 30, 8, 2
    entry = rng.integers(0, T + 3, size=n).clip(max=T)
    y = rng.normal(size=(n, T)) + rng.normal(size=n)[:, None] + np.linspace(0, 1, T)[None]
    k = np.arange(T)[None] - entry[:, None]
    y += 0.8 * ((entry < T)[:, None] & (k >= 0))
    got = es.event_study(y, entry, np.arange(n), K, 0.95)
    D = es.event_dummies(entry, T, K).reshape(n * T, -1)
    present = D.sum(0) > 0
    X = np.column_stack([D[:, present], np.repeat(np.eye(n), T, axis=0), np.tile(np.eye(T)[:, 1:], (n, 1))])
    beta = np.linalg.lstsq(X, y.reshape(-1), rcond=None)[0][: present.sum()]
    np.testing.assert_allclose(got["estimate"].to_numpy()[present], beta, atol=1e-8)
    post = got.set_index("event_time").loc[["0", "1", "2"], "estimate"]
    assert (post > 0.3).all()


def test_event_study_recovers_a_planted_memorisation_profile():
    rng = np.random.default_rng(2)
    n, T, K = 600, 12, 3
    entry = rng.integers(0, T + 4, size=n).clip(max=T)
    k = np.arange(T)[None] - entry[:, None]
    effect = np.where((entry < T)[:, None] & (k >= 0), 0.3, 0.0)
    y = (rng.random((n, T)) < 0.5 + effect).astype(float)
    got = es.event_study(y, entry, np.arange(n) // 2, K, 0.95).set_index("event_time")
    for e in ("0", "1", "2", "3"):
        assert got.loc[e, "ci_low"] <= 0.3 <= got.loc[e, "ci_high"]
    for e in ("-3", "-2"):
        assert got.loc[e, "ci_low"] <= 0 <= got.loc[e, "ci_high"]


def test_cluster_subset_keeps_whole_clusters_and_bounds_the_size():
    cluster = np.repeat(np.arange(100).astype(str), 7)
    idx = np.arange(700)
    sub = ad.cluster_subset(cluster, idx, 200, seed=0)
    assert 200 <= sub.size <= 207
    kept = set(cluster[sub])
    for c in kept:  # every kept cluster is kept whole
        assert np.isin(np.flatnonzero(cluster == c), sub).all()
    assert ad.cluster_subset(cluster, idx, 1000, seed=0) is idx


def _separated_group(margin_gap: float, seed: int = 0) -> ad.AdjustedData:
    """Seen pairs (a third of the clusters, seen from the start) are right at every checkpoint, so a
    binomial fit of correctness separates; unseen pairs learn over the run. The margin is noise plus
    ``margin_gap`` for a seen pair, so the margin model alone says whether there is an effect."""
    rng = np.random.default_rng(seed)
    n, T = 240, 8
    cluster = np.arange(n) // 2
    seen_pair = (cluster % 3 == 0)
    p_unseen = np.linspace(0.5, 1.0, T)
    learned = rng.random((n, T)) < p_unseen[None]
    correct = np.where(seen_pair[:, None], True, learned)
    margin = margin_gap * seen_pair[:, None] + rng.normal(size=(n, T))
    seen = np.repeat(seen_pair[:, None], T, axis=1)
    cov = pd.DataFrame({"log_critical_freq": rng.normal(size=n)})
    return ad.AdjustedData(correct, margin, seen, cov, np.array(["A"] * n), cluster, np.arange(1, T + 1) * 1000)


def test_a_separated_binomial_fit_rests_the_verdict_on_the_margin_model():
    rows = [ad.adjusted_rows(_separated_group(gap), [("all", "all", np.arange(240))], ad.AdjustedOptions(n_boot=50))
            for gap in (1.0, 0.0)]
    t = ad.finalise_verdicts(pd.concat(rows, ignore_index=True), 0.05)
    assert t["effect"].isna().all()  # the log odds ratio is infinite: no binomial estimate
    assert t["basis"].tolist() == ["margin", "margin"]
    # the planted margin gap is found, and its absence is not called a delay; q comes from the margin's p
    assert t["status"].tolist() == ["delayed", "no delay"]
    assert t["margin_effect"].iloc[0] == pytest.approx(1.0, abs=0.3)
    assert t["q"].tolist() == pytest.approx(list(ad.bh_q(t["p_margin"].to_numpy())))


def test_context_word_frequency_outside_every_critical_phrase_is_not_a_copy_of_exposure():
    """Pairs sharing a context word ("this") get one outside count: the word's count minus every
    distinct phrase's count (worked by hand), not minus their own phrase's count alone."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from grokscope.analyse.covariates import inside_phrase_counts, pair_covariates

    vocab = {w: i for i, w in enumerate(["[UNK]", "this", "wagon", "kettle", "lamp", "these", "wagons"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    phrases = pd.DataFrame({
        "critical_phrase": ["this wagon", "this wagon", "this kettle", "this lamp", "these wagons"],
        "critical_word": ["wagon", "wagon", "kettle", "lamp", "wagons"],
        "context_word": ["this", "this", "this", "this", "these"],
    })
    counts = np.array([800.0, 800.0, 0.0, 400.0, 800.0])  # pairs 0 and 1 share a phrase: counted once
    assert inside_phrase_counts(phrases["context_word"].to_numpy(), phrases, counts).tolist() == [1200.0] * 4 + [800.0]
    unigram = np.array([0, 1500, 900, 30, 450, 800, 820], dtype=np.float64)
    exposure = pd.DataFrame({"good_total_count": counts})
    cov = pair_covariates(phrases, exposure, tok, unigram)
    assert cov["log_context_freq"].tolist() == pytest.approx([np.log1p(300)] * 4 + [np.log1p(0)])
    assert cov["log_critical_freq"].tolist() == pytest.approx(np.log1p([100, 100, 30, 50, 20]).tolist())


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.PerfectSeparationWarning")
def test_separation_by_either_side_or_by_a_covariate_gives_no_log_odds_ratio():
    assert ad.separates(np.array([1.0, 1, 0, 1]), np.array([True, True, False, False]))  # seen all right
    assert ad.separates(np.array([1.0, 0, 0, 0]), np.array([True, True, False, False]))  # unseen all wrong
    assert not ad.separates(np.array([1.0, 0, 0, 1]), np.array([True, True, False, False]))
    rng = np.random.default_rng(1)
    n = 120
    seen = np.arange(n) < 60
    y = (rng.random(n) < 0.5).astype(np.float64)
    groups = np.arange(n) // 2
    noise = np.column_stack([np.ones(n), seen, rng.normal(size=n)])
    glm = sm.GLM(y, noise, family=sm.families.Binomial()).fit()
    gee = sm.GEE(y, noise, groups=groups, family=sm.families.Binomial(),
                 cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    # the model-based SE is the GLM's own (inverse Fisher information at the fitted means)
    assert ad.model_based_se(gee) == pytest.approx(glm.bse[1], rel=1e-6)
    assert np.isfinite(ad.fit_effect(y, noise, groups, "binomial", 0.95)[0])
    # a covariate that predicts y exactly: statsmodels "converges" with seen at 0 and a small sandwich SE,
    # while the information diverges (GLM SE of seen > 1e3): taken as separated
    exact = np.column_stack([np.ones(n), seen, y - y.mean()])
    assert sm.GLM(y, exact, family=sm.families.Binomial()).fit().bse[1] > 1e3
    assert np.isnan(ad.fit_effect(y, exact, groups, "binomial", 0.95)[0])
    assert np.isfinite(ad.fit_effect(y, exact, groups, "gaussian", 0.95)[0])  # OLS has no such boundary


def test_the_log_odds_bound_does_not_apply_to_the_margin_model():
    """``MAX_LOG_OR`` bounds a log odds ratio; a margin effect is in log-prob units and may exceed it
    (a memorised phrase's margin can be tens of nats above an unseen one's). The Gaussian fit's estimate
    equals OLS's coefficient however large it is (before, an interval past 15 was reported as NaN)."""
    rng = np.random.default_rng(3)
    n = 200
    seen = np.arange(n) < 100
    X = np.column_stack([np.ones(n), seen, rng.normal(size=n)])
    y = 25.0 * seen + X[:, 2] + rng.normal(size=n)
    groups = np.arange(n) // 4
    est, se, p, lo, hi, _ = ad.fit_effect(y, X, groups, "gaussian", 0.95)
    assert est == pytest.approx(sm.OLS(y, X).fit().params[1], rel=1e-8)
    assert est > ad.MAX_LOG_OR and lo < est < hi and p < 1e-6
