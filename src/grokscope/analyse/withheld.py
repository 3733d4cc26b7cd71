"""The ``withheld`` comparison: kept vs withheld phrases, assigned by a seeded coin before training
(``grokscope prepare --withhold``), so exposure is randomised and the difference is causal.

Arms are intention-to-treat: a pair is in the withheld arm when its critical phrase was drawn by
the coin (``tokens/withheld.parquet``), whatever else the removal took with it. Per group (all
pairs; each paradigm) the comparison reports each arm's accuracy curve, its onset (the analysis's
study's onset rule, :func:`arm_onsets`: for ``halfrise`` one threshold per group from the
pooled curve of both arms), the delay
(withheld onset − kept onset, in steps) and the effect of exposure (mean over checkpoints of kept −
withheld accuracy), with percentile intervals of a **cluster bootstrap**: critical phrases (the
unit the coin assigned) are resampled within arm, with
:func:`grokscope.analyse.resampling.bootstrap_weights` over phrases, and every pair carries the
weight of its phrase.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grokscope.analyse.dynamics import Criterion, onset_index
from grokscope.analyse.onset import first_crossing, first_reach, floor_and_ceiling, monotone_fit
from grokscope.analyse.resampling import bootstrap_weights, percentile_interval
from grokscope.core import store
from grokscope.core.errors import DataError


def withheld_arms(tokens_dir: Path, phrases: pd.DataFrame) -> np.ndarray | None:
    """Per pair of ``phrases``: 1.0 withheld, 0.0 kept, NaN not in the coin's table; None when the
    stream's manifest records no withholding."""
    manifest_path = tokens_dir / "manifest.json"
    if not manifest_path.exists():
        return None
    entry = store.read_json(manifest_path).get("withhold")
    if not entry:
        return None
    path = tokens_dir / entry.get("table", "withheld.parquet")
    if not path.exists():
        raise DataError(f"{manifest_path} records a withheld set but {path} is missing; re-run grokscope prepare")
    table = pd.read_parquet(path)
    coin = dict(zip(table["phrase"].astype(str), table["withheld"].astype(float)))
    keys = phrases["critical_phrase"].fillna("").astype(str).str.strip()
    return np.array([coin.get(k, np.nan) for k in keys], dtype=np.float64)


def _arm_curves(w: np.ndarray, correct: np.ndarray, arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted accuracy ``[B, T]`` and weight ``[B]`` of the pairs with ``arm`` True."""
    wa = w * arm[None, :]  # [B, n]
    n = wa.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (wa @ correct) / n[:, None]
    return acc, n


def _delay(steps: np.ndarray, k: np.ndarray, h: np.ndarray) -> np.ndarray:
    """withheld onset − kept onset in steps; +inf when only kept reaches; NaN when kept never does."""
    out = np.full(k.shape, np.nan)
    both = (k >= 0) & (h >= 0)
    out[both] = steps[h[both]] - steps[k[both]]
    out[(k >= 0) & (h < 0)] = np.inf
    return out


def arm_onsets(acc: np.ndarray, n: np.ndarray, pooled: np.ndarray, n_pooled: np.ndarray, tokens: np.ndarray,
               criterion: Criterion) -> np.ndarray:
    """Onset index ``[B]`` (-1: never) of one arm's curves ``acc`` ``[B, T]`` (``n`` ``[B]`` pairs) under the
    study's rule: ``halfrise`` crosses half-way between the floor and ceiling of the group's pooled curve
    ``pooled`` ``[B, T]`` (both arms, ``n_pooled`` ``[B]``; one threshold per replicate, shared by the arms),
    ``paper`` first reaches ``level``, the others as :func:`~grokscope.analyse.dynamics.onset_index`."""
    n_t = np.broadcast_to(n[:, None], acc.shape)
    if criterion.mode == "halfrise":
        floor, ceil = floor_and_ceiling(pooled * n_pooled[:, None], n_pooled[:, None], tokens,
                                        criterion.floor_checkpoints, criterion.ceiling_share, criterion.min_pairs)
        return first_crossing(monotone_fit(acc, n_t, criterion.min_pairs), 0.5 * (floor + ceil))
    if criterion.mode == "paper":
        return first_reach(acc, n_t, criterion.level, criterion.min_pairs)
    return onset_index(acc, n_t, criterion)


def compare_group(correct: np.ndarray, withheld: np.ndarray, cluster: np.ndarray, steps: np.ndarray,
                  criterion: Criterion, n_boot: int, ci: float, rng: np.random.Generator,
                  tokens: np.ndarray | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """One group: ``correct`` ``[n, T]`` bool, ``withheld`` ``[n]`` bool, ``cluster`` ``[n]`` phrase ids,
    ``tokens`` ``[T]`` tokens seen at each step (default: ``steps``, the same log-token ceiling when tokens
    are proportional to steps). Returns the summary row and the curves (arm, step, accuracy, n_pairs)."""
    correct = correct.astype(np.float64)
    _, cl = np.unique(cluster, return_inverse=True)
    cl_arm = np.zeros(cl.max() + 1, dtype=np.int64)
    cl_arm[cl] = withheld.astype(np.int64)
    ones = np.ones((1, len(cl_arm)), dtype=np.float32)
    w_cl = np.concatenate([ones, bootstrap_weights(cl_arm, n_boot, rng)]) if n_boot else ones  # [1 + B, n_cl]
    w = w_cl[:, cl].astype(np.float64)  # every pair carries its phrase's weight
    acc_k, n_k = _arm_curves(w, correct, ~withheld)
    acc_h, n_h = _arm_curves(w, correct, withheld)
    acc_all, n_all = _arm_curves(w, correct, np.ones(len(withheld), dtype=bool))
    tok = steps if tokens is None else tokens
    on_k = arm_onsets(acc_k, n_k, acc_all, n_all, tok, criterion)
    on_h = arm_onsets(acc_h, n_h, acc_all, n_all, tok, criterion)
    delay = _delay(steps, on_k, on_h)
    effect = np.nanmean(acc_k - acc_h, axis=1)
    d_lo, d_hi = percentile_interval(delay[1:], ci) if n_boot else (np.nan, np.nan)
    e_lo, e_hi = percentile_interval(effect[1:], ci) if n_boot else (np.nan, np.nan)
    row = {"n_kept": int((~withheld).sum()), "n_withheld": int(withheld.sum()),
           "phrases_kept": int((cl_arm == 0).sum()), "phrases_withheld": int((cl_arm == 1).sum()),
           "kept_onset_step": int(steps[on_k[0]]) if on_k[0] >= 0 else None,
           "withheld_onset_step": int(steps[on_h[0]]) if on_h[0] >= 0 else None,
           "delay_steps": float(delay[0]), "delay_ci_low": float(d_lo), "delay_ci_high": float(d_hi),
           "effect": float(effect[0]), "effect_ci_low": float(e_lo), "effect_ci_high": float(e_hi),
           "kept_final_acc": float(acc_k[0, -1]), "withheld_final_acc": float(acc_h[0, -1])}
    curves = pd.concat([pd.DataFrame({"arm": arm, "step": steps, "accuracy": acc[0], "n_pairs": int(n[0])})
                        for arm, acc, n in (("kept", acc_k, n_k), ("withheld", acc_h, n_h))], ignore_index=True)
    return row, curves


def withheld_comparison(correct: np.ndarray, arms: np.ndarray, phrase: np.ndarray, uid: np.ndarray,
                        steps: np.ndarray, criterion: Criterion, n_boot: int, ci: float,
                        seed: int, tokens: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The comparison for all pairs and per paradigm (pairs with NaN ``arms`` left out; a group
    needs pairs in both arms). Returns ``(summary, curves)`` tables."""
    rng = np.random.default_rng([seed, 19])
    ok = ~np.isnan(arms)
    rows, frames = [], []
    groups = [("all", "all", ok)] + [("paradigm", str(u), ok & (uid == u)) for u in sorted(set(uid[ok].tolist()))]
    for level, group, mask in groups:
        held = arms[mask] == 1.0
        if held.all() or not held.any():
            continue
        row, curves = compare_group(correct[mask], held, phrase[mask], steps, criterion, n_boot, ci, rng, tokens)
        rows.append({"level": level, "group": group, **row})
        frames.append(curves.assign(level=level, group=group))
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    curves = pd.concat(frames, ignore_index=True)[["level", "group", "arm", "step", "accuracy", "n_pairs"]]
    return pd.DataFrame(rows), curves


def summary_line(summary: pd.DataFrame) -> str:
    """One line for the terminal: the all-pairs row."""
    if summary.empty:
        return "withheld: no group with pairs in both arms"
    r = summary.iloc[0]
    f = lambda v: "—" if v is None or pd.isna(v) else f"{v:g}"  # noqa: E731
    return (f"withheld (randomised): {r['n_kept']} kept / {r['n_withheld']} withheld pairs; onset kept "
            f"{f(r['kept_onset_step'])}, withheld {f(r['withheld_onset_step'])}; delay {f(r['delay_steps'])} "
            f"[{f(r['delay_ci_low'])}, {f(r['delay_ci_high'])}]; effect {r['effect']:+.3f} "
            f"[{r['effect_ci_low']:+.3f}, {r['effect_ci_high']:+.3f}]")
