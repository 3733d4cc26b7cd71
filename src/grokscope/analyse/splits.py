"""Proxy splits as arrays: entry indices (the checkpoint from which a pair is on the train side),
membership masks, exposure bins, quantile strata and direct standardisation over strata.
Pure NumPy; shapes: ``n`` pairs, ``T`` checkpoints, ``nb`` strata."""
from __future__ import annotations

import numpy as np

EXPOSURE_BINS: tuple[tuple[str, int, float], ...] = (
    ("bin_0", 0, 0), ("bin_1", 1, 1), ("bin_2-9", 2, 9), ("bin_10-99", 10, 99), ("bin_100+", 100, np.inf),
)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


# ---------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------
def entry_index(counts: np.ndarray, k: int) -> np.ndarray:
    """``[n, T]`` cumulative counts -> ``[n]`` first checkpoint index with count >= k (T = never)."""
    reached = np.asarray(counts) >= k
    T = reached.shape[1]
    return np.where(reached.any(axis=1), np.argmax(reached, axis=1), T)


def train_mask(entry: np.ndarray, T: int) -> np.ndarray:
    """``[n]`` entry indices -> ``[n, T]`` float32 membership of the train side."""
    return (np.asarray(entry)[:, None] <= np.arange(T)[None, :]).astype(np.float32)


def exposure_bin_masks(counts: np.ndarray) -> list[np.ndarray]:
    """``[n, T]`` counts in window(t) -> one ``[n, T]`` float32 mask per exposure bin."""
    return [((counts >= lo) & (counts <= hi)).astype(np.float32) for _, lo, hi in EXPOSURE_BINS]


def quantile_strata(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``values`` into at most ``n_bins`` quantile bins (ties never straddle a bin edge)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    return np.searchsorted(edges[1:-1], values, side="right").astype(np.int64)


def stratum_sizes(mask: np.ndarray, strata: np.ndarray, n_strata: int) -> np.ndarray:
    """``[n, T]`` 0/1 mask, ``[n]`` strata -> ``[n_strata, T]`` column sums per stratum."""
    out = np.zeros((n_strata, mask.shape[1]))
    for b in range(n_strata):
        out[b] = mask[strata == b].sum(axis=0)
    return out


def standardisation_weights(n_tr: np.ndarray, n_va: np.ndarray) -> np.ndarray:
    """Direct standardisation: ``[nb, T]`` train/val sizes per stratum -> pi_b(t), the train
    distribution over the strata that hold both sides at t (0 elsewhere; columns sum to 1 or 0)."""
    both = (n_tr > 0) & (n_va > 0)
    pi = np.where(both, n_tr, 0.0)
    return np.nan_to_num(ratio(pi, pi.sum(axis=0, keepdims=True)))
