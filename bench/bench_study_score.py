"""Whole-study scoring: every checkpoint of a study, grokscope vs lm-evaluation-harness and minicons.

A real study scores tens to hundreds of checkpoints. This benchmark builds ``--checkpoints``
(default 9) checkpoints of one 4-layer GPT-2 shape (different weights each, saved as Hugging
Face directories ``step_N``) and scores the same ``--pairs`` BLiMP pairs (default 2,010: 30 of
each paradigm) on all of them, side by side in one run, each tool as its users run it:

- grokscope: one ``grokscope score --checkpoints 'DIR/step_*'`` (start-up once, pairs tokenized
  once, the next checkpoint loading while the current one is scored); also with ``prefetch = 0``
  to show what loading ahead buys;
- lm-evaluation-harness: ``lm_eval`` once per checkpoint (how its users score revisions);
- minicons: one Python process looping over the checkpoints (``IncrementalLMScorer`` per
  checkpoint).

Prints, per tool, wall seconds and CPU seconds (the machine may be shared: CPU time is the
steadier figure), seconds per checkpoint, the ratios against grokscope, and the largest
log-prob difference from grokscope over all checkpoints and pairs (the same numbers, or the
benchmark says so). The reference tools live in a separate venv (see ``bench/bench_score.py``)::

    python bench/bench_study_score.py                      # 9 checkpoints x 2,010 pairs
    python bench/bench_study_score.py --checkpoints 3 --pairs 335 --skip-lm-eval   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import (  # noqa: E402
    DATA,
    SHAPES,
    WORK,
    Timed,
    lm_eval_job,
    load_average,
    run_timed,
    write_pairs,
)

MINICONS_LOOP = r'''
import json, sys
from minicons import scorer
dirs, pairs_path, out_path, batch_size = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4])
pairs = [json.loads(l) for l in open(pairs_path)]
sents = [s for p in pairs for s in (p["sentence_good"], p["sentence_bad"])]
out = {}
for d in dirs:
    lm = scorer.IncrementalLMScorer(d, "cpu")
    scores = []
    for i in range(0, len(sents), batch_size):
        scores += lm.sequence_score(sents[i:i + batch_size], bos_token=True, reduction=lambda x: x.sum(0).item())
    out[d] = scores
json.dump(out, open(out_path, "w"))
'''


def make_checkpoints(shape: str, n: int) -> list[Path]:
    """``n`` checkpoints of one shape with different weights: ``WORK/study_ckpts/SHAPE/step_K``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.core.tokenizer import load_tokenizer

    root = WORK / "study_ckpts" / shape
    tok = load_tokenizer(DATA / "tokenizers" / "gpt2")
    n_layer, n_embd, n_head = SHAPES[shape]
    dirs = []
    for k in range(n):
        path = root / f"step_{k * 100}"
        dirs.append(path)
        if (path / "model.safetensors").exists():
            continue
        torch.manual_seed(k)
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=len(tok),
                                           bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return dirs


def grokscope_study(dirs: list[Path], pairs: Path, batch_size: int, threads: int, prefetch: int) -> tuple[list[str], object]:
    out = Path(tempfile.mkdtemp(prefix="study_", dir=WORK))
    cmd = [sys.executable, "-m", "grokscope.cli", "score", "--checkpoints", str(dirs[0].parent / "step_*"),
           "--tokens-per-step", "1000", "--benchmark", str(pairs), "--out", str(out), "--batch-size", str(batch_size),
           "--no-hidden", "--no-attention", "--quiet", "--threads", str(threads), "--set", f"score.prefetch={prefetch}"]
    return cmd, lambda: _parse_out(cmd, dirs)


def minicons_loop(venv: Path, dirs: list[Path], pairs: Path, batch_size: int) -> tuple[list[str], object]:
    runner = WORK / "minicons_loop.py"
    runner.write_text(MINICONS_LOOP)
    out = WORK / "minicons_loop.json"
    cmd = [str(venv / "bin" / "python"), str(runner), ",".join(map(str, dirs)), str(pairs), str(out), str(batch_size)]
    return cmd, lambda: {d: np.array(v, dtype=np.float64).reshape(-1, 2) for d, v in json.load(open(out)).items()}


def run_lm_eval(venv: Path, dirs: list[Path], pairs: Path, batch_size: int, env: dict[str, str]) -> tuple[Timed, dict]:
    total = Timed(0.0, 0.0, 0.0, "")
    scores = {}
    for d in dirs:
        cmd, parse = lm_eval_job(venv, d, pairs, batch_size)
        t = run_timed(cmd, env)
        total = Timed(total.seconds + t.seconds, total.cpu + t.cpu, max(total.peak_mb, t.peak_mb), "")
        scores[str(d)] = parse()
    return total, scores


def max_diff(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> tuple[float, int]:
    """Largest |Δ log-prob| over checkpoints and pairs (minicons is compared with grokscope's
    minicons convention, lm-eval with its default lm_eval convention), and the number of
    (checkpoint, pair) decisions good > bad that differ."""
    diff = max(float(np.max(np.abs(ours[d] - theirs[d]))) for d in ours)
    decisions = sum(int(((ours[d][:, 0] > ours[d][:, 1]) != (theirs[d][:, 0] > theirs[d][:, 1])).sum()) for d in ours)
    return diff, decisions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=9)
    ap.add_argument("--pairs", type=int, default=2010)
    ap.add_argument("--shape", default="4x256", choices=sorted(SHAPES))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("GROKSCOPE_REFS_VENV", "/work/venvs/refs")))
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--skip-minicons", action="store_true")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    dirs = make_checkpoints(args.shape, args.checkpoints)
    pairs = write_pairs(args.pairs)
    n_pairs = len(pairs.read_text(encoding="utf-8").splitlines())
    print(f"{args.checkpoints} checkpoints of a {args.shape} GPT-2 x {n_pairs} BLiMP pairs, {args.threads} threads; "
          f"load {load_average()}")
    rows: list[tuple[str, Timed, tuple[float, int]]] = []
    cmd, parse = grokscope_study(dirs, pairs, args.batch_size, args.threads, prefetch=1)
    ours_t = run_timed(cmd, env)
    ours = parse()  # type: ignore[operator]
    rows.append(("grokscope (one command)", ours_t, (0.0, 0)))
    cmd, parse0 = grokscope_study(dirs, pairs, args.batch_size, args.threads, prefetch=0)
    t0 = run_timed(cmd, env)
    rows.append(("grokscope, prefetch = 0", t0, max_diff(ours, parse0())))  # type: ignore[operator]
    if not args.skip_minicons:
        cmd_mc, _ = grokscope_study(dirs, pairs, args.batch_size, args.threads, prefetch=1)
        cmd_mc += ["--convention", "minicons"]
        ours_mc_t = run_timed(cmd_mc, env)
        ours_mc = _parse_out(cmd_mc, dirs)
        rows.append(("grokscope, minicons conv.", ours_mc_t, (0.0, 0)))
        cmd, parse_mc = minicons_loop(args.venv, dirs, pairs, 32)
        t = run_timed(cmd, env)
        rows.append(("minicons (loop, batch 32)", t, max_diff(ours_mc, parse_mc())))  # type: ignore[operator]
    if not args.skip_lm_eval:
        t, lm = run_lm_eval(args.venv, dirs, pairs, args.batch_size, env)
        rows.append((f"lm-eval (x{len(dirs)} runs)", t, max_diff(ours, lm)))
    print(f"\n{'tool':<28} {'wall s':>8} {'CPU s':>8} {'s/ckpt':>7} {'peak MB':>8} {'wall ×':>7} {'CPU ×':>6}  max|Δ|"
          "     decisions differ")
    base = {False: ours_t, True: rows[2][1] if not args.skip_minicons else ours_t}
    for name, t, (diff, flips) in rows:
        ref = base["minicons" in name]
        print(f"{name:<28} {t.seconds:8.1f} {t.cpu:8.1f} {t.seconds / len(dirs):7.2f} {t.peak_mb:8.0f} "
              f"{t.seconds / ref.seconds:7.2f} {t.cpu / ref.cpu:6.2f}  {diff:.2e} {flips:>6} of {len(dirs) * len(ours[str(dirs[0])]):,}")
    print("\n× = time / grokscope's (lm-eval and prefetch rows against grokscope's default convention, minicons "
          "against grokscope's minicons convention); > 1 means grokscope is faster")


def _parse_out(cmd: list[str], dirs: list[Path]) -> dict[str, np.ndarray]:
    import pandas as pd

    out = Path(cmd[cmd.index("--out") + 1])
    return {str(d): pd.read_parquet(out / "scores" / f"step_{int(d.name.split('_')[1]):08d}.parquet")
            [["good_logprob", "bad_logprob"]].to_numpy() for d in dirs}


if __name__ == "__main__":
    main()
