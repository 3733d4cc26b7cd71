"""What a grokscope run trains, and how: the schedule maths (checkpoint steps, learning rate,
padded vocabulary, FLOPs per token) and the building blocks (a fresh GPT-2 model, AdamW groups
and scheduler, batches, loss, seeding, deterministic kernels).

Shared by :class:`grokscope.train.trainer.Trainer` and ``bench/bench_train.py``'s bare PyTorch loop,
so both train the same model the same way. Pure functions; torch is imported where it is used.
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

from grokscope.core.config import TrainSection
from grokscope.core.errors import ConfigError


# ---------------------------------------------------------------------------------------------
# pure schedule maths
# ---------------------------------------------------------------------------------------------
def checkpoint_steps(max_steps: int, log_spaced_until: int = 512, every: int = 1000) -> list[int]:
    """Pythia-style checkpoint steps: 0, 1, 2, 4, … (powers of two ≤ ``log_spaced_until``),
    then every multiple of ``every`` above ``log_spaced_until``, plus ``max_steps``; all ≤ ``max_steps``.

    >>> checkpoint_steps(2500, 512, 1000)
    [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 2500]
    """
    if max_steps < 0:
        raise ConfigError(f"[train] max_steps must be ≥ 0, got {max_steps}")
    if every <= 0:
        raise ConfigError(f"[train] checkpoint_every must be positive, got {every}")
    steps = {0, max_steps}
    power = 1
    while power <= min(log_spaced_until, max_steps):
        steps.add(power)
        power *= 2
    linear = every * (max(log_spaced_until, 0) // every + 1)  # first multiple above the log-spaced part
    while linear <= max_steps:
        steps.add(linear)
        linear += every
    return sorted(steps)


def lr_multiplier(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Factor on the peak lr for 0-based optimizer step ``step``: linear warmup
    ``(step+1)/warmup_steps``, then cosine from 1 down to ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (faster matmuls, as nanoGPT does)."""
    return -(-vocab_size // multiple) * multiple


def flops_per_token(n_params_no_wpe: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B: 6·N + 12·L·d·T, where N
    counts every weight except the position embeddings (the tied token embedding counts once)."""
    return 6.0 * n_params_no_wpe + 12.0 * n_layer * n_embd * seq_len


def model_flops_utilisation(flops_token: float, tokens_per_s: float, peak_tflops: float) -> float:
    """Achieved training FLOP/s as a fraction of the device's peak (``peak_tflops`` · 10¹²)."""
    return flops_token * tokens_per_s / (peak_tflops * 1e12)


# ---------------------------------------------------------------------------------------------
# building blocks (shared with bench/bench_train.py so the bare loop trains the same model)
# ---------------------------------------------------------------------------------------------
def build_model(cfg: TrainSection, vocab_size: int, n_positions: int, eos_id: int | None) -> Any:
    """A freshly initialised ``GPT2LMHeadModel`` (float32, CPU) from the current torch RNG."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return GPT2LMHeadModel(config)


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices and embeddings decay; biases and LayerNorm gains (1-D) do not."""
    decay = [p for _, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: Any, cfg: TrainSection, device: str) -> tuple[Any, Any]:
    """AdamW over :func:`param_groups` and a LambdaLR scheduler of :func:`lr_multiplier`."""
    import torch

    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=1e-8,
        fused=True if device == "cuda" else None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )
    return optimizer, scheduler


def batch_tensors(rows: Any, device: str) -> tuple[Any, Any]:
    """Inputs ``row[:-1]`` and targets ``row[1:]`` of a ``[B, row_len]`` block, as int64 tensors ``[B, seq_len]``."""
    import numpy as np
    import torch

    block = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))  # [B, row_len]
    if device == "cuda":
        block = block.pin_memory().to(device, non_blocking=True)
    return block[:, :-1], block[:, 1:]


def lm_loss(model: Any, inputs: Any, targets: Any) -> Any:
    """Mean next-token cross-entropy (float32) of ``inputs`` ``[B, T]`` against ``targets`` ``[B, T]``."""
    import torch.nn.functional as F

    logits = model(input_ids=inputs, use_cache=False).logits  # [B, T, V]
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def deterministic_mode(device: str) -> Iterator[None]:
    """Deterministic kernels on CPU (free there); on CUDA they would cost speed, so left off."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


