"""Honest inference: cluster bootstrap and cluster permutation (brute force), BH q-values (by hand),
the matched comparison standardised over paradigm x bin (no Simpson artefact)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from grokscope.analyse import dynamics as dy
from grokscope.analyse.resampling import bh_q, cluster_bootstrap_weights, permutation_lead_tests


def test_bh_q_matches_hand_computation():
    # sorted p 0.01, 0.03, 0.04, 0.2 -> p*m/rank 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    q = bh_q(np.array([0.01, 0.04, np.nan, 0.03, 0.2]))
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, np.nan, 0.16 / 3, 0.2])


def test_cluster_bootstrap_moves_whole_clusters():
    rng = np.random.default_rng(0)
    clusters = np.array(["a", "a", "b", "c", "c", "c", "d", "e", "e", "f"])
    strata = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    w = cluster_bootstrap_weights(strata, clusters, 3000, rng)
    for c in np.unique(clusters):
        idx = np.flatnonzero(clusters == c)
        assert (w[:, idx] == w[:, idx[:1]]).all()  # one multiplicity per cluster
    first = [0, 2, 3]  # stratum 0 holds clusters a, b, c: their draws sum to 3 in every replicate
    np.testing.assert_array_equal(w[:, first].sum(1), 3)
    np.testing.assert_array_equal(w[:, [6, 7, 9]].sum(1), 3)
    assert abs(w[:, 0].mean() - 1) < 0.05 and abs(w[:, 0].var() - (1 - 1 / 3)) < 0.05


def _gap(correct, entry, min_pairs=1):
    gaps = []
    for j in range(correct.shape[1]):
        tr = entry <= j
        if tr.sum() >= min_pairs and (~tr).sum() >= min_pairs:
            gaps.append(correct[tr, j].mean() - correct[~tr, j].mean())
    return np.mean(gaps) if gaps else 0.0


def test_cluster_permutation_matches_exhaustive_enumeration():
    """Six phrase clusters (10 pairs) in one paradigm: all 6! assignments of the clusters' exposure
    histories enumerated by brute force; pairs of a cluster always move together."""
    rng = np.random.default_rng(1)
    sizes = [1, 2, 1, 3, 1, 2]
    cluster = np.repeat(np.arange(6), sizes)
    c_entry = np.array([0, 1, 4, 2, 4, 0])
    entry = c_entry[cluster]
    T = 4
    correct = rng.random((10, T)) < 0.5
    correct[cluster == 3, 2:] = True
    correct[cluster == 1, 1:] = True
    u_correct = np.stack([correct[cluster == c].mean(0) for c in range(6)])  # each cluster counts once

    def stat(e):
        return _gap(u_correct, e, min_pairs=2)

    obs = stat(c_entry)
    stats = np.array([stat(c_entry[list(p)]) for p in itertools.permutations(range(6))])
    exact = (stats >= obs - 1e-12).mean()
    (res,) = permutation_lead_tests(correct, entry, np.zeros(10, np.int64), np.zeros(10, np.int64),
                                    [[np.arange(10)]], min_pairs=1, n_perm=40000, seed=3, clusters=cluster)
    stat, p_lead, _ = res[0]
    assert stat == pytest.approx(obs, abs=1e-6)
    assert p_lead == pytest.approx(exact, abs=0.01)
    assert 0.02 < exact < 0.98  # not a trivial case


def test_matched_standardises_within_paradigm_no_simpson_artefact():
    """Two paradigms, no exposure effect: paradigm A is easy and mostly seen, B hard and mostly
    unseen, one frequency bin. Pooled over paradigms, train 'leads' (Simpson); standardised over
    paradigm x bin the matched gap is ~0."""
    rng = np.random.default_rng(4)
    n, T = 2000, 6
    uid = np.repeat(np.array(["A", "B"], dtype=object), n // 2)
    seen_p = np.where(uid == "A", 0.9, 0.1)
    seen = rng.random(n) < seen_p
    counts = np.repeat(seen[:, None].astype(np.int64), T, axis=1)
    p = np.where(uid == "A", 0.9, 0.55)
    correct = rng.random((n, T)) < p[:, None]
    table = dy.PairTable(np.arange(T) * 10, np.arange(T) * 1000, correct, counts, np.ones(n), uid,
                         np.array(["ph"] * n, dtype=object))
    res = dy.analyse_dynamics(table, dy.DynamicsOptions(n_boot=50, n_perm=200), levels=("all",))
    cur = res.curves.set_index(["split", "step"])["accuracy"]
    proxy_gap = (cur["proxy_train"] - cur["proxy_val"]).mean()
    matched_gap = (cur["matched_train"] - cur["matched_val"]).mean()
    assert proxy_gap > 0.2
    assert abs(matched_gap) < 0.04
    row = res.timing.set_index("comparison").loc["matched"]
    assert row["p_lead"] > 0.05
