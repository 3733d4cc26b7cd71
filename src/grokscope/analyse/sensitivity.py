"""k sensitivity: the verdicts (timing rows) at several ``min_count`` thresholds in one run.

A pair is proxy-train at checkpoint t when its critical phrase occurred at least k times in
window(t). The verdicts are recomputed with :func:`grokscope.analyse.dynamics.analyse_dynamics`
for each k of ``[analyse] sensitivity_min_counts`` (default 1, 5, 20) on the same pairs, seeds
and criterion, and stacked with a ``min_count`` column, so the report can set them side by side.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from grokscope.analyse import dynamics as dy

K_COLUMNS = ("min_count", "level", "group", "comparison", "fit_step", "gen_step", "delay_steps", "delay_ci_low",
             "delay_ci_high", "p_lead", "status")


def k_sensitivity(table: dy.PairTable, opts: dy.DynamicsOptions, ks: Sequence[int],
                  done: dy.DynamicsResult | None = None) -> pd.DataFrame:
    """Timing rows (levels all and phenomenon, proxy and matched comparisons) at every k of ``ks``;
    ``done``: the result already computed at ``opts.min_count`` (not recomputed)."""
    frames = []
    for k in sorted({int(k) for k in ks}):
        if done is not None and k == opts.min_count:
            timing = done.timing
        else:
            timing = dy.analyse_dynamics(table, dataclasses.replace(opts, min_count=k),
                                         levels=("all", "phenomenon")).timing
        sub = timing[timing["level"].isin(["all", "phenomenon"]) & timing["comparison"].isin(["proxy", "matched"])]
        frames.append(sub.assign(min_count=k))
    if not frames:
        return pd.DataFrame(columns=list(K_COLUMNS))
    cols = [c for c in K_COLUMNS if c in frames[0].columns or c == "min_count"]
    return pd.concat(frames, ignore_index=True)[cols]
