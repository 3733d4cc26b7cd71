"""Benchmark the exposure search against two references, measured side by side in one run.

    python bench/bench_exposure.py                     # everything (≈ 10–20 min on a quiet 2-core box)
    python bench/bench_exposure.py --skip infini,dask  # a subset; --quick: 10M tokens, fewer phrases
    python bench/bench_exposure.py --skip numpy,infini,scale --dask-copies 8   # Dask on 8x the corpus

Inputs (defaults): the ≈80M-token GPT-2 stream ``runs/corpus_gpt2/tokens`` and the critical phrases
of all BLiMP pairs ``runs/blimp_phrases/phrases.parquet`` (good and bad phrase, variants ``mid`` +
``sentence_start``). Methods, each in its own subprocess so that peak memory is its own:

* ``grokscope``  — :mod:`grokscope.exposure.engine` (token trie, Numba), one core, whole-word rules,
  counts per checkpoint window + first rows (what ``grokscope exposure`` computes).
* ``numpy``      — reference (a): a vectorised NumPy search: 64-bit polynomial rolling hash of every
  n-gram of each needed length, ``np.searchsorted`` against the sorted phrase hashes, the same
  boundary rules and outputs, in chunks of rows. Its counts must equal ``grokscope``'s exactly.
* ``infini``     — reference (b): an ``infini-gram`` suffix-array index over the same rows (built with
  its ``rust_indexing``, ``--cpus 1``) and one ``count`` query per token sequence. It has no
  word-boundary rule and no first step, so its counts are compared with ``grokscope`` run with
  ``check_words=False`` (must be equal); the per-query time is measured on a sample and
  extrapolated to all sequences. Needs ``/work/venvs/infini`` (``pip install infini-gram``).
* scale: ``grokscope`` at 10M / 40M / 80M tokens and with 1k … all phrases; Dask ``LocalCluster``
  with 1 vs 2 single-threaded workers (warm: cluster started, kernel compiled, index scattered).

Peak memory = peak anonymous RSS (``RssAnon``, sampled every 5 ms) minus the value before the
search: memory the method allocated, not the page cache of the memory-mapped stream. CPU time is
user+sys of the process; "M tok/s/core" = tokens / CPU seconds, which is what to compare when the
machine is shared (wall time is printed too, with the load average).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
INFINI_PY = "/work/venvs/infini/bin/python"


# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------
def rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakAnon:
    """Peak anonymous RSS growth (MB) while the block runs."""

    def __enter__(self) -> PeakAnon:
        self.base = rss_anon_kb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_kb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_kb())
        self.mb = (self.peak - self.base) / 1024


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------------------------------------
# shared inputs (prepared once by the driver, read by every worker)
# ---------------------------------------------------------------------------------------------
def prepare_inputs(args: argparse.Namespace, work: Path) -> dict:
    import pandas as pd

    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.exposure.search import tokenize_phrases
    from grokscope.exposure.words import word_tables
    from grokscope.stream.readers import open_stream

    stream = open_stream(args.tokens)
    tok = load_tokenizer(stream.tokenizer_dir) if stream.tokenizer_dir else load_tokenizer(args.tokenizer)
    df = pd.read_parquet(args.phrases)
    phrases = df["critical_phrase"].tolist() + df["bad_phrase"].tolist()
    forms = None  # every surface form the phrases table records (mid-text lower-cased first words too)
    if "good_forms" in df.columns and not args.no_forms:
        forms = [list(f) or None for f in df["good_forms"]] + [list(f) or None for f in df["bad_forms"]]
    t0 = time.perf_counter()
    seqs = tokenize_phrases(tok, phrases, ["mid", "sentence_start"], eos_id=stream.eos_id, forms=forms)
    t_tok = time.perf_counter() - t0
    tables = word_tables(tok)
    flat = np.array([t for s in seqs.sequences for t in s], dtype=np.int64)
    off = np.zeros(len(seqs.sequences) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(s) for s in seqs.sequences])
    np.savez(work / "inputs.npz", flat=flat, off=off, cont=tables.continues_word, ends=tables.ends_word,
             tail_index=tables.tail_index, cont_index=tables.cont_index, pair_word=tables.pair_word,
             ph_off=seqs.offsets, ph_seq=seqs.seq_ids)
    lens = np.diff(off)
    return {
        "pairs": len(df), "phrases": len(seqs.phrases), "sequences": len(seqs.sequences),
        "tokenize_s": t_tok, "len_min": int(lens.min()), "len_max": int(lens.max()),
        "len_mean": float(lens.mean()), "n_rows": stream.n_rows, "row_len": stream.row_len,
        "eos_id": stream.eos_id,
    }


def load_inputs(work: Path, n_phrases: int | None):
    """(flat tokens, lengths, WordTables) of the sequences of ``n_phrases`` distinct phrases drawn
    at random (seed 0; all if None). A random draw, not the first n: the first phrases all come
    from the first paradigms, whose words are rare, so a prefix of the table would confound the
    number of phrases with what kind of phrases they are."""
    from grokscope.exposure.words import WordTables

    z = np.load(work / "inputs.npz")
    flat, off = z["flat"], z["off"]
    lens = np.diff(off)
    if n_phrases is not None:
        ph_off, ph_seq = z["ph_off"], z["ph_seq"]
        n_all = ph_off.size - 1
        pick = np.random.default_rng(0).permutation(n_all)[: min(n_phrases, n_all)]
        keep = np.unique(np.concatenate([ph_seq[ph_off[p]:ph_off[p + 1]] for p in pick]))
        flat = np.concatenate([flat[off[k]:off[k + 1]] for k in keep])
        lens = lens[keep]
    return flat, lens, WordTables(z["cont"], z["ends"], z["tail_index"], z["cont_index"], z["pair_word"])


def window_edges_for(n_rows: int, rows_per_step: int) -> tuple[list[int], np.ndarray]:
    from grokscope.exposure.shards import window_edges

    n_steps = n_rows // rows_per_step
    steps = sorted({0, *[2**i for i in range(20) if 2**i <= min(512, n_steps)],
                    *range(n_steps // 20, n_steps + 1, max(1, n_steps // 20))})
    return steps, window_edges(steps, rows_per_step, n_rows)


# ---------------------------------------------------------------------------------------------
# workers (one per subprocess)
# ---------------------------------------------------------------------------------------------
def worker_grokscope(args, work: Path) -> dict:
    from grokscope.exposure.engine import build_index, build_index_arrays, scan_rows, scan_stream
    from grokscope.stream.readers import open_stream

    stream = open_stream(args.tokens)
    n_rows = min(stream.n_rows, args.rows or stream.n_rows)
    flat, lens, tables = load_inputs(work, args.n_phrases)
    _, edges = window_edges_for(n_rows, args.rows_per_step)
    warm = build_index([(1, 2), (1, 3, 4)], tables)
    scan_rows(warm, stream.rows(0, 4), check_words=not args.no_words)  # compile outside the timing
    with PeakAnon() as mem:
        c0, w0 = cpu_seconds(), time.perf_counter()
        index = build_index_arrays(flat, lens, tables)
        w_build, c_build = time.perf_counter() - w0, cpu_seconds() - c0
        res = scan_stream(index, stream.rows, 0, n_rows, edges, check_words=not args.no_words)
        wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    if args.save:
        np.savez(work / f"{args.save}.npz", totals=res.totals(), first_row=res.first_row,
                 dense=res.dense(len(edges) - 1))
    return {"wall_s": wall, "cpu_s": cpu, "build_s": w_build, "build_cpu_s": c_build, "peak_mb": mem.mb, "tokens": n_rows * stream.row_len,
            "sequences": int(lens.size), "nodes": index.n_nodes}


def numpy_search(read_rows, n_rows: int, flat: np.ndarray, lens: np.ndarray, tables, edges: np.ndarray,
                 chunk_rows: int = 1 << 15):
    """Reference (a): vectorised NumPy rolling-hash search, same rules and outputs as grokscope."""
    P = np.uint64(1099511628211)  # 64-bit FNV prime as the polynomial base; arithmetic wraps mod 2^64
    n_seq = lens.size
    starts = np.cumsum(lens) - lens
    seq_h = np.zeros(n_seq, dtype=np.uint64)
    for d in range(int(lens.max())):
        live = lens > d
        seq_h[live] = seq_h[live] * P + flat[starts[live] + d].astype(np.uint64)
    by_len: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for n in np.unique(lens).tolist():
        ids = np.flatnonzero(lens == n)
        order = np.argsort(seq_h[ids])
        by_len[n] = (seq_h[ids][order], ids[order])
    max_len = max(by_len)
    cont, ends = tables.continues_word, tables.ends_word
    start_check = cont[flat[starts]]
    n_int = edges.size - 1
    counts = np.zeros(n_seq * n_int, dtype=np.int64)
    first = np.full(n_seq, np.iinfo(np.int64).max, dtype=np.int64)
    for c0 in range(0, n_rows, chunk_rows):
        c1 = min(n_rows, c0 + chunk_rows)
        x = read_rows(c0, c1)
        L = x.shape[1]
        xu = x.astype(np.uint64)
        h = np.zeros((x.shape[0], L + 1), dtype=np.uint64)  # h[:, i]: hash of the window starting at i
        for n in range(1, max_len + 1):
            if n > L:
                break
            h = h[:, : L - n + 1] * P + xu[:, n - 1:]  # windows of length n
            if n not in by_len:
                continue
            H, ids = by_len[n]
            flat_h = h.ravel()
            pos = np.searchsorted(H, flat_h)
            pos[pos == H.size] = 0
            hit = np.flatnonzero(H[pos] == flat_h)
            if hit.size == 0:
                continue
            r, i = np.divmod(hit, L - n + 1)
            k = ids[pos[hit]]
            after = i + n
            ok = (after >= L) | ~cont[x[r, np.minimum(after, L - 1)]]
            prev, prev2 = x[r, np.maximum(i - 1, 0)], x[r, np.maximum(i - 2, 0)]
            split = (tables.cont_index[prev] >= 0) & (i > 1) & (tables.tail_index[prev2] >= 0)
            prev_word = np.where(split, tables.pair_word[tables.tail_index[prev2], tables.cont_index[prev]], ends[prev])
            prev_word &= ~((tables.cont_index[prev] >= 0) & (i == 1))  # character cut by the row start
            ok &= ~start_check[k] | (i == 0) | ~prev_word
            r, k = r[ok] + c0, k[ok]
            interval = np.searchsorted(edges, r, side="right") - 1
            np.add.at(counts, k * n_int + interval, 1)
            np.minimum.at(first, k, r)
    first[first == np.iinfo(np.int64).max] = -1
    return counts.reshape(n_seq, n_int), first


def worker_numpy(args, work: Path) -> dict:
    from grokscope.stream.readers import open_stream

    stream = open_stream(args.tokens)
    n_rows = min(stream.n_rows, args.rows or stream.n_rows)
    flat, lens, tables = load_inputs(work, args.n_phrases)
    _, edges = window_edges_for(n_rows, args.rows_per_step)
    with PeakAnon() as mem:
        c0, w0 = cpu_seconds(), time.perf_counter()
        dense, first = numpy_search(stream.rows, n_rows, flat, lens, tables, edges)
        wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    np.savez(work / "numpy.npz", totals=dense.sum(axis=1), first_row=first, dense=dense)
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": mem.mb, "tokens": n_rows * stream.row_len, "sequences": int(lens.size)}


def worker_dask(args, work: Path) -> dict:
    from dask.distributed import Client, LocalCluster

    from grokscope.exposure.engine import build_index_arrays
    from grokscope.exposure.shards import StreamSpec, search_stream
    from grokscope.stream.readers import open_stream

    stream = open_stream(args.tokens)
    n_rows = min(stream.n_rows, args.rows or stream.n_rows)
    flat, lens, tables = load_inputs(work, args.n_phrases)
    index = build_index_arrays(flat, lens, tables)
    spec = StreamSpec(str(stream.path))
    if args.dask_copies > 1:  # a bigger job: the rows K times over, as a nanoGPT .bin (built once)
        big = work / f"stream_x{args.dask_copies}_{n_rows}.bin"
        if not big.exists():
            with open(str(big) + ".partial", "wb") as f:
                for _ in range(args.dask_copies):
                    for a in range(0, n_rows, 65536):
                        f.write(np.ascontiguousarray(stream.rows(a, min(n_rows, a + 65536)), dtype=np.uint16).tobytes())
            os.replace(str(big) + ".partial", big)
        spec = StreamSpec(str(big), format="nanogpt", row_len=stream.row_len, eos_id=stream.eos_id)
        n_rows *= args.dask_copies
    _, edges = window_edges_for(n_rows, args.rows_per_step)
    out: dict[str, Any] = {}
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            warm = min(n_rows, 4096)  # warm-up: start workers, compile the kernel, scatter the index
            search_stream(spec, index, warm, window_edges_for(warm, args.rows_per_step)[1], shard_rows=1024,
                          progress=False, client=client)
            walls, cpus, cpu_maxes = [], [], []
            for _ in range(args.dask_repeats):  # median of several timed searches: sub-second jobs are noisy
                cpu0 = client.run(cpu_seconds)
                w0 = time.perf_counter()
                res = search_stream(spec, index, n_rows, edges, shard_rows=max(1, n_rows // 16), progress=False,
                                    client=client)
                walls.append(time.perf_counter() - w0)
                cpu1 = client.run(cpu_seconds)
                per_worker = [cpu1[w] - cpu0[w] for w in cpu1]
                cpus.append(sum(per_worker))  # CPU seconds all workers spent
                cpu_maxes.append(max(per_worker))  # the busiest worker: the wall time on free cores
            out[f"wall_{n}"] = float(np.median(walls))
            out[f"walls_{n}"] = walls
            out[f"cpu_{n}"] = float(np.median(cpus))
            out[f"cpu_max_{n}"] = float(np.median(cpu_maxes))
            out[f"total_{n}"] = int(res.count.sum())
    out["tokens"] = n_rows * stream.row_len
    out["speedup"] = out["wall_1"] / out["wall_2"]
    out["cpu_speedup"] = out["cpu_max_1"] / out["cpu_max_2"]
    return out


# ---- infini-gram (runs under /work/venvs/infini) ----------------------------------------------
def write_infini_tokenized(args, work: Path) -> dict:
    """infini-gram's on-disk input: each row is one document (doc separator 0xFFFF + its tokens)."""
    from grokscope.stream.readers import open_stream

    stream = open_stream(args.tokens)
    n_rows = min(stream.n_rows, args.rows or stream.n_rows)
    L = stream.row_len
    d = work / "infini"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*"):
        f.unlink()
    (work / "infini_data").mkdir(exist_ok=True)
    with open(d / "tokenized.0", "wb") as out:
        for a in range(0, n_rows, 1 << 15):
            b = min(n_rows, a + (1 << 15))
            block = np.empty((b - a, L + 1), dtype=np.uint16)
            block[:, 0] = 0xFFFF
            block[:, 1:] = stream.rows(a, b)
            out.write(block.tobytes())
    (np.arange(n_rows, dtype=np.uint64) * np.uint64((L + 1) * 2)).tofile(d / "offset.0")
    return {"dir": str(d), "tokens": n_rows * L}


def infini_build(args, work: Path) -> dict:
    import resource

    d = work / "infini"
    cmd = [INFINI_PY, "-m", "infini_gram.indexing", "--data_dir", str(work / "infini_data"), "--save_dir", str(d),
           "--token_dtype", "u16", "--cpus", "1", "--mem", "8", "--ulimit", "20000"]
    w0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0 or not (d / "table.0").exists():
        raise RuntimeError(f"infini-gram indexing failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "peak_rss_mb": r1.ru_maxrss / 1024}


def infini_query_worker(args, work: Path) -> dict:
    """Runs under the infini venv: count a sample of sequences, time per query."""
    from infini_gram.engine import InfiniGramEngine

    z = np.load(work / "inputs.npz")
    flat, off = z["flat"], z["off"]
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(off.size - 1, size=min(args.infini_sample, off.size - 1), replace=False))
    engine = InfiniGramEngine(index_dir=str(work / "infini"), eos_token_id=int(args.eos_id), vocab_size=65535)
    counts = []
    c0, w0 = cpu_seconds(), time.perf_counter()
    for k in sample:
        counts.append(int(engine.count(input_ids=[int(t) for t in flat[off[k]:off[k + 1]]])["count"]))
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    np.savez(work / "infini_counts.npz", sample=sample, counts=np.array(counts, dtype=np.int64))
    return {"query_wall_s": wall, "query_cpu_s": cpu, "n_queries": int(sample.size)}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run_worker(method: str, args: argparse.Namespace, python: str = sys.executable, **kw) -> dict:
    cmd = [python, __file__, "--worker", method, "--tokens", args.tokens, "--work", args.work,
           "--rows-per-step", str(args.rows_per_step), "--infini-sample", str(args.infini_sample),
           "--dask-repeats", str(args.dask_repeats), "--dask-copies", str(args.dask_copies)]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v not in (None, False):
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"worker {method} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt_row(cols, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print(fmt_row(header, widths))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt_row(r, widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default=str(REPO / "runs/corpus_gpt2/tokens"))
    ap.add_argument("--phrases", default=str(REPO / "runs/blimp_phrases/phrases.parquet"))
    ap.add_argument("--tokenizer", default=None, help="only if the stream has no tokenizer/ dir")
    ap.add_argument("--work", default=str(REPO / "runs/bench_exposure"))
    ap.add_argument("--rows-per-step", type=int, default=32, help="B for the checkpoint windows (default 32)")
    ap.add_argument("--skip", default="", help="comma list of: numpy,infini,scale,dask")
    ap.add_argument("--quick", action="store_true", help="10M tokens only")
    ap.add_argument("--no-forms", action="store_true", help="ignore the phrases table's good_forms/bad_forms (each "
                                                            "phrase as given is its mid-text form: the old search)")
    ap.add_argument("--infini-sample", type=int, default=5000, help="infini-gram queries timed (extrapolated)")
    ap.add_argument("--dask-repeats", type=int, default=7, help="timed Dask searches per worker count (median)")
    ap.add_argument("--dask-copies", type=int, default=1,
                    help="Dask part only: search the stream's rows K times over (a K-times-larger corpus; "
                         "written once as a nanoGPT .bin in --work)")
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    # worker mode
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--n-phrases", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-words", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--eos-id", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work).resolve()
    if args.worker:
        fn = {"grokscope": worker_grokscope, "numpy": worker_numpy, "dask": worker_dask,
              "infini_query": infini_query_worker}[args.worker]
        print(json.dumps(fn(args, work)))
        return 0

    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    os.environ.setdefault("TQDM_DISABLE", "1")
    load0 = os.getloadavg()
    info = prepare_inputs(args, work)
    row_len = info["row_len"]
    all_rows = info["n_rows"]
    rows = min(all_rows, int(10e6 // row_len) + 1) if args.quick else all_rows
    tokens = rows * row_len
    print(f"stream {args.tokens}: {all_rows:,} rows × {row_len} = {all_rows * row_len:,} tokens; using {tokens:,}")
    print(f"phrases: {info['pairs']:,} pairs → {info['phrases']:,} distinct phrases → {info['sequences']:,} token "
          f"sequences (variants mid+sentence_start; {info['len_min']}–{info['len_max']} tokens, mean "
          f"{info['len_mean']:.1f}); tokenizing took {info['tokenize_s']:.1f} s")
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores")
    results: dict = {"info": info, "tokens": tokens, "load_before": load0}

    def mtok(t, s):
        return f"{t / s / 1e6:.1f}" if s else "-"

    g = run_worker("grokscope", args, rows=rows, save="grokscope")
    results["grokscope"] = g
    table = [["grokscope (trie, Numba)", f"{g['wall_s']:.2f}", f"{g['cpu_s']:.2f}", mtok(tokens, g["cpu_s"]),
              f"{g['peak_mb']:.0f}", "1.0×"]]
    if "numpy" not in skip:
        a = run_worker("numpy", args, rows=rows)
        results["numpy"] = a
        ours, ref = np.load(work / "grokscope.npz"), np.load(work / "numpy.npz")
        a["identical"] = bool(np.array_equal(ours["dense"], ref["dense"]) and np.array_equal(ours["first_row"], ref["first_row"]))
        table.append(["(a) NumPy rolling hash", f"{a['wall_s']:.2f}", f"{a['cpu_s']:.2f}", mtok(tokens, a["cpu_s"]),
                      f"{a['peak_mb']:.0f}", f"{a['cpu_s'] / g['cpu_s']:.1f}×"])
    if "infini" not in skip and Path(INFINI_PY).exists():
        nw = run_worker("grokscope", args, rows=rows, no_words=True, save="grokscope_nowords")
        results["grokscope_nowords"] = nw
        write_infini_tokenized(args, work)
        b = infini_build(args, work)
        q = run_worker("infini_query", args, python=INFINI_PY, eos_id=info["eos_id"])
        per_q = q["query_cpu_s"] / q["n_queries"]
        total_cpu = b["cpu_s"] + per_q * info["sequences"]
        ic = np.load(work / "infini_counts.npz")
        ours_nw = np.load(work / "grokscope_nowords.npz")["totals"][ic["sample"]]
        b.update(q, per_query_us=per_q * 1e6, total_cpu_s=total_cpu,
                 counts_equal=bool(np.array_equal(ours_nw, ic["counts"])), n_compared=int(ic["sample"].size),
                 sample_total=int(ic["counts"].sum()))
        results["infini"] = b
        table.append([f"(b) infini-gram build + {info['sequences']:,} queries",
                      f"{b['wall_s'] + q['query_wall_s'] / q['n_queries'] * info['sequences']:.2f}",
                      f"{total_cpu:.2f}", mtok(tokens, total_cpu), f"{b['peak_rss_mb']:.0f} (RSS)",
                      f"{total_cpu / g['cpu_s']:.1f}×"])
    print_table(f"Exposure search, {tokens / 1e6:.0f}M tokens, {info['sequences']:,} sequences (one core each)",
                ["method", "wall s", "cpu s", "M tok/s/core", "peak MB", "cpu vs grokscope"], table)
    print(f"grokscope: index build {g['build_cpu_s']:.2f} s cpu + scan {g['cpu_s'] - g['build_cpu_s']:.2f} s cpu "
          f"({tokens / max(g['cpu_s'] - g['build_cpu_s'], 1e-9) / 1e6:.0f}M tok/s/core scan only); phrase tokenization "
          f"(not in the table, once per study) {info['tokenize_s']:.1f} s wall; {g['nodes']:,} trie nodes")
    if "numpy" in results:
        print(f"(a) counts per window and first rows identical to grokscope: {results['numpy']['identical']}")
    if "infini" in results:
        b = results["infini"]
        print(f"(b) build {b['wall_s']:.1f} s wall / {b['cpu_s']:.1f} s cpu, {b['per_query_us']:.0f} µs/query; counts "
              f"of {b['n_compared']:,} sampled sequences equal grokscope without word rules: {b['counts_equal']}")

    if "scale" not in skip:
        srows = []
        for t in (10e6, 40e6, 80e6):
            r = min(all_rows, int(t // row_len))
            if r < int(t // row_len) * 0.9:
                continue
            s = run_worker("grokscope", args, rows=r)
            srows.append([f"{r * row_len / 1e6:.0f}M tokens, all phrases", f"{s['sequences']:,}", f"{s['wall_s']:.2f}",
                          f"{s['cpu_s']:.2f}", f"{s['build_cpu_s']:.2f}", f"{s['cpu_s'] - s['build_cpu_s']:.2f}",
                          mtok(r * row_len, s["cpu_s"]), f"{s['peak_mb']:.0f}"])
            results[f"scale_tokens_{int(t / 1e6)}M"] = s
        for n in (1000, 3000, 10000, 30000, None):
            s = run_worker("grokscope", args, rows=rows, n_phrases=n)
            label = f"{n:,} random" if n else f"all {info['phrases']:,}"
            srows.append([f"{tokens / 1e6:.0f}M tokens, {label} phrases", f"{s['sequences']:,}", f"{s['wall_s']:.2f}",
                          f"{s['cpu_s']:.2f}", f"{s['build_cpu_s']:.2f}", f"{s['cpu_s'] - s['build_cpu_s']:.2f}",
                          mtok(tokens, s["cpu_s"]), f"{s['peak_mb']:.0f}"])
            results[f"scale_phrases_{n or 'all'}"] = s
        print_table("Scale (grokscope, one core; cpu = index build + scan)",
                    ["run", "sequences", "wall s", "cpu s", "build cpu s", "scan cpu s", "M tok/s/core", "peak MB"], srows)
    if "dask" not in skip:
        d = run_worker("dask", args, rows=rows)
        results["dask"] = d
        print_table(f"Dask LocalCluster (warm), {d['tokens'] / 1e6:.0f}M tokens in 16 shards, median of "
                    f"{args.dask_repeats} searches", ["workers", "wall s", "wall speedup", "cpu s (all workers)",
                                                             "cpu s (busiest worker)", "speedup on free cores"],
                    [["1", f"{d['wall_1']:.2f}", "1.0×", f"{d['cpu_1']:.2f}", f"{d['cpu_max_1']:.2f}", "1.0×"],
                     ["2", f"{d['wall_2']:.2f}", f"{d['speedup']:.2f}×", f"{d['cpu_2']:.2f}", f"{d['cpu_max_2']:.2f}",
                      f"{d['cpu_speedup']:.2f}×"]])
        print(f"identical totals 1 vs 2 workers: {d['total_1'] == d['total_2']}; wall s of each search: "
              f"1 worker {' '.join(f'{w:.2f}' for w in d['walls_1'])}, 2 workers {' '.join(f'{w:.2f}' for w in d['walls_2'])}")
    load1 = os.getloadavg()
    results["load_after"] = load1
    print(f"\nload average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} on {os.cpu_count()} cores "
          "(timings taken on a shared machine; compare CPU seconds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
