"""Onsets of accuracy curves: when a side of a comparison has learned a group's contrast.

Modes (``Criterion.mode`` in :mod:`grokscope.analyse.dynamics`):

* ``halfrise`` (default, works at every scale): per group one **shared threshold** half-way
  between the *floor* (pooled accuracy of all the group's pairs over its first
  ``floor_checkpoints`` defined checkpoints) and the *ceiling* (pooled accuracy over the last
  ``ceiling_share`` of the run in log10 tokens). Each side's onset is the first checkpoint where a
  monotone fit of its curve -- isotonic regression weighted by the pairs behind each point
  (binomial weights, SciPy's pool-adjacent-violators) -- reaches the threshold. The group is
  **not learned** when the bootstrap interval of the rise (ceiling - floor) includes 0.
* ``paper``: the rule of Muckatira et al.: first checkpoint where accuracy reaches ``level``
  (0.8); a group whose val side never reaches it is *dropped*.
* ``level`` / ``fraction`` / ``both``: "reaches and stays" rules (:func:`onset_index`).

A side is **lost** when, after its onset, its accuracy falls significantly below the threshold
it crossed: the first of two consecutive later checkpoints whose bootstrap upper bounds are below it.
Shapes: ``T`` checkpoints, ``B`` bootstrap replicates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.analyse.resampling import percentile_interval

MODES = ("halfrise", "paper", "level", "fraction", "both")


def monotone_fit(acc: np.ndarray, n: np.ndarray, min_pairs: int) -> np.ndarray:
    """Isotonic (non-decreasing) fit of ``acc`` ``[..., T]`` weighted by ``n`` ``[..., T]``.

    Checkpoints with fewer than ``min_pairs`` pairs or NaN accuracy are left out of the fit and
    are NaN in the result. Binomial weighting: a point's weight is its number of pairs (the
    inverse of its variance up to the factor p(1-p))."""
    from scipy.optimize import isotonic_regression

    acc = np.asarray(acc, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), acc.shape)
    out = np.full(acc.shape, np.nan)
    T = acc.shape[-1]
    flat_a, flat_n, flat_o = acc.reshape(-1, T), n.reshape(-1, T), out.reshape(-1, T)
    for r in range(flat_a.shape[0]):
        ok = ~np.isnan(flat_a[r]) & (flat_n[r] >= min_pairs)
        if ok.any():
            flat_o[r, ok] = isotonic_regression(flat_a[r, ok], weights=flat_n[r, ok], increasing=True).x
    return out


def first_crossing(fit: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """First index where ``fit`` ``[..., T]`` (NaN = undefined) is >= ``threshold`` ``[...]``; -1 if never."""
    thr = np.asarray(threshold, dtype=np.float64)[..., None]
    with np.errstate(invalid="ignore"):
        hit = fit >= thr - 1e-12
    return np.where(hit.any(axis=-1), np.argmax(hit, axis=-1), -1)


def first_reach(acc: np.ndarray, n: np.ndarray, level: float, min_pairs: int) -> np.ndarray:
    """``paper`` rule: first defined checkpoint with accuracy >= ``level`` (no "stays"); -1 if never."""
    acc = np.asarray(acc, dtype=np.float64)
    defined = ~np.isnan(acc) & (np.broadcast_to(n, acc.shape) >= min_pairs)
    return first_crossing(np.where(defined, acc, np.nan), level)


def ceiling_mask(tokens: np.ndarray, share: float) -> np.ndarray:
    """``[T]`` checkpoints in the last ``share`` of the run measured in log10 tokens (tokens > 0)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    pos = tokens > 0
    if not pos.any():
        return np.arange(tokens.size) >= tokens.size - max(1, int(np.ceil(share * tokens.size)))
    lt = np.log10(np.where(pos, tokens, 1.0))
    lo, hi = lt[pos].min(), lt[pos].max()
    return pos & (lt >= hi - share * (hi - lo) - 1e-12)


def floor_and_ceiling(num: np.ndarray, den: np.ndarray, tokens: np.ndarray, floor_checkpoints: int,
                      ceiling_share: float, min_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled floor and ceiling accuracy of a group from its correct counts ``num`` and pairs ``den``
    ``[..., T]``: pair-weighted accuracy over the first ``floor_checkpoints`` checkpoints with at least
    ``min_pairs`` pairs, and over the :func:`ceiling_mask` checkpoints. Returns ``([...], [...])``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    defined = den >= min_pairs
    rank = np.cumsum(defined, axis=-1)
    first = defined & (rank <= floor_checkpoints)
    last = defined & ceiling_mask(tokens, ceiling_share)
    with np.errstate(invalid="ignore", divide="ignore"):
        floor = (num * first).sum(-1) / (den * first).sum(-1)
        ceil = (num * last).sum(-1) / (den * last).sum(-1)
    return floor, ceil


def lost_index(onset: int, ci_high: np.ndarray, threshold: float, run: int = 2) -> int:
    """First checkpoint after ``onset`` starting ``run`` consecutive checkpoints whose upper interval
    bounds are below ``threshold`` (a side that learned and fell back); -1 if none. Requiring a run
    keeps one noisy checkpoint among many from un-learning a side."""
    if onset < 0 or not np.isfinite(threshold):
        return -1
    with np.errstate(invalid="ignore"):
        below = (np.asarray(ci_high)[onset + 1:] < threshold).astype(np.int64)
    if below.size < run:
        return -1
    runs = np.convolve(below, np.ones(run, np.int64), mode="valid") == run  # [len - run + 1]
    return int(onset + 1 + np.argmax(runs)) if runs.any() else -1


@dataclass
class Onsets:
    """Onsets of the two sides of one comparison, observed (``fit``, ``gen``: index or -1) and per
    bootstrap replicate (``fit_b``, ``gen_b`` ``[B]``), with the group's threshold and rise."""

    fit: int
    gen: int
    fit_b: np.ndarray
    gen_b: np.ndarray
    threshold: float = np.nan
    floor: float = np.nan
    ceiling: float = np.nan
    rise_ci: tuple[float, float] = (np.nan, np.nan)

    @property
    def not_learned(self) -> bool:
        """The rise's interval includes 0 (or there is no rise to measure)."""
        lo = self.rise_ci[0]
        return bool(np.isnan(lo) or lo <= 0)


@dataclass
class Pooled:
    """The group's pooled curve: correct counts and pairs, observed ``[T]`` and per replicate ``[B, T]``."""

    num: np.ndarray
    den: np.ndarray
    num_b: np.ndarray
    den_b: np.ndarray


def halfrise_onsets(acc_tr: np.ndarray, n_tr: np.ndarray, acc_va: np.ndarray, n_va: np.ndarray,
                    boot_tr: np.ndarray, boot_va: np.ndarray, pooled: Pooled, tokens: np.ndarray,
                    floor_checkpoints: int, ceiling_share: float, min_pairs: int, ci: float,
                    max_boot: int) -> Onsets:
    """``halfrise`` onsets of both sides; the threshold is recomputed on every replicate (from the
    replicate's pooled curve), onsets in replicates use the first ``max_boot`` replicates."""
    floor, ceil = floor_and_ceiling(pooled.num, pooled.den, tokens, floor_checkpoints, ceiling_share, min_pairs)
    thr = float(0.5 * (floor + ceil))
    fb, cb = floor_and_ceiling(pooled.num_b, pooled.den_b, tokens, floor_checkpoints, ceiling_share, min_pairs)
    rise_lo, rise_hi = percentile_interval(cb - fb, ci) if np.isfinite(cb - fb).any() else (np.nan, np.nan)
    fit = int(first_crossing(monotone_fit(acc_tr, n_tr, min_pairs), thr))
    gen = int(first_crossing(monotone_fit(acc_va, n_va, min_pairs), thr))
    m = min(max_boot, boot_tr.shape[0])
    thr_b = 0.5 * (fb + cb)[:m]
    fit_b = first_crossing(monotone_fit(boot_tr[:m], n_tr[None, :], min_pairs), thr_b)
    gen_b = first_crossing(monotone_fit(boot_va[:m], n_va[None, :], min_pairs), thr_b)
    return Onsets(fit, gen, fit_b, gen_b, thr, float(floor), float(ceil), (float(rise_lo), float(rise_hi)))


def onset_delays(steps: np.ndarray, tokens: np.ndarray, fit_b: np.ndarray, gen_b: np.ndarray,
                 ) -> dict[str, np.ndarray]:
    """Per replicate delays in steps and log10 tokens: NaN where train never fits, +inf where val never
    generalises (the delay is censored above)."""
    steps = np.asarray(steps, dtype=np.float64)
    lt = np.log10(np.where(np.asarray(tokens) > 0, tokens, np.nan).astype(np.float64))
    out = {}
    for key, axis in (("steps", steps), ("log10_tokens", lt)):
        d = axis[np.clip(gen_b, 0, None)] - axis[np.clip(fit_b, 0, None)]
        out[key] = np.where(fit_b < 0, np.nan, np.where(gen_b < 0, np.inf, d))
    return out


def log10_delay(tokens: np.ndarray, fit: int, gen: int) -> float:
    """log10(gen tokens) - log10(fit tokens); NaN if either is missing or at 0 tokens."""
    if fit < 0 or gen < 0 or tokens[fit] <= 0 or tokens[gen] <= 0:
        return float("nan")
    return float(np.log10(tokens[gen]) - np.log10(tokens[fit]))
