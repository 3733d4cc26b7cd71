"""The paper's concept-vector measures against brute force and hand-built matrices."""
from __future__ import annotations

import numpy as np
import pytest

from grokscope.analyse import concept as cv


def _centred_matrix(s: np.ndarray, n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows with zero column mean and singular values exactly ``s``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, len(s)))
    a -= a.mean(axis=0)
    u, _ = np.linalg.qr(a)  # columns orthogonal to the ones vector
    v, _ = np.linalg.qr(rng.normal(size=(d, len(s))))
    return u @ np.diag(s) @ v.T


def test_effective_rank_of_hand_built_matrices():
    for k in (1, 2, 5, 12):
        x = _centred_matrix(np.full(k, 3.0), 100, 30, seed=k)
        assert cv.effective_rank(x) == pytest.approx(k, rel=1e-9)
        assert cv.centred_participation_ratio(x) == pytest.approx(k, rel=1e-9)
        np.testing.assert_allclose(cv.singular_values(x)[:k], np.full(k, 3.0), rtol=1e-7)
        np.testing.assert_allclose(cv.singular_values(x.T, centre=False)[:k], np.full(k, 3.0), rtol=1e-7)  # n > d
    s = np.array([3.0, 1.0])
    p = s / s.sum()
    x = _centred_matrix(s, 60, 10)
    assert cv.effective_rank(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert cv.centred_participation_ratio(x) == pytest.approx((9 + 1) ** 2 / (81 + 1), rel=1e-9)
    # a shared offset (the mean concept vector) adds a dimension uncentred, none centred
    shifted = x + 10.0 * np.eye(10)[3]
    assert cv.effective_rank(shifted) == pytest.approx(cv.effective_rank(x), rel=1e-9)
    assert abs(cv.effective_rank(shifted, centre=False) - cv.effective_rank(x)) > 0.3


def test_direction_auroc_equals_brute_force_pair_counting():
    rng = np.random.default_rng(0)
    n, d = 40, 6
    good, bad = rng.normal(size=(n, d)) + 0.3, rng.normal(size=(n, d))
    sign = rng.choice([-1.0, 1.0], size=n)
    w = rng.normal(size=d)
    pos = sign * (good @ w)
    neg = sign * (bad @ w)
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert cv.direction_auroc(w, good, bad, sign) == pytest.approx(brute, abs=1e-12)
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(n), np.zeros(n)]
    assert cv.direction_auroc(w, good, bad, sign) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)
    tied = np.round(good, 0), np.round(bad, 0)  # many ties: each counts 1/2
    tp, tn = sign * (tied[0] @ np.eye(d)[0]), sign * (tied[1] @ np.eye(d)[0])
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in tp for q in tn])
    assert cv.direction_auroc(np.eye(d)[0], *tied, sign) == pytest.approx(brute, abs=1e-12)
    assert cv.direction_auroc(np.zeros(d), good, bad, sign) == 0.5


def test_orientation_undoes_sign_cancellation():
    """Half the pairs singular-good, half plural-good: the raw mean concept vector cancels; the
    oriented one recovers the number direction, and the probe separates held-out pairs."""
    rng = np.random.default_rng(1)
    n, d = 400, 16
    u = np.eye(d)[0]
    plural_good = rng.random(n) < 0.5
    words = np.array([f"w{i % 50}" for i in range(n)], dtype=object)
    good_w = np.where(plural_good, words + "s", words)
    bad_w = np.where(plural_good, words, words + "s")
    z = rng.normal(size=(n, d))
    number = np.where(plural_good, 1.0, -1.0)[:, None] * u  # good state carries its number
    good, bad = z + number, z - number
    sign = cv.orientation(good_w, bad_w)
    np.testing.assert_array_equal(sign, np.where(plural_good, -1.0, 1.0))
    raw = (good - bad).mean(0)
    assert np.linalg.norm(raw) < 0.3
    tr, va = np.arange(n) < 200, np.arange(n) >= 200
    auc = cv.mean_direction_auroc(good[tr], bad[tr], sign[tr], good[va], bad[va], sign[va])
    assert auc > 0.9
    ones = np.ones(n)
    assert abs(cv.mean_direction_auroc(good[tr], bad[tr], ones[tr], good[va], bad[va], ones[va]) - 0.5) < 0.15


def test_grouped_logreg_folds_never_share_a_word_and_random_labels_are_chance():
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(2)
    n, d = 300, 8
    groups = rng.integers(0, 30, size=n)
    g2 = np.concatenate([groups, groups])
    for tr, te in GroupKFold(n_splits=5).split(np.zeros(2 * n), groups=g2):
        assert not set(g2[tr]) & set(g2[te])
    z = rng.normal(size=(n, d))
    good, bad = z + 0.8 * np.eye(d)[0], z - 0.8 * np.eye(d)[0]
    sign = np.ones(n)
    assert cv.grouped_logreg_accuracy(good, bad, sign, groups, 5) > 0.75
    rand = rng.permutation(np.r_[np.ones(n), np.zeros(n)])
    assert abs(cv.grouped_logreg_accuracy(good, bad, sign, groups, 5, labels=rand) - 0.5) < 0.1


@pytest.mark.parametrize("rank", [1, 4, 10])
def test_subsampled_rank_recovers_planted_rank_against_drift_baseline(rank):
    rng = np.random.default_rng(rank)
    n, d = 600, 32
    basis, _ = np.linalg.qr(rng.normal(size=(d, rank)))
    diffs = 2.0 + rng.normal(size=(n, rank)) @ basis.T + 1e-4 * rng.normal(size=(n, d))
    good = rng.normal(size=(n, d))  # isotropic states: baseline ~ full rank
    est = cv.subsampled_rank(diffs, good, n_sub=200, repeats=10, rng=rng)
    assert est.eff_rank == pytest.approx(rank, rel=0.25)
    assert est.eff_rank_low <= est.eff_rank <= est.eff_rank_high
    assert est.pr_centred == pytest.approx(rank, rel=0.3)
    assert est.baseline_eff_rank > 0.8 * d
    assert est.n_sub == 200


def test_aligned_phase_equal_log_windows_exclude_untrained():
    tokens = np.array([0, 1, 10, 100, 1000, 10000, 100000])
    ph = cv.aligned_phase(tokens, 1000.0)  # fits 3 decades before, 2 after -> width 2 decades
    assert list(ph) == ["", "", "before", "before", "after", "after", "after"]
    assert list(cv.aligned_phase(tokens, 1000.0, width_log=np.log(10))) == ["", "", "", "before", "after", "after", ""]
    assert list(cv.aligned_phase(tokens, None)) == [""] * 7


def test_lemma_groups_join_singular_and_plural_good_pairs():
    g = np.array(["dog", "Dogs", "cat", "is"], dtype=object)
    b = np.array(["dogs", "dog", "cats", "are"], dtype=object)
    assert list(cv.lemma_groups(g, b)) == ["dog|dogs", "dog|dogs", "cat|cats", "are|is"]


def test_summary_of_a_table_without_windows_keeps_its_columns():
    """A run too short for any before/after window (every phase "") still writes a summary the report
    can read: no rows, every column."""
    import pandas as pd

    from grokscope.analyse.concepts import SUMMARY_COLUMNS, concept_summary

    table = pd.DataFrame({"phenomenon": ["a"], "layer": [1], "phase": [""], "step": [0],
                          **{c: [0.5] for c in SUMMARY_COLUMNS}})
    out = concept_summary(table)
    assert out.empty and {"phenomenon", "layer", "phase", "auroc", "auroc_low", "eff_rank_high"} <= set(out.columns)


def test_batched_singular_values_equal_lapack_svd_of_each_matrix():
    from grokscope.analyse.concept import batched_singular_values

    rng = np.random.default_rng(4)
    for shape in ((5, 8, 20), (3, 30, 6)):
        stack = rng.normal(size=shape)
        got = batched_singular_values(stack)
        for k in range(shape[0]):
            ref = np.linalg.svd(stack[k] - stack[k].mean(0), compute_uv=False)
            np.testing.assert_allclose(got[k][: ref.size], ref, atol=1e-8)
