"""Benchmark: ``grokscope analyse`` on a synthetic study of 67,000 pairs x 50 checkpoints
(12 phenomena, 67 paradigms x 1,000 pairs -- BLiMP's size), written per docs/CONTRACTS.md by
:func:`grokscope.analyse.simulate.simulate_study`. Acceptance: the whole analysis (curves with bootstrap
intervals at all / phenomenon / paradigm level, timing with permutation tests, matched control,
probes on ``probe_pairs`` pairs, heads) in under 120 s here.

The machine is shared and noisy, so the script also times a reference computation in the same
run -- one float32 matrix product of the bootstrap's size ([1000, 67000] x [67000, 100]) -- and
prints the ratio analysis time / reference time.

    python bench/bench_analyse.py [--out runs/bench_analyse] [--probe-pairs 2000] [--regenerate]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from grokscope.analyse.simulate import SimPhenomenon, simulate_study
from grokscope.core.config import AnalyseSection
from grokscope.core.store import Study

REPO = Path(__file__).resolve().parents[1]
PHENOMENA = [
    SimPhenomenon(name, fit_step=fit, delay=delay)
    for name, fit, delay in [
        ("anaphor_agreement", 2000, 8000), ("argument_structure", 4000, 0), ("binding", 2000, 4000),
        ("control_raising", 8000, 0), ("determiner_noun_agreement", 1000, 6000), ("ellipsis", 4000, 10000),
        ("filler_gap_dependency", 8000, 8000), ("irregular_forms", 1000, 0), ("island_effects", 16000, 12000),
        ("npi_licensing", 4000, 0), ("quantifiers", 2000, 2000), ("subject_verb_agreement", 2000, 16000),
    ]
]
PARADIGMS = [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 1]  # 67 paradigms in 12 phenomena


def build(out: Path, seed: int = 0) -> float:
    """Write the study (one phenomenon call per paradigm count group). Returns seconds."""
    t0 = time.perf_counter()
    simulate_study(out, phenomena=PHENOMENA, paradigms_per_phenomenon=PARADIGMS, n_pairs_per_paradigm=1000,
                   hidden_pairs=2000, seed=seed)
    return time.perf_counter() - t0


def reference_seconds() -> float:
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(1000, 67000)).astype(np.float32)
    x = (rng.random((67000, 100)) < 0.5).astype(np.float32)
    t0 = time.perf_counter()
    _ = w @ x
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_analyse"))
    ap.add_argument("--probe-pairs", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--regenerate", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    study = Study(out)
    if args.regenerate or len(study.scored_steps()) != 50:
        print(f"writing the synthetic study to {out} ...", flush=True)
        print(f"  generated in {build(out):.1f} s")
    from grokscope.analyse.stage import analyse_study, load_inputs

    inputs = load_inputs(study)
    n, T = inputs.correct.shape
    print(f"study: {n} pairs x {T} checkpoints")
    ref = reference_seconds()
    a = AnalyseSection(probe_pairs=args.probe_pairs, n_boot=args.n_boot, n_perm=args.n_perm, ablation=False)
    t0 = time.perf_counter()
    summary = analyse_study(study, a, force=True, progress=False)
    secs = time.perf_counter() - t0
    print(summary.splitlines()[-1])
    print(f"analyse: {secs:.1f} s (limit 120 s) | reference matmul {ref:.2f} s | ratio {secs / ref:.1f}x")
    print("PASS" if secs < 120 else "FAIL: over 120 s")


if __name__ == "__main__":
    main()
