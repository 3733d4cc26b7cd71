"""What makes the trainer's step faster on a CPU (issue #20): torch.compile, foreach / fused AdamW,
thread settings and sequence length, each against today's step in the same run.

Every variant runs in its own fresh process (so one variant's threads, compiled code or allocator
state cannot help another), on the trainer's own building blocks (``grokscope.train.recipe``:
``build_model``, ``param_groups``, the LambdaLR schedule, ``lm_loss``, gradient clipping,
deterministic CPU kernels), the same seed and so the same initial weights, and the same rows of a
prepared stream in training order. Tokens/s is measured over ``--steps`` steps after ``--warmup``
(compilation happens in the warm-up; its seconds are reported separately). Variants run in
rounds (each opened by a discarded run, the variants in a seeded random order) and the ratio
against today's step is the median over rounds.

``--isa avx2`` runs every process with ``ATEN_CPU_CAPABILITY=avx2`` and ``ONEDNN_MAX_CPU_ISA=AVX2``:
PyTorch's and oneDNN's kernels then use AVX2 only, as on a CPU without AVX-512 (check
``/proc/cpuinfo``: this bench prints what the machine has).

A variant is adopted only if it gives >= 1.2x tokens/s *and* its loss after ``--loss-steps`` (300)
steps is within 1% of today's: that check trains both for 300 steps on the same rows.

    python bench/bench_train_cpu.py --tokens runs/corpus_gpt2/tokens [--isa avx2] [--rounds 3]
    python bench/bench_train_cpu.py --quick      # a smoke run: tiny model, few steps
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENS = REPO / "runs" / "corpus_gpt2" / "tokens"

# name: (what it changes, options of the worker)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "today": ("the trainer's step (AdamW for-loop on CPU, all cores)", {}),
    "adamw-foreach": ("AdamW(foreach=True)", {"optimizer": "foreach"}),
    "adamw-fused": ("AdamW(fused=True) (CPU kernel)", {"optimizer": "fused"}),
    "compile": ("torch.compile(model) (inductor, C++ codegen)", {"compile": True}),
    "compile+fused": ("torch.compile + fused AdamW", {"compile": True, "optimizer": "fused"}),
    "1-thread": ("torch.set_num_threads(1)", {"threads": 1}),
    "interop-1": ("torch.set_num_interop_threads(1)", {"interop": 1}),
    "no-deterministic": ("torch.use_deterministic_algorithms(False)", {"deterministic": False}),
}
SEQ_LENS = (64, 256)  # tokens/s at other sequence lengths, the same tokens per step


def isa_env(isa: str) -> dict[str, str]:
    env = dict(os.environ)
    if isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    return env


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


# ---------------------------------------------------------------------------------------------
# worker: one variant in this process
# ---------------------------------------------------------------------------------------------
def worker(a: argparse.Namespace) -> dict[str, object]:
    import numpy as np
    import torch

    from grokscope.core.config import TrainSection
    from grokscope.train.recipe import batch_tensors, build_model, lm_loss, lr_multiplier, param_groups, seed_everything

    opts = json.loads(a.options)
    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    if opts.get("interop"):
        torch.set_num_interop_threads(int(opts["interop"]))
    torch.use_deterministic_algorithms(bool(opts.get("deterministic", True)))
    cfg = TrainSection(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, batch_size=a.batch_size,
                       max_steps=max(a.loss_steps, a.warmup + a.steps), warmup_steps=min(100, a.loss_steps // 3))
    tokens = np.load(Path(a.tokens) / "tokens.npy", mmap_mode="r")
    manifest = json.loads((Path(a.tokens) / "manifest.json").read_text())
    vocab = int(manifest["vocab_size"])
    seq_len = a.seq_len or tokens.shape[1] - 1
    B = a.batch_size * (tokens.shape[1] - 1) // seq_len  # the same tokens per step at every length
    flat = np.asarray(tokens[: (a.warmup + max(a.steps, a.loss_steps)) * a.batch_size + 8]).reshape(-1)

    def rows(s: int) -> np.ndarray:
        n = B * (seq_len + 1)
        return flat[(s * n) % (flat.size - n):][:n].reshape(B, seq_len + 1)

    seed_everything(0)
    model = build_model(cfg, -(-vocab // 64) * 64, seq_len, int(manifest["eos_id"]))
    impl = opts.get("optimizer")
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  eps=1e-8, foreach=True if impl == "foreach" else None,
                                  fused=True if impl == "fused" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if opts.get("compile") else model

    def step(s: int) -> float:
        inputs, targets = batch_tensors(rows(s), "cpu")
        loss = lm_loss(forward, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    out: dict[str, object] = {"seq_len": seq_len, "batch": B}
    t0 = time.perf_counter()
    for s in range(a.warmup):
        step(s)
    out["warmup_s"] = time.perf_counter() - t0
    if a.mode == "speed":
        t0 = time.perf_counter()
        for s in range(a.warmup, a.warmup + a.steps):
            step(s)
        dt = time.perf_counter() - t0
        out["tokens_per_s"] = a.steps * B * seq_len / dt
    else:
        losses = [step(s) for s in range(a.warmup, a.loss_steps)]
        out["loss_final"] = losses[-1]
        out["loss_last10"] = float(np.mean(losses[-10:]))
    return out


def run_worker(a: argparse.Namespace, options: dict[str, object], mode: str, seq_len: int = 0) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", "--options", json.dumps(options), "--mode", mode,
           "--tokens", str(a.tokens), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--loss-steps", str(a.loss_steps), "--n-layer", str(a.n_layer), "--n-embd", str(a.n_embd),
           "--n-head", str(a.n_head), "--batch-size", str(a.batch_size), "--seq-len", str(seq_len)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=isa_env(a.isa))
    if p.returncode != 0:
        raise SystemExit(f"worker {options} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=Path, default=DEFAULT_TOKENS, help="a prepared tokens/ directory")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--loss-steps", type=int, default=300)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="tiny model, 3 timed steps, 1 round, 30 loss steps")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="speed", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return 0
    if a.quick:
        a.n_layer, a.n_embd, a.n_head, a.batch_size, a.steps, a.warmup, a.rounds, a.loss_steps = 1, 32, 2, 4, 3, 2, 1, 30
    if not (a.tokens / "tokens.npy").exists():
        raise SystemExit(f"{a.tokens}: no tokens.npy; prepare a stream first (grokscope prepare) or pass --tokens")
    names = [n for n in a.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or "today" not in names:
        raise SystemExit(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)}; 'today' is required)")
    import torch

    print(f"CPU: {cpu_flags()} ({os.cpu_count()} cores), kernels: --isa {a.isa}; torch {torch.__version__}; "
          f"model {a.n_layer}x{a.n_embd}, {a.batch_size} rows a step, {a.steps} timed steps after {a.warmup}",
          flush=True)
    speed: dict[str, list[float]] = {n: [] for n in names}
    seq_speed: dict[int, list[float]] = {L: [] for L in SEQ_LENS}
    warm: dict[str, float] = {}
    for r in range(a.rounds):
        # the first worker of a round ran 25-35% slow on an AMD EPYC (2026-12-06: today's step 842 tok/s
        # first, 1,225 last), whatever it ran: a discarded run first, then the variants in a seeded random
        # order, so no variant always holds the slow slot
        run_worker(a, VARIANTS["today"][1], "speed")
        order = [names[i] for i in random.Random(r).sample(range(len(names)), len(names))]
        for n in order:
            out = run_worker(a, VARIANTS[n][1], "speed")
            speed[n].append(float(out["tokens_per_s"]))  # type: ignore[arg-type]
            warm[n] = float(out["warmup_s"])  # type: ignore[arg-type]
            print(f"  round {r + 1} {n:<17} {speed[n][-1]:>9,.0f} tokens/s  (warm-up {warm[n]:.1f} s)", flush=True)
        for L in SEQ_LENS:
            seq_speed[L].append(float(run_worker(a, {}, "speed", L)["tokens_per_s"]))  # type: ignore[arg-type]
    base = statistics.median(speed["today"])
    ratios = {n: statistics.median(s / t for s, t in zip(speed[n], speed["today"], strict=True)) for n in names}
    print(f"\n{'variant':<17} {'what':<52} {'tokens/s':>9} {'vs today':>9} {'warm-up s':>9}")
    for n in names:
        print(f"{n:<17} {VARIANTS[n][0]:<52} {statistics.median(speed[n]):>9,.0f} {ratios[n]:>8.2f}x {warm[n]:>9.1f}")
    for L in SEQ_LENS:
        print(f"{'seq ' + str(L):<17} {'sequence length ' + str(L) + ' (same tokens a step)':<52} "
              f"{statistics.median(seq_speed[L]):>9,.0f} {statistics.median(seq_speed[L]) / base:>8.2f}x")
    fast = [n for n in names if n != "today" and ratios[n] >= 1.2]
    losses: dict[str, dict[str, object]] = {}
    if fast:
        print(f"\nloss after {a.loss_steps} steps (same rows, same initial weights):")
        for n in ["today"] + fast:
            losses[n] = run_worker(a, VARIANTS[n][1], "loss")
        ref = float(losses["today"]["loss_final"])  # type: ignore[arg-type]
        for n in ["today"] + fast:
            lf = float(losses[n]["loss_final"])  # type: ignore[arg-type]
            rel = abs(lf - ref) / ref
            verdict = "" if n == "today" else ("  adopt (>= 1.2x, loss within 1%)" if rel <= 0.01 else "  loss differs")
            print(f"  {n:<17} loss {lf:.4f} (mean of last 10: {float(losses[n]['loss_last10']):.4f}), "  # type: ignore[arg-type]
                  f"{100 * rel:.2f}% from today{verdict}")
    else:
        print("\nno variant reaches 1.2x today's tokens/s: nothing to adopt")
    if a.json:
        a.json.write_text(json.dumps({"isa": a.isa, "cpu": cpu_flags(), "speed": speed, "ratios": ratios,
                                      "seq_speed": {str(k): v for k, v in seq_speed.items()}, "warmup_s": warm,
                                      "losses": losses}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
