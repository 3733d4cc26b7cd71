"""Trainer overhead: grokscope's trainer vs a bare PyTorch loop on the same model and batches.

Both train the same GPT-2 model (same config, same seed, hence the same initial weights) on the
same rows of the same token stream, in order, with the same AdamW groups, LambdaLR schedule and
gradient clipping. The bare loop does forward, loss, backward, clip, AdamW step, scheduler step —
nothing else. The trainer adds what a real run needs: progress bar, loss log, per-batch id check,
checkpoints and resume state.

Checkpoint/state/loss-file saving is EXCLUDED from the trainer's tokens/s (the trainer times its
steps and its saves separately) and reported on its own line; the bare loop saves nothing. By
default the trainer checkpoints only at step 0 and the last step (steady state); with
--pythia-checkpoints it also saves at 1, 2, 4, ... as a real run does early on. Rounds
alternate bare/trainer order, and the reported ratio is the median over rounds, so load drift on a
shared machine hits both sides.

    python bench/bench_train.py                       # GPT-2 corpus stream if prepared, else synthetic
    python bench/bench_train.py --tokens runs/corpus_gpt2/tokens --steps 12 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENS = REPO / "runs" / "corpus_gpt2" / "tokens"


def synthetic_stream(root: Path, n_rows: int, seq_len: int, vocab: int = 50257, seed: int = 0) -> Path:
    """A prepared directory per CONTRACTS with random ids (throughput does not depend on them)."""
    d = root / "tokens"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(n_rows, seq_len + 1), dtype=np.int64).astype(np.uint16)
    np.save(d / "tokens.npy", tokens)
    np.save(d / "row_docs.npy", np.zeros(n_rows, dtype=np.int64))
    (d / "manifest.json").write_text(json.dumps({
        "format": "grokscope", "tokenizer": "synthetic", "tokenizer_fingerprint": "synthetic",
        "vocab_size": vocab, "eos_id": vocab - 1, "seq_len": seq_len, "row_len": seq_len + 1, "dtype": "uint16",
        "seed": seed, "n_rows": n_rows, "n_tokens": n_rows * (seq_len + 1), "n_documents": 1, "sources": [],
    }))
    return d


def bare_loop(stream, cfg, vocab: int, n_positions: int, steps: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of the plain loop (B·seq_len trained per step)."""
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.train.recipe import lr_multiplier

    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=cfg.n_embd,
                                       n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=stream.eos_id,
                                       eos_token_id=stream.eos_id))
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_multiplier(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
    B = cfg.batch_size
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(steps):
        block = torch.from_numpy(stream.rows(s * B, (s + 1) * B).astype(np.int64))  # [B, row_len]
        logits = model(input_ids=block[:, :-1], use_cache=False).logits  # [B, T, V]
        loss = F.cross_entropy(logits.flatten(0, 1), block[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
    loss.item()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    tokens = steps * B * (stream.row_len - 1)
    return tokens / dt, tokens / dc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default=None,
                    help=f"token stream, or 'synthetic' (default: {DEFAULT_TOKENS} if prepared, else synthetic)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128, help="synthetic stream only")
    ap.add_argument("--vocab", type=int, default=50257, help="synthetic stream only (GPT-2's 50257 by default)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--pythia-checkpoints", action="store_true",
                    help="trainer saves at 0,1,2,4,... as in a real run (default: only at step 0 and the "
                         "last step, so the steps measured are steady-state; saving time is reported apart "
                         "either way)")
    args = ap.parse_args()

    import torch

    from grokscope.core.config import TrainSection
    from grokscope.stream.readers import open_stream
    from grokscope.train.recipe import padded_vocab_size
    from grokscope.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    tokens = Path(args.tokens) if args.tokens and args.tokens != "synthetic" else DEFAULT_TOKENS
    if args.tokens == "synthetic" or (not args.tokens and not (tokens / "manifest.json").exists()):
        tokens = synthetic_stream(tmp, args.steps * args.batch_size + args.batch_size, args.seq_len, args.vocab)
    stream = open_stream(tokens, rows_per_step=args.batch_size)
    seq_len = stream.row_len - 1
    cfg = TrainSection(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, batch_size=args.batch_size,
                       max_steps=args.steps, warmup_steps=2, threads=args.threads,
                       log_spaced_until=512 if args.pythia_checkpoints else 0,
                       checkpoint_every=1000 if args.pythia_checkpoints else args.steps)
    vocab = padded_vocab_size(stream.vocab_size, cfg.pad_vocab_to)
    print(f"stream {tokens} ({stream.n_rows:,} rows x {stream.row_len}); model {args.n_layer}x{args.n_embd}, "
          f"{args.n_head} heads, context {seq_len}, vocab {vocab}; batch {args.batch_size}; "
          f"{args.steps} steps x {args.rounds} rounds; torch threads {torch.get_num_threads()}")
    bare_loop(stream, cfg, vocab, seq_len, 2)  # warm-up (kernels, allocator), not measured

    rows = []
    for r in range(args.rounds):
        order = ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare")
        got: dict[str, float] = {}
        for which in order:
            if which == "bare":
                got["bare"], got["bare_cpu"] = bare_loop(stream, cfg, vocab, seq_len, args.steps)
            else:
                t0 = time.perf_counter()
                res = Trainer(cfg, tokens, tmp / f"run{r}", progress=True).fit()  # bar on stderr, as in real use
                got["wall"] = time.perf_counter() - t0
                got["trainer"] = res.tokens_per_s
                got["trainer_cpu"] = res.tokens_trained / res.train_cpu_seconds
                got["save"] = res.save_seconds
                got["ckpts"] = len(res.checkpoints_written)
        rows.append(got)
        print(f"round {r}: bare {got['bare']:8.0f} tok/s | trainer {got['trainer']:8.0f} tok/s "
              f"(saving excluded) | ratio {got['trainer'] / got['bare']:.3f} | per CPU-second: bare "
              f"{got['bare_cpu']:.0f}, trainer {got['trainer_cpu']:.0f}, ratio {got['trainer_cpu'] / got['bare_cpu']:.3f} "
              f"| trainer saving "
              f"{got['save']:.1f} s for {got['ckpts']} checkpoints + state, wall incl. setup {got['wall']:.1f} s",
              flush=True)
    ratios = [g["trainer"] / g["bare"] for g in rows]
    cpu_ratios = [g["trainer_cpu"] / g["bare_cpu"] for g in rows]
    print(f"\nmedian bare    tokens/s: {statistics.median(g['bare'] for g in rows):,.0f}")
    print(f"median trainer tokens/s: {statistics.median(g['trainer'] for g in rows):,.0f} (checkpoint/state saving excluded)")
    print(f"ratio trainer/bare: median {statistics.median(ratios):.3f} (rounds: {', '.join(f'{x:.3f}' for x in ratios)}); "
          f"target >= 0.95")
    print(f"ratio per CPU-second (less sensitive to other processes): median {statistics.median(cpu_ratios):.3f} "
          f"(rounds: {', '.join(f'{x:.3f}' for x in cpu_ratios)})")
    print(f"trainer tokens per CPU-second: median {statistics.median(g['trainer_cpu'] for g in rows):,.0f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
