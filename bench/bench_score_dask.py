"""Scoring on Dask: one process vs ``--workers N`` on the same checkpoints and pairs.

Builds ``--checkpoints`` (default 6) checkpoints of one GPT-2 shape (default 2x128, GPT-2's
vocabulary, different weights each, saved as ``step_K`` Hugging Face directories) and scores
``--pairs`` BLiMP pairs (default 500: the first 8 of each paradigm, 536) on all of them with
``grokscope score``, each configuration a fresh process, ``--repeats`` times in turn:

- one process with ``--threads`` torch threads (default: every core);
- one process with 1 thread;
- ``--workers N`` (a LocalCluster of N single-threaded processes, each task with
  ``cores // N`` torch threads).

Prints per run the wall seconds (spawn to exit, Dask start-up and shut-down included) and the
CPU seconds of the whole process tree (user + system, the workers included: they are reaped by
the client), and checks that every run wrote the same score tables as the 1-thread process
(sha256 of the Parquet files)::

    python bench/bench_score_dask.py                          # 6 x 2x128, 536 pairs, 2 workers
    python bench/bench_score_dask.py --checkpoints 12 --workers 4 --repeats 3
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import DATA, WORK, Timed, load_average, run_timed, write_pairs  # noqa: E402


def make_checkpoints(shape: str, n: int) -> Path:
    """``n`` checkpoints of ``LxD`` (D/32 heads) with different weights: ``WORK/dask_ckpts/SHAPE/step_K``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.core.tokenizer import load_tokenizer

    n_layer, n_embd = (int(x) for x in shape.split("x"))
    root = WORK / "dask_ckpts" / f"{shape}_{n}"
    tok = load_tokenizer(DATA / "tokenizers" / "gpt2")
    for k in range(n):
        path = root / f"step_{k * 100}"
        if (path / "model.safetensors").exists():
            continue
        torch.manual_seed(k)
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=max(1, n_embd // 32),
                                           vocab_size=len(tok), bos_token_id=tok.eos_token_id,
                                           eos_token_id=tok.eos_token_id))
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return root


def score_cmd(root: Path, pairs: Path, out: Path, batch_size: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "grokscope.cli", "score", "--checkpoints", str(root / "step_*"),
            "--tokens-per-step", "1000", "--benchmark", str(pairs), "--out", str(out),
            "--batch-size", str(batch_size), "--quiet", *extra]


def tables(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "scores").glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--shape", default="2x128", help="LAYERSxWIDTH of the GPT-2 checkpoints")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the one-process run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    root = make_checkpoints(args.shape, args.checkpoints)
    pairs = write_pairs(args.pairs)
    n_pairs = len(pairs.read_text(encoding="utf-8").splitlines())
    configs = {f"1 process, {args.threads} threads": ["--threads", str(args.threads)],
               "1 process, 1 thread": ["--threads", "1"],
               f"{args.workers} Dask workers": ["--workers", str(args.workers)]}
    print(f"{args.checkpoints} checkpoints of a {args.shape} GPT-2 x {n_pairs} BLiMP pairs, {os.cpu_count()} cores; "
          f"load {load_average()}")
    runs: dict[str, list[Timed]] = {name: [] for name in configs}
    written: dict[str, list[dict[str, str]]] = {name: [] for name in configs}
    for r in range(args.repeats):
        for name, extra in configs.items():
            out = Path(tempfile.mkdtemp(prefix="dask_", dir=WORK))
            t = run_timed(score_cmd(root, pairs, out, args.batch_size, *extra), env)
            got = tables(out)
            assert len(got) == args.checkpoints, t.out[-2000:]
            written[name].append(got)
            runs[name].append(t)
            print(f"  run {r + 1}: {name:<26} wall {t.seconds:6.1f} s  cpu {t.cpu:6.1f} s  (load {load_average()})",
                  flush=True)
            shutil.rmtree(out)
    reference = written["1 process, 1 thread"][0]
    same = {name: all(got == reference for got in gots) for name, gots in written.items()}
    base = statistics.median(t.seconds for t in runs["1 process, 1 thread"])
    best = statistics.median(t.seconds for t in runs[f"1 process, {args.threads} threads"])
    print(f"\nmedians over {args.repeats} run(s):")
    for name, ts in runs.items():
        wall, cpu = statistics.median(t.seconds for t in ts), statistics.median(t.cpu for t in ts)
        print(f"  {name:<26} wall {wall:6.1f} s  cpu {cpu:6.1f} s  speed-up vs 1 thread {base / wall:4.2f}x, "
              f"vs {args.threads} threads {best / wall:4.2f}x  tables identical to 1 thread: {same[name]}")


if __name__ == "__main__":
    main()
