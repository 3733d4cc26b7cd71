"""Calibration of the dynamics statistics on simulated data (figures for docs/analysis.md):

1. false-positive rate: share of null data sets (no planted delay) with status "delayed"
   and with p_lead < alpha;
2. planted-delay recovery: share of data sets whose detected fit and generalisation steps
   are within one checkpoint of the planted ones, for several delays;
3. coverage of the 95% bootstrap interval of a split's accuracy (true accuracy known).

    python bench/calibrate_dynamics.py [--sets 200]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from grokscope.analyse import dynamics as dy


def planted(rng, delay_idx, n=400, T=30, fit_idx=8):
    steps = np.arange(T) * 100
    first = np.where(rng.random(n) < 0.6, rng.integers(0, T, size=n), T + 1)
    counts = (np.arange(T)[None] >= first[:, None]).astype(np.int64)
    t = np.arange(T)[None]
    learned = ((t >= fit_idx) & (counts >= 1)) | (t >= fit_idx + delay_idx)
    correct = rng.random((n, T)) < np.where(learned, 0.95, 0.5)
    uid = np.array([f"u{i % 4}" for i in range(n)], dtype=object)
    return dy.PairTable(steps, steps * 1000, correct, counts, rng.random(n), uid, np.array(["p"] * n, dtype=object)), correct, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    opts = dy.DynamicsOptions(n_boot=200, n_perm=199)
    for delay in (0, 1, 2, 5):
        ok, delayed, p_small, covered, cov_n = 0, 0, 0, 0, 0
        for s in range(args.sets):
            rng = np.random.default_rng([delay, s])
            table, correct, counts = planted(rng, delay)
            res = dy.analyse_dynamics(table, opts, levels=("all",))
            row = res.timing[res.timing["comparison"] == "proxy"].iloc[0]
            steps = list(table.steps)
            if not (pd.isna(row["fit_step"]) or pd.isna(row["gen_step"])):
                fi, gi = steps.index(row["fit_step"]), steps.index(row["gen_step"])
                ok += abs(fi - 8) <= 1 and abs(gi - (8 + delay)) <= 1
            delayed += row["status"] == "delayed"
            p_small += row["p_lead"] < 0.05
            # coverage: proxy_train accuracy at the last checkpoint has true value 0.95
            cur = res.curves.query("split == 'proxy_train' and step == @steps[-1]").iloc[0]
            covered += cur["ci_low"] <= 0.95 <= cur["ci_high"]
            cov_n += 1
        print(f"planted delay {delay} checkpoints: fit & gen within one checkpoint {ok / args.sets:.3f}; "
              f"status delayed {delayed / args.sets:.3f}; p_lead<0.05 {p_small / args.sets:.3f}; "
              f"95% CI coverage of proxy_train accuracy {covered / cov_n:.3f}  ({args.sets} sets)", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
