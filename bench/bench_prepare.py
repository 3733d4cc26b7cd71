"""Benchmark ``grokscope prepare``: throughput against the bare tokenizer, and peak memory when
the corpus doubles.

Measured in one run (the machine is shared and noisy, so compare the ratios, not absolutes):

* reference: ``tokenizers`` ``encode_batch_fast`` on the same documents (read beforehand; only
  the encode calls are timed) -> tokens/s of the tokenizer alone;
* ``grokscope prepare`` on the corpus, in a child process -> tokens/s end to end (reading,
  JSON, tokenizing, shuffling, packing, writing) and peak RSS (``ru_maxrss`` of the child);
* ``grokscope prepare`` on the corpus listed twice (twice the tokens) -> peak RSS again;
* the floor: a child that only imports grokscope and loads the tokenizer -> its peak RSS.

Every measurement runs in its own child process and this parent imports nothing heavy: Linux
carries the parent's peak RSS into a (v)forked child's ``ru_maxrss`` across ``exec``, so a big
parent would hide the child's own peak.

Usage::

    python bench/bench_prepare.py                       # wikipedia-000 + gutenberg-000
    python bench/bench_prepare.py --corpus ../shared/data/corpus/*.jsonl.gz   # all ~80M tokens
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GROKSCOPE_DATA", REPO.parent / "shared" / "data"))


def child_peak_rss_mib(cmd: list[str]) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (seconds, its peak RSS in MiB, stdout, CPU seconds user+sys)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err}")
    return seconds, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def reference_tokens_per_s(files: list[str], tokenizer: str, batch_chars: int) -> tuple[float, int, float]:
    """(tokens/s, tokens, tokens per CPU-second) of the bare tokenizer on the same documents."""
    from grokscope.core.tokenizer import load_tokenizer

    backend = load_tokenizer(tokenizer).backend_tokenizer
    n_tokens, seconds, cpu = 0, 0.0, 0.0
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        batch: list[str] = []
        chars = 0
        with opener(path, "rt", encoding="utf-8") as f:
            lines = list(f)
        texts = [json.loads(x)["text"] for x in lines if x.strip()]
        del lines
        for text in texts + [None]:
            if text is not None:
                batch.append(text)
                chars += len(text)
            if batch and (text is None or chars >= batch_chars):
                t, c = time.perf_counter(), time.process_time()
                encs = backend.encode_batch_fast(batch, add_special_tokens=False)
                seconds += time.perf_counter() - t
                cpu += time.process_time() - c
                n_tokens += sum(len(e.ids) for e in encs)
                batch, chars = [], 0
    return n_tokens / seconds, n_tokens, n_tokens / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", nargs="+", default=[str(DATA / "corpus" / "wikipedia-000.jsonl.gz"),
                                                     str(DATA / "corpus" / "gutenberg-000.jsonl.gz")])
    ap.add_argument("--tokenizer", default=str(DATA / "tokenizers" / "gpt2"))
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-chars", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_prepare"))
    ap.add_argument("--skip-double", action="store_true", help="do not run the doubled corpus")
    ap.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_only:  # child: the bare tokenizer on the same documents
        rate, tokens, cpu_rate = reference_tokens_per_s(args.corpus, args.tokenizer, args.batch_chars)
        print(json.dumps({"rate": rate, "tokens": tokens, "cpu_rate": cpu_rate}))
        return

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    grokscope = [sys.executable, "-m", "grokscope.cli"]
    common = ["--tokenizer", args.tokenizer, "--seq-len", str(args.seq_len), "--batch-chars", str(args.batch_chars),
              "--no-progress"]

    _, floor_rss, _, _ = child_peak_rss_mib([sys.executable, "-c", (
        f"from grokscope.core.tokenizer import load_tokenizer; load_tokenizer({args.tokenizer!r})")])
    _, _, ref_out, _ = child_peak_rss_mib([sys.executable, __file__, "--reference-only", "--corpus", *args.corpus,
                                           "--tokenizer", args.tokenizer, "--batch-chars", str(args.batch_chars)])
    ref = json.loads(ref_out.strip().splitlines()[-1])
    ref_rate, ref_tokens, ref_cpu_rate = ref["rate"], ref["tokens"], ref["cpu_rate"]

    runs = [("corpus", args.corpus)]
    if not args.skip_double:
        runs.append(("corpus x2", args.corpus + args.corpus))
    rows = []
    for name, files in runs:
        study = out / name.replace(" ", "_")
        seconds, rss, _, cpu = child_peak_rss_mib(grokscope + ["prepare", "--corpus", *files, "--out", str(study), *common])
        m = json.loads((study / "tokens" / "manifest.json").read_text())
        rows.append((name, m["document_tokens"], seconds, m["document_tokens"] / seconds,
                     m["document_tokens"] / m["tokenize_seconds"], rss, m["document_tokens"] / cpu))
        shutil.rmtree(study, ignore_errors=True)

    print(f"\nbench_prepare  (tokenizer {args.tokenizer}, {len(args.corpus)} file(s), seq_len {args.seq_len}, "
          f"batch {args.batch_chars:,} chars, {os.cpu_count()} cores; shared machine: compare ratios)")
    print(f"reference: tokenizers encode_batch_fast alone   {ref_tokens:>12,} tokens  {ref_rate:>12,.0f} tokens/s"
          f"  {ref_cpu_rate:>10,.0f} tokens/CPU-s")
    print(f"floor: python + grokscope + tokenizer loaded    peak RSS {floor_rss:8.0f} MiB")
    print(f"{'run':<12}{'tokens':>14}{'seconds':>10}{'tokens/s':>13}{'tok-pass/s':>13}{'vs ref':>8}"
          f"{'tok/CPU-s':>12}{'vs ref':>8}{'peak MiB':>10}")
    for name, n, s, rate, tok_rate, rss, cpu_rate in rows:
        print(f"{name:<12}{n:>14,}{s:>10.1f}{rate:>13,.0f}{tok_rate:>13,.0f}{rate / ref_rate:>8.2f}"
              f"{cpu_rate:>12,.0f}{cpu_rate / ref_cpu_rate:>8.2f}{rss:>10.0f}")
    if len(rows) == 2:
        print(f"peak memory doubled/single: {rows[1][5] / rows[0][5]:.3f}  "
              f"(above the floor: {(rows[1][5] - floor_rss) / max(rows[0][5] - floor_rss, 1):.3f}); "
              f"tokens doubled/single: {rows[1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
