"""Concept-vector probes against known spectra, hand-worked examples and sklearn itself."""
from __future__ import annotations

import numpy as np
import pytest

from grokscope.analyse import probes as pr


def _matrix_with_singular_values(s: np.ndarray, n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(d, len(s))))
    return u @ np.diag(s) @ v.T


def test_participation_ratio_of_known_spectrum():
    n, d = 200, 40
    # k equal singular values -> PR = k exactly
    for k in (1, 3, 10):
        x = _matrix_with_singular_values(np.ones(k) * 5.0, n, d, seed=k)
        assert pr.participation_ratio(pr.spectrum(x)) == pytest.approx(k, rel=1e-9)
    # general spectrum: eigenvalues are s^2 / n; PR = (sum s^2)^2 / sum s^4
    s = np.array([4.0, 2.0, 1.0, 0.5])
    x = _matrix_with_singular_values(s, n, d)
    lam = pr.spectrum(x)
    np.testing.assert_allclose(lam[:4], s**2 / n, rtol=1e-9)
    assert pr.participation_ratio(lam) == pytest.approx((s**2).sum() ** 2 / (s**4).sum(), rel=1e-9)


def test_components_for_90_percent_hand_worked():
    assert pr.n_components(np.array([5.0, 3.0, 1.0, 1.0]), 0.9) == 3  # 0.5, 0.8, 0.9 -> 3
    assert pr.n_components(np.array([1.0, 9.0]), 0.9) == 1  # sorted internally
    assert pr.n_components(np.array([1.0, 1.0, 1.0, 1.0]), 0.9) == 4
    assert pr.n_components(np.zeros(3), 0.9) == 0
    s = np.array([3.0, 2.0, 1.0])
    x = _matrix_with_singular_values(s, 50, 10)
    assert pr.n_components(pr.spectrum(x), 0.9) == 2  # 9/14 = 0.64, 13/14 = 0.93


def test_meandiff_hand_worked():
    # 1-D: good states at +1, +3; bad at -1, +2. Fold 0 = pair 0, fold 1 = pair 1.
    good = np.array([[1.0], [3.0]])
    bad = np.array([[-1.0], [2.0]])
    folds = np.array([0, 1])
    # test pair 0: trained on pair 1 -> w = 1, threshold 2.5: good 1 -> bad (wrong), bad -1 -> bad (right)
    # test pair 1: trained on pair 0 -> w = 2, threshold 0: good 3 -> good, bad 2 -> good (wrong)
    assert pr.meandiff_accuracy(good, bad, folds) == pytest.approx(0.5)


def test_logreg_probe_equals_sklearn_cross_val_with_pair_folds():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    n, d = 120, 8
    z = rng.normal(size=(n, d))
    u = np.eye(d)[0]
    good, bad = z + 0.4 * u, z - 0.4 * u + 0.5 * rng.normal(size=(n, d))
    folds = pr.pair_folds(n, 4, rng)
    acc, std = pr.logreg_accuracy(good, bad, folds)
    x = np.concatenate([good, bad])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    scores = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=200)), x, y,
                             cv=PredefinedSplit(np.concatenate([folds, folds])))
    assert acc == pytest.approx(scores.mean(), abs=1e-12)
    assert std == pytest.approx(scores.std(), abs=1e-12)


def test_probe_checkpoint_separable_vs_null():
    rng = np.random.default_rng(2)
    n, layers, d = 200, 3, 16
    z = rng.normal(size=(n, layers, d))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    hidden = np.stack([z, z], axis=1) + 0.1 * rng.normal(size=(n, 2, layers, d))
    hidden[:, 0, 2] += 3.0 * u  # layer 2 carries the concept
    hidden[:, 1, 2] -= 3.0 * u
    out = pr.probe_checkpoint(hidden.astype(np.float32), 5, seed=0)
    assert [p.layer for p in out] == [0, 1, 2]
    assert out[2].logreg_acc > 0.95 and out[2].meandiff_acc > 0.95
    assert out[0].logreg_acc < 0.65 and abs(out[0].meandiff_acc - 0.5) < 0.15
    assert out[2].participation_ratio < 1.2 and out[2].n_components_90 == 1  # one direction
    assert out[0].participation_ratio > d / 2  # isotropic noise


def test_phase_of():
    assert list(pr.phase_of(np.array([0, 5, 10, 20]), 10)) == ["before", "before", "after", "after"]
    assert list(pr.phase_of(np.array([0, 5]), None)) == ["", ""]


def test_word_folds_keep_each_word_in_one_fold_and_probe_uses_them():
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in rng.integers(0, 12, size=90)])
    folds = pr.word_folds(words, 4, np.random.default_rng(0))
    for w in np.unique(words):
        assert len(set(folds[words == w])) == 1
    assert set(folds) == {0, 1, 2, 3}
    n, d = 90, 6
    z = rng.normal(size=(n, 2, 2, d))
    z[:, 0, 1, 0] += 1.0
    out = pr.probe_checkpoint(z.astype(np.float32), 4, seed=0, words=words)
    good, bad = z[:, 0, 1].astype(np.float32), z[:, 1, 1].astype(np.float32)
    expected = pr.logreg_accuracy(good, bad, pr.word_folds(words, 4, np.random.default_rng(0)))
    assert out[1].logreg_acc == pytest.approx(expected[0], abs=1e-9)
