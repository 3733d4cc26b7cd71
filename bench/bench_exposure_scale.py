"""Exposure at pre-training scale (issue #20): ``grokscope exposure`` on token streams of 1B, 3B
and 10B tokens, with 1 process and with 2 Dask workers, all BLiMP phrases, Pythia's 154
checkpoints spread over each stream.

The streams are real GPT-2 text: the rows of a prepared stream (default the ~88M-token Wikipedia +
Gutenberg stream) tiled, each copy in its own seeded row order, into a ``tokens.npy`` of the size
asked (uint16, 129 tokens a row: 20 GB at 10B tokens). After writing, the file is flushed and
dropped from the page cache (``posix_fadvise(DONTNEED)``), and again before every run, so each
search reads it from disk, as a first search of a real corpus does. Each run is the real command in
its own process; the figures are wall seconds, CPU seconds of the process and its Dask workers,
peak memory (the largest sum of ``RssAnon`` over the process tree, sampled every 50 ms: memory
allocated, not the mapped file's page cache), tokens/s, and the per-token ratio against 1B tokens
(1.00 = time grows linearly with the stream)::

    python bench/bench_exposure_scale.py --tokens /path/to/prepared/tokens --phrases STUDY/phrases.parquet
    python bench/bench_exposure_scale.py --sizes 1e9 --workers 1     # one quick row

Needs ``sum(sizes) * 2`` bytes of free disk under ``--work`` (28 GB for the defaults); the
streams are deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GROKSCOPE = [sys.executable, "-c", "import sys; from grokscope import cli; sys.exit(cli.main(sys.argv[1:]))"]
ROWS_PER_STEP = 1024  # Pythia's batch: 1024 rows x 2049 tokens; here rows of the source's length


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def tiled_stream(source: Path, out: Path, n_tokens: int, seed: int = 0) -> int:
    """A grokscope tokens/ dir of about ``n_tokens`` tokens: the source's rows, copy after copy,
    each copy in its own row order. Returns the number of rows."""
    src = np.load(source / "tokens.npy", mmap_mode="r")
    n_src, row_len = src.shape
    n_rows = int(n_tokens // row_len)
    out.mkdir(parents=True, exist_ok=True)
    dst = np.lib.format.open_memmap(out / "tokens.npy.partial", mode="w+", dtype=src.dtype, shape=(n_rows, row_len))
    rng = np.random.default_rng(seed)
    block = 1 << 18  # rows per copy block (~67 MB)
    done = 0
    while done < n_rows:
        order = rng.permutation(n_src)
        for a in range(0, n_src, block):
            if done >= n_rows:
                break
            idx = np.sort(order[a:a + block])[: n_rows - done]
            dst[done:done + idx.size] = src[idx]
            done += idx.size
    dst.flush()
    del dst
    os.replace(out / "tokens.npy.partial", out / "tokens.npy")
    shutil.copytree(source / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest.update(n_rows=n_rows, n_tokens=n_rows * row_len, shuffle="rows", rows_per_step=ROWS_PER_STEP,
                    note=f"bench_exposure_scale: {source} tiled to {n_rows * row_len:,} tokens")
    manifest.pop("withhold", None)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    drop_cache(out / "tokens.npy")
    return n_rows


def pythia_like_steps(last: int) -> list[int]:
    """154 checkpoints as Pythia's: 0, 1, 2, ..., 512, then 143 evenly spaced to ``last``."""
    early = [0] + [2**i for i in range(10)]
    linear = np.linspace(last / 143, last, 143).round().astype(int).tolist()
    return sorted({s for s in early if s <= last} | {s for s in linear if s > 512 or last < 512})


class TreeSampler(threading.Thread):
    """Peak of the summed ``RssAnon`` over a process and its descendants (psutil)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    @staticmethod
    def _anon(p: object) -> int:
        try:
            with open(f"/proc/{p.pid}/status") as f:  # type: ignore[attr-defined]
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            self.peak = max(self.peak, sum(self._anon(p) for p in procs))
            time.sleep(0.05)


def run_exposure(tokens: Path, phrases: Path, steps: list[int], workers: int, out: Path) -> dict[str, Any]:
    drop_cache(tokens / "tokens.npy")
    if out.exists():
        shutil.rmtree(out)
    argv = ["exposure", "--phrases", str(phrases), "--tokens", str(tokens), "--checkpoints",
            ",".join(map(str, steps)), "--rows-per-step", str(ROWS_PER_STEP), "--workers", str(workers),
            "--out", str(out)]
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen([*GROKSCOPE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"grokscope exposure failed ({proc.returncode}):\n{stderr[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall_s": wall, "cpu_s": cpu, "peak_gib": sampler.peak / 2**30, "stdout": stdout}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=Path, default=REPO / "runs/corpus_gpt2/tokens", help="prepared source stream")
    ap.add_argument("--phrases", type=Path, default=REPO / "runs/blimp_phrases/phrases.parquet")
    ap.add_argument("--sizes", default="1e9,3e9,1e10", help="stream sizes in tokens (comma list)")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--work", type=Path, default=REPO / "runs/bench_exposure_scale")
    ap.add_argument("--keep", action="store_true", help="keep the tiled streams")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    need = sum(sizes) * 2
    free = shutil.disk_usage(args.work.parent if not args.work.exists() else args.work).free
    if free < need * 1.05:
        print(f"needs {need / 1e9:.1f} GB free under {args.work}, has {free / 1e9:.1f}", file=sys.stderr)
        return 2
    rows: list[dict[str, float]] = []
    try:
        for size in sizes:
            stream = args.work / f"stream_{size:.0e}"
            t0 = time.perf_counter()
            n_rows = tiled_stream(args.tokens, stream, size)
            print(f"{size:.0e} tokens: {n_rows:,} rows written in {time.perf_counter() - t0:.0f} s", flush=True)
            steps = pythia_like_steps(n_rows // ROWS_PER_STEP)
            for w in workers:
                r = run_exposure(stream, args.phrases, steps, w, args.work / f"study_{size:.0e}_{w}")
                n_tok = n_rows * np.load(stream / "tokens.npy", mmap_mode="r").shape[1]
                rows.append({"tokens": n_tok, "workers": w, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                             "peak_gib": r["peak_gib"], "mtok_per_s": n_tok / r["wall_s"] / 1e6})
                print(f"  {w} worker(s): {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
                      f"peak {r['peak_gib']:.2f} GiB, {n_tok / r['wall_s'] / 1e6:.0f}M tokens/s", flush=True)
            if not args.keep:
                shutil.rmtree(stream)
    finally:
        if not args.keep and args.work.exists():
            for p in args.work.glob("stream_*"):
                shutil.rmtree(p, ignore_errors=True)
    base = {r["workers"]: r["wall_s"] / r["tokens"] for r in rows if r["tokens"] == rows[0]["tokens"]}
    print(f"\n{'tokens':>15} {'workers':>7} {'wall s':>8} {'CPU s':>8} {'peak GiB':>9} {'Mtok/s':>7} "
          f"{'s/token vs first size':>22}")
    for r in rows:
        ratio = (r["wall_s"] / r["tokens"]) / base[r["workers"]]
        print(f"{r['tokens']:>15,} {r['workers']:>7} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['peak_gib']:>9.2f} "
              f"{r['mtok_per_s']:>7.0f} {ratio:>22.2f}")
        r["per_token_ratio"] = ratio
    for n_tokens in sorted({r["tokens"] for r in rows}):
        by = {r["workers"]: r for r in rows if r["tokens"] == n_tokens}
        if 1 in by and 2 in by:
            print(f"{n_tokens:,} tokens: 2 workers vs 1: {by[1]['wall_s'] / by[2]['wall_s']:.2f}x wall, "
                  f"{by[2]['cpu_s'] / by[1]['cpu_s']:.2f}x the CPU seconds")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
