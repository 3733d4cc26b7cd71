"""Scoring benchmark: grokscope vs lm-evaluation-harness and minicons, side by side.

Same CPU, same model directory, same BLiMP pairs, same thread count (``OMP_NUM_THREADS``), each
tool a fresh process timed from start to last result (``wait4`` gives its peak RSS). Prints
log-prob agreement (max |Δ| per convention, accuracy, disagreeing pairs) and speed ratios,
then achieved GFLOP/s of an in-process grokscope run against a large ``torch.matmul``
measured in the same run.

The reference tools are NOT installed by this script. Put them in a separate venv that
shares this environment's torch/transformers::

    python3 -m venv --system-site-packages /work/venvs/refs
    /work/venvs/refs/bin/pip install --dry-run lm-eval minicons   # check: no torch/transformers change
    /work/venvs/refs/bin/pip install lm-eval minicons

Usage::

    python bench/bench_score.py                       # 4x256 and 12x768 GPT-2 shapes, 2,010 pairs
    python bench/bench_score.py --models 4x256 --pairs 670 --minicons-batch-sizes 16
    python bench/bench_score.py --parallel            # all tools at once: compare CPU times (busy machine)
    python bench/bench_score.py --full --models 4x256  # also all 67k pairs with grokscope alone

Random-init models (GPT-2 tokenizer) are created once under ``runs/bench_score/models/``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "runs" / "bench_score"
DATA = Path(os.environ.get("GROKSCOPE_DATA", REPO.parent / "shared" / "data"))
SHAPES = {"4x256": (4, 256, 4), "12x768": (12, 768, 12), "4x256-bpe8k": (4, 256, 4)}
# shapes whose tokenizer is not GPT-2's: the 8,192-id byte-level BPE that studies/corpus_cpu.toml
# trains (run that study's prepare stage first) -- the CPU-study model, where the output layer
# no longer dominates and per-pair overheads decide the speed
TOKENIZERS = {"4x256-bpe8k": REPO / "runs" / "studies" / "corpus_cpu" / "tokens" / "tokenizer"}


@dataclass
class Timed:
    seconds: float  # wall clock, spawn to exit
    cpu: float  # user + system CPU seconds of the process (its own, children excluded)
    peak_mb: float
    out: str


class Launched:
    """A running process; ``wait()`` gives its wall time, CPU time and peak RSS (wait4)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.t0 = time.perf_counter()
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read and closed by wait()
        self.p = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> Timed:
        _, status, usage = os.wait4(self.p.pid, 0)
        seconds = time.perf_counter() - self.t0
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.log.seek(0)
        out = self.log.read()
        if self.p.returncode != 0:
            raise RuntimeError(f"{' '.join(self.cmd[:4])}... failed ({self.p.returncode}):\n{out[-3000:]}")
        return Timed(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out)


def run_timed(cmd: list[str], env: dict[str, str]) -> Timed:
    return Launched(cmd, env).wait()


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def ensure_model(shape: str) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.core.tokenizer import load_tokenizer

    path = WORK / "models" / f"gpt2_{shape}"
    if (path / "model.safetensors").exists():
        return path
    n_layer, n_embd, n_head = SHAPES[shape]
    tok_dir = TOKENIZERS.get(shape, DATA / "tokenizers" / "gpt2")
    if not tok_dir.exists():
        raise SystemExit(f"{shape}: tokenizer {tok_dir} not found (for bpe8k: grokscope prepare --config "
                         "studies/corpus_cpu.toml)")
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=len(tok),
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_pairs(n_pairs: int) -> Path:
    """The first ceil(n/67) pairs of every BLiMP paradigm, in BLiMP's own jsonl format."""
    files = sorted((DATA / "blimp").glob("*.jsonl"))
    per = math.ceil(n_pairs / len(files))
    path = WORK / "data" / f"blimp_{per}_per_paradigm.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            for f in files:
                with open(f, encoding="utf-8") as fh:
                    for k, line in enumerate(fh):
                        if k >= per:
                            break
                        out.write(line if line.endswith("\n") else line + "\n")
    return path


def lm_eval_task_dir(pairs: Path) -> Path:
    """lm-eval's BLiMP task (tasks/blimp/_template_yaml), pointed at a local jsonl."""
    d = WORK / "lm_eval_tasks"
    d.mkdir(parents=True, exist_ok=True)
    (d / "blimp_local.yaml").write_text(textwrap.dedent(f"""\
        task: blimp_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            train: {pairs}
        output_type: multiple_choice
        validation_split: train
        doc_to_text: ""
        doc_to_target: 0
        doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
        num_fewshot: 0
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        metadata:
          version: 1.0
        """))
    return d


MINICONS_RUNNER = r'''
import json, sys
from minicons import scorer
model_dir, pairs_path, out_path, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lm = scorer.IncrementalLMScorer(model_dir, "cpu")
pairs = [json.loads(l) for l in open(pairs_path)]
sents = [s for p in pairs for s in (p["sentence_good"], p["sentence_bad"])]
scores = []
for i in range(0, len(sents), batch_size):
    scores += lm.sequence_score(sents[i:i + batch_size], bos_token=True, reduction=lambda x: x.sum(0).item())
json.dump(scores, open(out_path, "w"))
'''


# ---------------------------------------------------------------------------------------------
# the three tools
# ---------------------------------------------------------------------------------------------
def lm_eval_job(venv: Path, model: Path, pairs: Path, batch_size: int) -> tuple[list[str], Callable[[], np.ndarray]]:
    tasks = lm_eval_task_dir(pairs)
    out = Path(tempfile.mkdtemp(prefix="lmeval_", dir=WORK))
    cmd = [str(venv / "bin" / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", "blimp_local", "--include_path", str(tasks), "--device", "cpu",
           "--batch_size", str(batch_size), "--output_path", str(out), "--log_samples"]

    def parse() -> np.ndarray:
        samples = sorted(out.rglob("samples_blimp_local_*.jsonl"))
        if not samples:
            raise RuntimeError(f"lm-eval wrote no samples under {out}")
        docs = [json.loads(line) for line in Path(samples[-1]).read_text(encoding="utf-8").splitlines()]
        docs.sort(key=lambda d: d["doc_id"])
        return np.array([[r[0][0] if isinstance(r[0], list) else r[0] for r in d["resps"]] for d in docs],
                        dtype=np.float64)  # lm-eval logs the numbers as strings

    return cmd, parse  # parse() -> [n_pairs, 2] (good, bad) log-likelihoods


def minicons_job(venv: Path, model: Path, pairs: Path, batch_size: int) -> tuple[list[str], Callable[[], np.ndarray]]:
    runner = WORK / "minicons_runner.py"
    runner.write_text(MINICONS_RUNNER)
    out = WORK / f"minicons_{model.name}_{batch_size}.json"
    cmd = [str(venv / "bin" / "python"), str(runner), str(model), str(pairs), str(out), str(batch_size)]
    return cmd, lambda: np.array(json.load(open(out)), dtype=np.float64).reshape(-1, 2)


def grokscope_job(model: Path, pairs: Path, convention: str, batch_size: int, threads: int) -> tuple[list[str], Callable[[], np.ndarray]]:
    import pandas as pd

    out = Path(tempfile.mkdtemp(prefix="grokscope_", dir=WORK))
    cmd = [sys.executable, "-m", "grokscope.cli", "score", "--checkpoints", str(model), "--benchmark", str(pairs),
           "--out", str(out), "--step", "0", "--tokens-seen", "0", "--convention", convention,
           "--batch-size", str(batch_size), "--no-hidden", "--no-attention", "--quiet", "--threads", str(threads)]
    return cmd, lambda: pd.read_parquet(out / "scores" / "step_00000000.parquet")[["good_logprob", "bad_logprob"]].to_numpy()


# ---------------------------------------------------------------------------------------------
# in-process throughput vs the machine's matmul limit
# ---------------------------------------------------------------------------------------------
def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best / 1e9


def achieved_gflops(model_dir: Path, pairs_path: Path, batch_size: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.score.stage import ScoreOptions, load_benchmark, score_pairs

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    pairs, _ = load_benchmark(str(pairs_path))
    t0 = time.process_time()
    res = score_pairs(model, tok, pairs, options=ScoreOptions(batch_size=batch_size, progress=False))
    cpu = time.process_time() - t0
    head = model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    body = total - model.get_input_embeddings().weight.numel() - model.transformer.wpe.weight.numel()
    flops = 2 * body * res.stats.tokens_computed + 2 * head * res.stats.logit_rows
    naive_tokens = sum(len(tok(" " + s)["input_ids"]) + 1 for s in pd_concat(pairs))
    return {"seconds": cpu, "pairs_per_s": len(pairs) / cpu, "gflops": flops / cpu / 1e9, "tokens_computed": res.stats.tokens_computed,
            "logit_rows": res.stats.logit_rows, "naive_tokens": naive_tokens,
            "params_M": total / 1e6}


def pd_concat(pairs) -> list[str]:
    return list(pairs["good"]) + list(pairs["bad"])


# ---------------------------------------------------------------------------------------------
def compare(name: str, ours: np.ndarray, theirs: np.ndarray) -> str:
    diff = np.abs(ours - theirs).max()
    acc_o, acc_t = np.mean(ours[:, 0] > ours[:, 1]), np.mean(theirs[:, 0] > theirs[:, 1])
    disagree = int(((ours[:, 0] > ours[:, 1]) != (theirs[:, 0] > theirs[:, 1])).sum())
    return (f"  vs {name:<22} max|Δlogprob| = {diff:.2e}  accuracy {acc_o:.4f} vs {acc_t:.4f}  "
            f"pairs judged differently: {disagree}")


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def bench_model(shape: str, args: argparse.Namespace, env: dict[str, str], pairs: Path, n_pairs: int) -> None:
    model = ensure_model(shape)
    print(f"\n=== GPT-2 {shape} ({model}) — {n_pairs} pairs, {args.threads} thread(s), "
          f"{'all tools at once' if args.parallel else 'one tool at a time'}, load {load_average()} ===")
    jobs = [("grokscope lm_eval conv.", *grokscope_job(model, pairs, "lm_eval", args.batch_size, args.threads)),
            ("grokscope minicons conv.", *grokscope_job(model, pairs, "minicons", args.batch_size, args.threads))]
    if not args.skip_lm_eval:
        for bs in args.lm_eval_batch_sizes:
            jobs.append((f"lm-eval (batch {bs})", *lm_eval_job(args.venv, model, pairs, bs)))
    for bs in args.minicons_batch_sizes:
        jobs.append((f"minicons (batch {bs})", *minicons_job(args.venv, model, pairs, bs)))
    results: dict[str, tuple[Timed, np.ndarray]] = {}
    if args.parallel:
        launched = [(name, Launched(cmd, env), parse) for name, cmd, parse in jobs]
        for name, proc, parse in launched:
            results[name] = (proc.wait(), parse())
    else:
        for name, cmd, parse in jobs:
            results[name] = (run_timed(cmd, env), parse())
    print(f"{'tool':<26} {'CPU s':>8} {'wall s':>8} {'peak MB':>8} {'pairs/CPU-s':>12}")
    for name, (t, _) in results.items():
        print(f"{name:<26} {t.cpu:8.1f} {t.seconds:8.1f} {t.peak_mb:8.0f} {n_pairs / t.cpu:12.1f}")
    ours_lm = results["grokscope lm_eval conv."]
    ours_mc = results["grokscope minicons conv."]
    print("agreement (same model, same pairs):")
    ratios = []
    for tool, ours in (("lm-eval", ours_lm), ("minicons", ours_mc)):
        theirs = [(name, t, numbers) for name, (t, numbers) in results.items() if name.startswith(tool)]
        for name, t, numbers in theirs:
            print(compare(name, ours[1], numbers))
            ratios.append((name, t, ours[0]))
        if len(theirs) > 1:  # several batch sizes: the fastest again, as the reference
            name, t, _ = min(theirs, key=lambda x: x[1].cpu if args.parallel else x[1].seconds)
            ratios.append((name + " = best", t, ours[0]))
    if args.parallel:  # tools competing for the cores: only CPU time is comparable
        print("speed-up of grokscope, whole process start to last result (CPU time; wall time in brackets):")
        for name, ref, own in ratios:
            print(f"  vs {name:<28} {ref.cpu / own.cpu:5.2f}x  ({ref.cpu:.1f} / {own.cpu:.1f} CPU s)"
                  f"   [wall {ref.seconds / own.seconds:5.2f}x: {ref.seconds:.1f} / {own.seconds:.1f} s]")
    else:
        print("speed-up of grokscope, whole process start to last result (wall time; CPU time in brackets):")
        for name, ref, own in ratios:
            print(f"  vs {name:<28} {ref.seconds / own.seconds:5.2f}x  ({ref.seconds:.1f} / {own.seconds:.1f} s)"
                  f"   [CPU {ref.cpu / own.cpu:5.2f}x: {ref.cpu:.1f} / {own.cpu:.1f} CPU s]")
    if args.skip_flops:
        return
    t_cpu = time.process_time()
    mm = matmul_gflops()
    ach = achieved_gflops(model, pairs, args.batch_size)
    print(f"in-process scoring: {ach['pairs_per_s']:.1f} pairs/CPU-s, {ach['gflops']:.1f} GFLOP/s achieved "
          f"(2 x params x tokens computed: {ach['tokens_computed']} body positions, {ach['logit_rows']} logit rows; "
          f"a per-sentence [BOS]+tokens layout has {ach['naive_tokens']}) vs torch.matmul 2048^2: {mm:.1f} GFLOP/s "
          f"-> {ach['gflops'] / mm:.0%} of the matmul rate (CPU-time based; {time.process_time() - t_cpu:.0f} CPU s); "
          f"load {load_average()}")


def bench_full(shape: str, args: argparse.Namespace, env: dict[str, str]) -> None:
    model = ensure_model(shape)
    phrases = REPO / "runs" / "blimp_phrases" / "phrases.parquet"
    out = Path(tempfile.mkdtemp(prefix="full_", dir=WORK))
    cmd = [sys.executable, "-m", "grokscope.cli", "score", "--checkpoints", str(model), "--out", str(out),
           "--step", "0", "--tokens-seen", "0", "--batch-size", str(args.batch_size), "--quiet",
           "--threads", str(args.threads)]
    capture = args.full_capture and phrases.exists()
    if capture:
        cmd += ["--phrases", str(phrases)]
    else:
        cmd += ["--benchmark", str(DATA / "blimp"), "--skip-invalid", "--no-hidden", "--no-attention"]
    print(f"\n=== all BLiMP pairs, GPT-2 {shape}, {args.threads} thread(s), load {load_average()} ===")
    t = run_timed(cmd, env)
    print(t.out.strip().splitlines()[-3] if t.out.strip() else "")
    print(f"whole process {t.cpu:.0f} CPU s ({t.seconds:.0f} s wall), peak {t.peak_mb:.0f} MB (hidden states + attention captured: "
          f"{capture}); load {load_average()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="4x256,12x768")
    ap.add_argument("--pairs", type=int, default=2010)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="OMP_NUM_THREADS for every tool (default: every core, what each tool uses when run as is)")
    ap.add_argument("--batch-size", type=int, default=64, help="grokscope pairs per batch")
    ap.add_argument("--lm-eval-batch-sizes", default="64",
                    help="comma-separated; lm-eval's own default is 1, 64 was its fastest here")
    ap.add_argument("--minicons-batch-sizes", default="8,32,128")
    ap.add_argument("--venv", type=Path, default=Path("/work/venvs/refs"))
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--full", action="store_true", help="also time all BLiMP pairs with grokscope")
    ap.add_argument("--full-capture", action="store_true",
                    help="--full with critical phrases (runs/blimp_phrases), hidden states and attention captured")
    ap.add_argument("--parallel", action="store_true",
                    help="start all tools at once (compare CPU times; use on a busy shared machine)")
    ap.add_argument("--skip-flops", action="store_true")
    ap.add_argument("--only-flops", action="store_true", help="only the in-process GFLOP/s vs matmul measurement")
    ap.add_argument("--only-full", action="store_true")
    args = ap.parse_args()
    args.minicons_batch_sizes = [int(x) for x in args.minicons_batch_sizes.split(",") if x]
    args.lm_eval_batch_sizes = [int(x) for x in args.lm_eval_batch_sizes.split(",") if x]
    for tool in ("lm_eval", "python"):
        if not (args.venv / "bin" / tool).exists():
            sys.exit(f"{args.venv}/bin/{tool} not found: create the reference venv (see this file's docstring)")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch

    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs(args.pairs)
    n_pairs = len(Path(pairs).read_text(encoding="utf-8").splitlines())
    print(f"CPU cores {os.cpu_count()}, load average {load_average()} (shared machine: ratios are measured "
          "in the same run; absolute times are noisy)")
    shapes = [s for s in args.models.split(",") if s]
    if args.only_flops:
        for shape in shapes:
            model = ensure_model(shape)
            mm = matmul_gflops()
            ach = achieved_gflops(model, pairs, args.batch_size)
            print(f"GPT-2 {shape}, {n_pairs} pairs in-process: {ach}; torch.matmul 2048^2: {mm:.1f} GFLOP/s -> "
                  f"{ach['gflops'] / mm:.0%}; load {load_average()}")
        return
    if not args.only_full:
        for shape in shapes:
            bench_model(shape, args, env, pairs, n_pairs)
    if args.full or args.only_full:
        for shape in shapes:
            bench_full(shape, args, env)


if __name__ == "__main__":
    main()
