"""GPU check: trainer tokens/s + MFU, and bf16 scoring pairs/s against lm-evaluation-harness.

One prepared run for a GPU machine that cannot reach any hub (run it through
``bench/gpu_check.sh``). Everything is built locally: random-init GPT-2 models from a config,
a synthetic token stream for training (``bench_train.synthetic_stream``), and for scoring the
GPT-2 tokenizer + BLiMP pairs from the data directory (``--data``, ``$GROKSCOPE_DATA``,
``shared/data`` inside the repo or ``../shared/data`` beside it). Without a data directory the
script generates grokscope's own testbed pairs and trains a byte-level BPE tokenizer on the
testbed corpus itself (the GPT-2-small model keeps GPT-2's 50,257-row vocabulary either way,
so the compute per token is GPT-2-small's).

Parts, each with a step/pair count sized for an H200 and a share of ``--budget-s`` (480 s):

1. ``train_gpt2_small``: grokscope's Trainer, GPT-2-small (12 x 768, 12 heads), bf16 autocast on
   CUDA (the trainer's own choice; float32 on CPU), context 1024.
2. ``train_paper_35m``: the same for the paper's ~35M model. DESIGN.md gives only "~35M
   parameters", not the shape; this uses 6 layers x 512 wide, 8 heads (with GPT-2's vocabulary
   that is 45.2M parameters with the padded 50,304-row embedding and 1,024 positions, 18.9M without embeddings).
3. ``score_gpt2_small``: grokscope's scorer (``grokscope score``, bf16) and, when it is
   installed, lm-evaluation-harness (``lm_eval --model hf``, dtype=bfloat16) on the same model
   directory and pairs, each a fresh process timed start to exit; plus grokscope's in-process
   pairs/s after a warm-up pass. Max |Δ log-prob| between the two tools when both ran.

MFU = trainer FLOPs per token (6N + 12·L·d·T, ``train.recipe.flops_per_token``) x tokens/s /
peak. Peak: ``--peak-tflops``; default 989 (H200 bf16 dense) on CUDA, and on CPU the
measured float32 ``torch.matmul`` rate (so the CPU figure is "fraction of this CPU's matmul").

Results: ``gpu_check.json`` (rewritten after every part) and ``gpu_check.txt`` in ``--out``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_score  # noqa: E402 - bench/ siblings, imported by path
from bench_train import synthetic_stream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
H200_BF16_DENSE_TFLOPS = 989.0
GPT2_VOCAB = 50257


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: full (an H200 in <= 8 minutes) or tiny (a CPU test in seconds)."""

    shapes: dict[str, tuple[int, int, int]]  # part -> (n_layer, n_embd, n_head)
    batch: dict[str, int]
    seq_len: int
    train_steps: int
    vocab: int  # synthetic training stream's vocabulary
    score_shape: tuple[int, int, int]
    pairs: int
    score_batch: int
    lm_eval_batch: int


FULL = Plan(shapes={"train_gpt2_small": (12, 768, 12), "train_paper_35m": (6, 512, 8)},
            batch={"train_gpt2_small": 32, "train_paper_35m": 64}, seq_len=1024, train_steps=150,
            vocab=GPT2_VOCAB, score_shape=(12, 768, 12), pairs=6700, score_batch=256, lm_eval_batch=256)
TINY = Plan(shapes={"train_gpt2_small": (2, 64, 2), "train_paper_35m": (2, 32, 2)},
            batch={"train_gpt2_small": 4, "train_paper_35m": 4}, seq_len=32, train_steps=20,
            vocab=512, score_shape=(2, 64, 2), pairs=67, score_batch=32, lm_eval_batch=32)


class CheckFailed(Exception):
    """A condition that ends the check with one message and a non-zero exit."""


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "transformers": transformers.__version__, "python": sys.version.split()[0]}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise CheckFailed(f"--device cuda but torch {torch.__version__} sees no CUDA GPU "
                              f"(torch.version.cuda={torch.version.cuda}); run on a GPU machine or pass --device cpu")
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                   bf16_supported=bool(torch.cuda.is_bf16_supported()))
    else:
        env.update(gpu=None, cpu_threads=torch.get_num_threads())
    return env


def peak_tflops(device: str, given: float, tiny: bool) -> tuple[float, str]:
    """The peak assumed for MFU and where it came from."""
    if given > 0:
        return given, "--peak-tflops"
    if device == "cuda":
        return H200_BF16_DENSE_TFLOPS, "H200 bf16 dense (default; override with --peak-tflops)"
    rate = bench_score.matmul_gflops(n=512 if tiny else 2048, repeats=3) / 1e3
    return rate, "measured float32 torch.matmul on this CPU (CPU time)"


def find_data(given: str) -> Path | None:
    """A data directory holding tokenizers/gpt2 and blimp/, or None."""
    candidates = [given] if given else []
    candidates += [os.environ.get("GROKSCOPE_DATA", ""), str(REPO / "shared" / "data"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "tokenizers" / "gpt2" / "vocab.json").exists() and any((Path(c) / "blimp").glob("*.jsonl")):
            return Path(c)
    if given:
        raise CheckFailed(f"--data {given}: expected tokenizers/gpt2/{{vocab.json,merges.txt}} and blimp/*.jsonl there")
    return None


def lm_eval_command(given: str) -> list[str] | None:
    """How to start lm-eval here: --lm-eval, the reference venv, lm_eval on PATH, or python -m lm_eval."""
    if given:
        return [given]
    venv = Path("/work/venvs/refs/bin/lm_eval")
    if venv.exists():
        return [str(venv)]
    found = shutil.which("lm_eval")
    if found:
        return [found]
    if importlib.util.find_spec("lm_eval") is not None:
        return [sys.executable, "-m", "lm_eval"]
    return None


# ---------------------------------------------------------------------------------------------
# part 1/2: training
# ---------------------------------------------------------------------------------------------
def train_part(name: str, plan: Plan, device: str, peak: float, work: Path) -> dict[str, Any]:
    import pandas as pd

    from grokscope.core.config import TrainSection
    from grokscope.train.recipe import flops_per_token, model_flops_utilisation
    from grokscope.train.trainer import Trainer

    n_layer, n_embd, n_head = plan.shapes[name]
    B, steps = plan.batch[name], plan.train_steps
    root = Path(tempfile.mkdtemp(prefix=name + "_", dir=work))
    tokens = synthetic_stream(root, steps * B, plan.seq_len, plan.vocab)
    cfg = TrainSection(n_layer=n_layer, n_embd=n_embd, n_head=n_head, batch_size=B, max_steps=steps,
                       warmup_steps=min(10, steps), device=device, log_spaced_until=0, checkpoint_every=steps,
                       state_every=steps, state_seconds=0.0, peak_tflops=peak)
    res = Trainer(cfg, tokens, root / "run", peak_tflops=peak, progress=False).fit()
    loss = pd.read_parquet(root / "run" / "loss.parquet")
    flops_token = flops_per_token(res.n_params - plan.seq_len * n_embd, n_layer, n_embd, plan.seq_len)
    # per-interval rates (10 steps each); the first holds CUDA start-up / kernel selection
    rates = pd.unique(loss["tokens_per_s"]).astype(np.float64)
    steady = float(statistics.median(rates[1:])) if len(rates) > 1 else res.tokens_per_s
    shutil.rmtree(root, ignore_errors=True)
    return {"shape": f"{n_layer}x{n_embd}, {n_head} heads", "n_params": res.n_params, "batch_size": B,
            "seq_len": plan.seq_len, "steps": res.steps_run, "dtype": "bf16 autocast" if device == "cuda" else "float32",
            "tokens_per_s": res.tokens_per_s, "mfu": res.mfu,
            "steady_tokens_per_s": steady, "steady_mfu": model_flops_utilisation(flops_token, steady, peak),
            "flops_per_token": flops_token, "train_seconds": res.train_seconds, "save_seconds": res.save_seconds,
            "final_loss": res.final_loss}


# ---------------------------------------------------------------------------------------------
# part 3: scoring inputs (BLiMP + GPT-2 tokenizer, or the testbed + a tokenizer trained here)
# ---------------------------------------------------------------------------------------------
def testbed_inputs(work: Path, n_pairs: int) -> tuple[Path, Path]:
    """Testbed pairs (jsonl) and a byte-level BPE trained on the testbed corpus, saved as a directory."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from grokscope.data.testbed import TestbedSettings, generate

    tb = generate(TestbedSettings(n_documents=200, pairs_per_paradigm=max(1, n_pairs // 3 + 1), frequency=2))
    pairs = work / "testbed_pairs.jsonl"
    with open(pairs, "w", encoding="utf-8") as fh:
        for p in tb.pairs[:n_pairs]:
            fh.write(json.dumps(p.to_json()) + "\n")
    bpe = ByteLevelBPETokenizer()
    texts = list(tb.documents) + [s for p in tb.pairs for s in (p.good, p.bad)]
    bpe.train_from_iterator(texts, vocab_size=2048, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok_dir = work / "testbed_tokenizer"
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(tok_dir)
    return pairs, tok_dir


def build_score_model(work: Path, shape: tuple[int, int, int], tok_dir: Path, min_vocab: int) -> Path:
    """A random-init GPT-2 of ``shape`` beside its tokenizer; vocabulary max(tokenizer, min_vocab)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.core.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir)
    n_layer, n_embd, n_head = shape
    path = work / f"gpt2_{n_layer}x{n_embd}_{tok_dir.name}"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                                       vocab_size=max(len(tok), min_vocab),
                                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def score_inputs(work: Path, data: Path | None, plan: Plan, tiny: bool) -> tuple[Path, Path, str]:
    bench_score.WORK = work  # bench_score's helpers write under WORK and read DATA
    if data is not None:
        bench_score.DATA = data
        pairs = bench_score.write_pairs(plan.pairs)
        tok_dir, source = data / "tokenizers" / "gpt2", f"BLiMP + GPT-2 tokenizer from {data}"
    else:
        pairs, tok_dir = testbed_inputs(work, plan.pairs)
        source = "no data directory: grokscope testbed pairs + byte-level BPE (2,048 ids) trained here"
    model = build_score_model(work, plan.score_shape, tok_dir, 0 if tiny else GPT2_VOCAB)
    return model, pairs, source


# ---------------------------------------------------------------------------------------------
# part 3: scoring
# ---------------------------------------------------------------------------------------------
def in_process_pairs_per_s(model_dir: Path, pairs_path: Path, device: str, batch: int) -> dict[str, float]:
    """grokscope's scorer in this process, bf16 on CUDA: one warm-up pass, then one timed pass."""
    from grokscope.core.checkpoints import Checkpoint, load_model
    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.score.stage import ScoreOptions, load_benchmark, score_pairs

    dtype = "bfloat16" if device == "cuda" else "float32"
    model = load_model(Checkpoint(str(model_dir), None, 0, 0, "hf_dir"), device, dtype, progress=False)
    tok = load_tokenizer(model_dir)
    pairs, _ = load_benchmark(str(pairs_path))
    opts = ScoreOptions(batch_size=batch, progress=False)
    score_pairs(model, tok, pairs, options=opts)  # warm-up: kernels, allocator
    res = score_pairs(model, tok, pairs, options=opts)
    return {"pairs_per_s": len(pairs) / res.stats.seconds, "seconds": res.stats.seconds, "dtype": dtype}


def score_part(model: Path, pairs: Path, device: str, plan: Plan, lm_eval: list[str] | None,
               budget_left: float) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    dtype = "bfloat16" if device == "cuda" else "float32"
    n_pairs = len(pairs.read_text(encoding="utf-8").splitlines())
    out: dict[str, Any] = {"n_pairs": n_pairs, "dtype": dtype, "model": str(model), "pairs_file": str(pairs)}
    cmd, parse = bench_score.grokscope_job(model, pairs, "lm_eval", plan.score_batch, threads)
    t = bench_score.run_timed(cmd + ["--device", device, "--dtype", dtype], env)
    ours = np.asarray(parse(), dtype=np.float64)
    out["grokscope"] = {"process_seconds": t.seconds, "pairs_per_s": n_pairs / t.seconds, "peak_rss_mb": t.peak_mb,
                        "accuracy": float(np.mean(ours[:, 0] > ours[:, 1]))}
    out["grokscope"]["in_process"] = in_process_pairs_per_s(model, pairs, device, plan.score_batch)
    if lm_eval is None:
        out["lm_eval"] = {"skipped": "lm-eval is not installed here (no lm_eval on PATH, no python -m lm_eval)"}
        return out
    if budget_left < 60:
        out["lm_eval"] = {"skipped": f"time budget: only {budget_left:.0f} s left"}
        return out
    cmd, parse = bench_score.lm_eval_job(Path("/nonexistent"), model, pairs, plan.lm_eval_batch)
    cmd = lm_eval + cmd[1:]
    cmd[cmd.index("--device") + 1] = device
    cmd[cmd.index("--model_args") + 1] = f"pretrained={model},dtype={dtype}"
    try:
        t = bench_score.run_timed(cmd, env)
        theirs = np.asarray(parse(), dtype=np.float64)
    except RuntimeError as e:
        out["lm_eval"] = {"skipped": f"lm-eval failed: {str(e).splitlines()[0]}", "log_tail": str(e)[-1500:]}
        return out
    decisions = (ours[:, 0] > ours[:, 1]) != (theirs[:, 0] > theirs[:, 1])
    out["lm_eval"] = {"process_seconds": t.seconds, "pairs_per_s": n_pairs / t.seconds, "peak_rss_mb": t.peak_mb,
                      "batch_size": plan.lm_eval_batch, "accuracy": float(np.mean(theirs[:, 0] > theirs[:, 1]))}
    out["max_abs_delta_logprob"] = float(np.abs(ours - theirs).max())
    out["pairs_judged_differently"] = int(decisions.sum())
    out["speedup_vs_lm_eval"] = out["lm_eval"]["process_seconds"] / out["grokscope"]["process_seconds"]
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _f(x: Any, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def table(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"grokscope GPU check ({'tiny' if result['tiny'] else 'full'} plan) on {env['device']}: "
             f"{env.get('gpu') or 'CPU'}; torch {env['torch']}, CUDA {env['cuda']}, transformers {env['transformers']}",
             f"peak assumed for MFU: {result['peak_tflops']:.3g} TFLOP/s ({result['peak_source']})", "",
             f"{'training (grokscope Trainer)':<30} {'params':>8} {'B x T':>10} {'steps':>6} {'tokens/s':>11} "
             f"{'MFU':>7} {'steady tok/s':>13} {'steady MFU':>10} {'part s':>7}"]
    for name in ("train_gpt2_small", "train_paper_35m"):
        r = result["parts"].get(name)
        if r is None or "error" in r or "skipped" in r:
            lines.append(f"{name:<30} {(r or {}).get('error') or (r or {}).get('skipped') or 'not run'}")
            continue
        lines.append(f"{name + ' ' + r['shape']:<30} {r['n_params'] / 1e6:7.1f}M {r['batch_size']:>4} x {r['seq_len']:<4} "
                     f"{r['steps']:>6} {r['tokens_per_s']:>11,.0f} {_f(r['mfu'] and 100 * r['mfu'], '6.2f')}% "
                     f"{r['steady_tokens_per_s']:>13,.0f} {100 * r['steady_mfu']:9.2f}% {r['part_seconds']:7.1f}")
    s = result["parts"].get("score_gpt2_small")
    lines.append("")
    if s is None or "error" in s:
        lines.append(f"scoring: {(s or {}).get('error', 'not run')}")
    else:
        g, lm = s["grokscope"], s["lm_eval"]
        lines += [f"scoring GPT-2-small shape, {s['n_pairs']} pairs, {s['dtype']} ({s['inputs']}); part {s['part_seconds']:.1f} s",
                  f"  grokscope whole process: {g['process_seconds']:7.1f} s = {g['pairs_per_s']:9,.1f} pairs/s",
                  f"  grokscope in-process (after warm-up): {g['in_process']['pairs_per_s']:9,.1f} pairs/s"]
        if "skipped" in lm:
            lines.append(f"  lm-eval: skipped ({lm['skipped']})")
        else:
            lines += [f"  lm-eval whole process:   {lm['process_seconds']:7.1f} s = {lm['pairs_per_s']:9,.1f} pairs/s "
                      f"(batch {lm['batch_size']})",
                      f"  grokscope / lm-eval: {s['speedup_vs_lm_eval']:.2f}x; max |Δ log-prob| = "
                      f"{s['max_abs_delta_logprob']:.3g}; pairs judged differently: {s['pairs_judged_differently']}; "
                      f"accuracy {g['accuracy']:.4f} vs {lm['accuracy']:.4f}"]
    lines.append(f"\ntotal {result['total_seconds']:.1f} s (budget {result['budget_s']:.0f} s)")
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "gpu_check.txt").write_text(table(result) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny models, few steps, few pairs (a CPU test of the script)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "out" / "gpu_check"))
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help=f"device peak for MFU (default: {H200_BF16_DENSE_TFLOPS:g} on cuda = H200 bf16 dense; "
                         "on cpu the measured float32 matmul rate)")
    ap.add_argument("--data", default="", help="directory with tokenizers/gpt2 and blimp/ (default: $GROKSCOPE_DATA, "
                    "shared/data in the repo, ../shared/data; else testbed pairs + a tokenizer trained here)")
    ap.add_argument("--lm-eval", default="", help="lm_eval executable (default: found automatically)")
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--train-steps", type=int, default=0, help="override the plan's optimizer steps per model")
    ap.add_argument("--pairs", type=int, default=0, help="override the plan's number of pairs")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="hard time budget: a part that would start after it is skipped")
    return ap.parse_args(argv)


def run_parts(args: argparse.Namespace, plan: Plan, result: dict[str, Any], out: Path, work: Path, t0: float) -> None:
    device = args.device
    for name in ("train_gpt2_small", "train_paper_35m", "score_gpt2_small"):
        left = args.budget_s - (time.perf_counter() - t0)
        if left < (30 if args.tiny else 60):
            result["parts"][name] = {"skipped": f"time budget: {left:.0f} s left of {args.budget_s:.0f}"}
            continue
        tp = time.perf_counter()
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} ...", flush=True)
        try:
            if name.startswith("train"):
                part = train_part(name, plan, device, result["peak_tflops"], work)
            else:
                model, pairs, source = score_inputs(work, find_data(args.data), plan, args.tiny)
                lm = None if args.skip_lm_eval else lm_eval_command(args.lm_eval)
                part = score_part(model, pairs, device, plan, lm, left - (time.perf_counter() - tp))
                part["inputs"] = source
                if args.skip_lm_eval:
                    part["lm_eval"] = {"skipped": "--skip-lm-eval"}
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' figures
            part = {"error": f"{type(e).__name__}: {e}"}
        part["part_seconds"] = time.perf_counter() - tp
        result["parts"][name] = part
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} done in {part['part_seconds']:.1f} s", flush=True)
        result["total_seconds"] = time.perf_counter() - t0
        write(result, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    plan = TINY if args.tiny else FULL
    if args.train_steps or args.pairs:
        plan = Plan(**{**plan.__dict__, "train_steps": args.train_steps or plan.train_steps,
                       "pairs": args.pairs or plan.pairs})
    out = Path(args.out)
    try:
        env = environment(args.device)
        peak, peak_source = peak_tflops(args.device, args.peak_tflops, args.tiny)
        find_data(args.data)  # a wrong --data fails now, not after training
    except CheckFailed as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 1
    print(f"{env.get('gpu') or 'CPU'}; torch {env['torch']}, CUDA {env['cuda']}; peak for MFU {peak:.3g} TFLOP/s "
          f"({peak_source})", flush=True)
    result: dict[str, Any] = {"tiny": args.tiny, "environment": env, "peak_tflops": peak, "peak_source": peak_source,
                              "budget_s": args.budget_s, "plan": plan.__dict__, "parts": {}, "total_seconds": 0.0}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        run_parts(args, plan, result, out, work, t0)
    except CheckFailed as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["total_seconds"] = time.perf_counter() - t0
    write(result, out)
    print(table(result))
    print(f"\nwritten: {out / 'gpu_check.json'}, {out / 'gpu_check.txt'}")
    failed = [n for n, p in result["parts"].items() if "error" in p]
    if failed:
        print(f"gpu_check: part(s) failed: {', '.join(failed)} (see {out / 'gpu_check.json'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
