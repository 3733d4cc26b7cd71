"""Benchmark: ``grokscope analyse`` on a synthetic study of 67,000 pairs x Pythia's 154 checkpoints
(12 phenomena, 67 paradigms x 1,000 pairs -- BLiMP's size; steps 0, 1, 2, 4, ..., 512, 1000, ...,
143000), written per docs/CONTRACTS.md by :func:`grokscope.analyse.simulate.simulate_study`.
Acceptance (issue #20): the whole analysis with the defaults of ``[analyse]`` (curves with bootstrap
intervals at all / phenomenon / paradigm level, onsets, adjusted GLMs, permutation tests, matched
control, support, probes on ``probe_pairs`` pairs, concept vectors, heads; ablation needs a real
model and is off) in under 15 minutes and 8 GB of peak memory here; ``--checkpoints 50`` is the
first version's smaller study (limit 120 s).

The machine is shared and noisy, so the script also times a reference computation in the same
run -- one float32 matrix product of the bootstrap's size ([1000, 67000] x [67000, 100]) -- and
prints the ratio analysis time / reference time.

    python bench/bench_analyse.py [--checkpoints pythia|50] [--out runs/bench_analyse] [--regenerate]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from grokscope.analyse.simulate import SimPhenomenon, simulate_study
from grokscope.core.config import AnalyseSection
from grokscope.core.store import Study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_exposure_scale import TreeSampler  # noqa: E402 - bench/ siblings, imported by path

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


def study_steps(which: str) -> np.ndarray:
    from grokscope.analyse.simulate import default_steps
    from grokscope.core.checkpoints import pythia_steps

    return np.asarray(pythia_steps() if which == "pythia" else default_steps(), dtype=np.int64)


def build(out: Path, steps: np.ndarray, seed: int = 0) -> float:
    """Write the study (one phenomenon call per paradigm count group). Returns seconds."""
    t0 = time.perf_counter()
    simulate_study(out, phenomena=PHENOMENA, paradigms_per_phenomenon=PARADIGMS, n_pairs_per_paradigm=1000,
                   steps=steps, hidden_pairs=2000, seed=seed)
    return time.perf_counter() - t0


def reference_seconds() -> float:
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(1000, 67000)).astype(np.float32)
    x = (rng.random((67000, 100)) < 0.5).astype(np.float32)
    t0 = time.perf_counter()
    _ = w @ x
    return time.perf_counter() - t0


def main() -> None:
    import resource

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", choices=("pythia", "50"), default="pythia",
                    help="Pythia's 154 steps (default) or the 50 of simulate.default_steps")
    ap.add_argument("--out", default=None, help="study directory (default runs/bench_analyse[_50])")
    ap.add_argument("--probe-pairs", type=int, default=None, help="default: [analyse] probe_pairs")
    ap.add_argument("--regenerate", action="store_true")
    args = ap.parse_args()
    steps = study_steps(args.checkpoints)
    out = Path(args.out or REPO / "runs" / ("bench_analyse" if args.checkpoints == "pythia" else "bench_analyse_50"))
    study = Study(out)
    if args.regenerate or study.scored_steps() != steps.tolist():
        print(f"writing the synthetic study to {out} ...", flush=True)
        print(f"  generated in {build(out, steps):.1f} s")
    from grokscope.analyse.stage import analyse_study, load_inputs

    inputs = load_inputs(study)
    n, T = inputs.correct.shape
    del inputs
    print(f"study: {n} pairs x {T} checkpoints")
    ref = reference_seconds()
    a = AnalyseSection(ablation=False, **({"probe_pairs": args.probe_pairs} if args.probe_pairs else {}))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    sampler = TreeSampler(os.getpid())  # this process and the analysis' worker, allocated memory (RssAnon)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = analyse_study(study, a, force=True, progress=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    sampler.stop.set()
    sampler.join()
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # the inside-the-model worker: reaped, so its CPU counts
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += kids.ru_utime + kids.ru_stime
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tree_peak = sampler.peak / 2**30
    limit = 900 if args.checkpoints == "pythia" else 120
    print(summary.splitlines()[-1])
    print(f"analyse: {secs:.1f} s wall, {cpu:.1f} s CPU (limit {limit} s) | peak RSS {peak:.2f} GiB "
          f"(before: {rss0:.2f}; with the worker process, sampled RssAnon: {tree_peak:.2f}; limit 8 GiB) | reference matmul {ref:.2f} s | ratio {secs / ref:.1f}x")
    ok = secs < limit and max(peak, tree_peak) < 8
    print("PASS" if ok else "FAIL: over the time or memory limit")


if __name__ == "__main__":
    main()
