"""What looking inside the model costs on an analysed study (docs/analysis.md, #18).

Runs ``grokscope analyse STUDY --force`` in fresh processes with and without the inside-the-model
parts and prints wall and CPU seconds with the ratio to the verdicts-only run measured in the same
run; then times single-head ablation of every head on ``--sweep-pairs`` pairs of the last checkpoint.

    python bench/bench_inside_cost.py runs/studies/corpus_cpu [--repeats 2] [--sweep-pairs 1000]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

COMMON = ["--force", "--n-boot", "500", "--ablation-pairs", "500", "--ablation-repeats", "10",
          "--probe-pairs", "1000", "--probe-folds", "3"]
VARIANTS = [
    ("verdicts only", ["--no-probes", "--no-concepts", "--no-heads"]),
    ("+ probes, concepts, head tables", ["--no-ablation"]),
    ("+ pooled top-k ablation", ["--no-head-effects"]),
    ("+ heads per phenomenon (everything)", []),
]


def timed(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def sweep_seconds(study_dir: str, n_pairs: int) -> str:
    import pandas as pd
    import torch

    from grokscope.analyse import head_effects as he
    from grokscope.analyse import heads as hd
    from grokscope.core.checkpoints import Checkpoint, load_model
    from grokscope.core.store import Study, read_parquet_metadata
    from grokscope.core.tokenizer import load_tokenizer

    st = Study(study_dir)
    step = st.scored_steps()[-1]
    meta = read_parquet_metadata(st.score_path(step))
    phrases = pd.read_parquet(st.phrases_path)
    pairs = phrases[phrases["supported"]].sample(min(n_pairs, int(phrases["supported"].sum())), random_state=0)
    model = load_model(Checkpoint(meta["checkpoint"], None, step, 0, "hf_dir"))
    fn = hd.score_margin_fn(load_tokenizer(meta["checkpoint"]), pairs.reset_index(drop=True),
                            pairs.reset_index(drop=True), meta)
    t0 = time.perf_counter()
    with torch.no_grad():
        sweep = he.single_head_sweep(model, fn, "mean")
    seconds = time.perf_counter() - t0
    n_layer, n_head, n = sweep.margin.shape
    passes = n_layer * n_head + 1
    return (f"single-head ablation: {n_layer}x{n_head} heads + the unablated pass = {passes} passes on {n} pairs: "
            f"{seconds:.1f} s ({seconds / passes:.2f} s a pass; target < 120 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sweep-pairs", type=int, default=1000)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.study, "scores")):
        sys.exit(f"{args.study}: not a scored study (expected a scores/ directory); run grokscope run first")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in VARIANTS}
    for _ in range(args.repeats):
        for name, flags in VARIANTS:
            results[name].append(timed([sys.executable, "-m", "grokscope.cli", "analyse", args.study, *COMMON,
                                        *flags]))
    base = min(w for w, _ in results[VARIANTS[0][0]])
    print(f"{'run':<38} {'wall s (min)':>12} {'CPU s':>8} {'vs verdicts only':>17}")
    for name, _ in VARIANTS:
        wall = min(w for w, _ in results[name])
        cpu = min(c for _, c in results[name])
        print(f"{name:<38} {wall:>12.1f} {cpu:>8.1f} {wall / base:>16.2f}x")
    inside = min(w for w, _ in results[VARIANTS[1][0]])
    print(f"probes + concepts + head tables add {100 * (inside / base - 1):+.0f}% (target <= +20%)")
    print(sweep_seconds(args.study, args.sweep_pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
