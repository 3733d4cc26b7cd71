"""The training loop: pre-train a GPT-2-architecture model on a token stream, with log-spaced
checkpoints (:class:`Trainer`; the stage and CLI are :mod:`grokscope.train.stage`).

The run reads the stream strictly in training order: optimizer step ``s`` (0-based) trains on
rows ``[s·B, (s+1)·B)`` (inputs ``row[:-1]``, targets ``row[1:]``), so the checkpoint at step
``t`` has seen exactly window(t) = rows ``[0, t·B)``. AdamW (no weight decay on biases and
LayerNorm), linear warmup then cosine decay to ``min_lr_ratio · lr``, gradient clipping, bf16
autocast on CUDA, float32 on CPU.

Layout of ``STUDY/run/``::

    run.json                          train config + stream fingerprint (a resume must match it)
    checkpoints/step_XXXXXXXX/        Hugging Face model dir + tokenizer + grokscope_checkpoint.json
    loss.parquet                      step, loss, lr, tokens_seen, tokens_per_s (one row per step)
    state/state.pt, state/state.json  resume state: model, optimizer, scheduler, RNG, step

Every file and checkpoint directory is written atomically (temp + rename), and the resume
state is saved at every checkpoint and every ``state_every`` steps / ``state_seconds`` seconds,
so a killed run continues from its last state and ends with bit-identical weights (on CPU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from grokscope.core import store
from grokscope.core.checkpoints import quiet_transformers_progress
from grokscope.core.config import TrainSection
from grokscope.core.devices import resolve_device
from grokscope.core.errors import ConfigError, DataError
from grokscope.core.store import step_name
from grokscope.train.recipe import (
    batch_tensors,
    build_model,
    build_optimizer,
    checkpoint_steps,
    deterministic_mode,
    flops_per_token,
    lm_loss,
    model_flops_utilisation,
    padded_vocab_size,
    seed_everything,
)
from grokscope.train.run_inputs import (
    identity_differences,
    load_run_tokenizer,
    open_training_stream,
    run_identity,
    stream_fingerprint,
)

CHECKPOINT_JSON = "grokscope_checkpoint.json"
STATE_FILE = "state.pt"
LOG_EVERY = 10  # steps between loss read-backs (a device sync on GPU) and progress-bar updates



# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclass
class LossRow:
    step: int  # optimizer steps taken after this update (1-based)
    loss: float  # training loss of the batch of this update (rows [(step-1)·B, step·B))
    lr: float  # learning rate used by this update
    tokens_seen: int  # step · B · row_len (CONTRACTS' convention)
    tokens_per_s: float  # trained positions (B · seq_len per step) per second, excluding saves


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int  # step the run started (or resumed) from
    final_step: int
    steps_run: int  # optimizer steps taken by this call
    tokens_trained: int  # B · seq_len · steps_run
    train_seconds: float  # wall time of those steps, checkpoint/state saving excluded
    save_seconds: float  # wall time spent writing checkpoints, state and loss.parquet
    tokens_per_s: float  # tokens_trained / train_seconds
    final_loss: float | None
    train_cpu_seconds: float = 0.0  # process CPU time (all threads) of those steps, saving excluded
    checkpoints_written: list[int] = field(default_factory=list)
    n_params: int = 0
    device: str = "cpu"
    mfu: float | None = None


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
class Trainer:
    """One training run in ``run_dir``; :meth:`fit` starts it or resumes it from ``run/state``."""

    def __init__(
        self,
        cfg: TrainSection,
        tokens_path: str | os.PathLike[str],
        run_dir: str | os.PathLike[str],
        *,
        data_format: str = "auto",
        tokenizer: str = "",
        eos_id: int | None = None,
        peak_tflops: float = 0.0,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.tokens_path = Path(tokens_path)
        self.run_dir = Path(run_dir)
        self.layout = store.RunLayout(self.run_dir)
        self.data_format = data_format
        self.tokenizer_spec = tokenizer
        self.eos_id = eos_id
        self.peak_tflops = peak_tflops
        self.progress = progress

    # ---- setup --------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        self.source = open_training_stream(self.tokens_path, self.data_format, cfg.batch_size, self.eos_id)
        stream = self.source.stream
        self.row_len = int(stream.row_len)
        self.seq_len = self.row_len - 1
        self.B = cfg.batch_size
        self.n_positions = cfg.n_positions or self.seq_len
        if self.seq_len > self.n_positions:
            raise ConfigError(
                f"{self.tokens_path}: rows hold {self.row_len} tokens (seq_len {self.seq_len} inputs + 1), "
                f"but the model has n_positions = {self.n_positions}; set [train] n_positions ≥ {self.seq_len} "
                f"(or 0 = the stream's seq_len), or prepare the stream with data.seq_len ≤ {self.n_positions}"
            )
        needed = cfg.max_steps * self.B
        if stream.n_rows < needed:
            raise DataError(
                f"{self.tokens_path}: the stream has {stream.n_rows} rows = {stream.n_rows // self.B} steps of "
                f"batch_size {self.B}, but max_steps = {cfg.max_steps} needs {needed} rows; lower [train] "
                f"max_steps to ≤ {stream.n_rows // self.B} or prepare more data"
            )
        self.tokenizer = load_run_tokenizer(self.source, self.tokenizer_spec)
        if self.tokenizer is not None:
            from grokscope.core.tokenizer import vocab_size

            base_vocab = vocab_size(self.tokenizer)
            if stream.vocab_size is not None and int(stream.vocab_size) > base_vocab:
                raise DataError(
                    f"{self.tokens_path}: the stream's vocab_size is {stream.vocab_size} but its tokenizer "
                    f"has only {base_vocab} ids; give the tokenizer the stream was made with"
                )
        elif stream.vocab_size is not None:
            base_vocab = int(stream.vocab_size)
        else:
            raise DataError(
                f"{self.tokens_path}: the stream records no vocab_size and no tokenizer was given; "
                "pass --tokenizer (or [data] tokenizer) so the model's vocabulary is known"
            )
        self.base_vocab = base_vocab
        self.vocab = padded_vocab_size(base_vocab, cfg.pad_vocab_to)
        self.device = resolve_device(cfg.device, "[train] device")
        eos = stream.eos_id if stream.eos_id is not None else self.eos_id
        self.model_eos = None if eos is None or eos < 0 else int(eos)
        model_info = {"vocab_size": self.vocab, "base_vocab_size": base_vocab, "n_positions": self.n_positions,
                      "seq_len": self.seq_len, "eos_id": self.model_eos}
        self.identity = run_identity(cfg, self.device, stream_fingerprint(self.source), model_info)
        self._check_or_write_identity()

    def _check_or_write_identity(self) -> None:
        if self.layout.run_json.exists():
            saved = store.read_json(self.layout.run_json)
            diffs = identity_differences(saved, self.identity)
            if diffs:
                raise ConfigError(
                    f"{self.layout.run_json}: refusing to resume: this run was started with a different config or "
                    "stream; differing keys:\n  " + "\n  ".join(diffs)
                    + "\nUse a new run directory, or restore the original settings to resume."
                )
        else:
            from grokscope import __version__

            store.write_json(self.layout.run_json, {**self.identity, "grokscope_version": __version__,
                                             "tokens_path": str(self.tokens_path.resolve())})

    def _build(self) -> None:
        import torch

        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        if self.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(self.cfg.seed)
        self.model = build_model(self.cfg, self.vocab, self.n_positions, self.model_eos).to(self.device)
        self.model.train()
        self.optimizer, self.scheduler = build_optimizer(self.model, self.cfg, self.device)
        self.params = list(self.model.parameters())  # once: model.parameters() walks every module
        self.n_params = sum(p.numel() for p in self.params)
        n_wpe = self.model.transformer.wpe.weight.numel()
        self.flops_token = flops_per_token(self.n_params - n_wpe, self.cfg.n_layer, self.cfg.n_embd, self.seq_len)

    # ---- resume state -------------------------------------------------------------------
    def _save_state(self, step: int) -> None:
        import numpy as np
        import torch

        np_state = cast(tuple[Any, ...], np.random.get_state())  # the legacy tuple (MT19937 key and position)
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device == "cuda" else [],
            "rng_numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
            "rng_python": random.getstate(),
        }
        with store.atomic_path(self.layout.state_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)
        store.write_json(self.layout.state_json, {"step": step, "saved_at": time.time()})

    def _load_state(self) -> int:
        import numpy as np
        import torch

        path = self.layout.state_dir / STATE_FILE
        if not path.exists():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - written atomically, so this is not a half-written file
            raise DataError(f"{path}: could not read the resume state ({e}); delete {self.layout.state_dir} "
                            "to restart the run from step 0") from None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        if self.device == "cuda" and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        kind, key, *rest = state["rng_numpy"]
        np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
        rng_py = state["rng_python"]
        random.setstate((rng_py[0], tuple(rng_py[1]), rng_py[2]))
        return int(state["step"])

    # ---- outputs ------------------------------------------------------------------------
    def _write_loss(self, rows: list[LossRow]) -> None:
        import pandas as pd

        df = pd.DataFrame([dataclasses.asdict(r) for r in rows],
                          columns=[f.name for f in dataclasses.fields(LossRow)])
        df = df.astype({"step": "int64", "loss": "float64", "lr": "float64", "tokens_seen": "int64",
                        "tokens_per_s": "float64"})
        store.write_parquet(self.layout.loss_path, df, metadata={"rows_per_step": self.B, "row_len": self.row_len,
                                                          "seq_len": self.seq_len})

    def _read_loss(self, upto: int) -> list[LossRow]:
        import pandas as pd

        if not self.layout.loss_path.exists() or upto == 0:
            return []
        df = pd.read_parquet(self.layout.loss_path)
        df = df[df["step"] <= upto]
        return [LossRow(int(r.step), float(r.loss), float(r.lr), int(r.tokens_seen), float(r.tokens_per_s))
                for r in df.itertuples(index=False)]

    def _save_checkpoint(self, step: int, loss: float | None) -> bool:
        """Write checkpoint ``step`` atomically; False if it is already there (a resumed run
        re-reaching a checkpoint writes identical weights, so the existing one is kept)."""
        final = self.layout.checkpoint_dir(step)
        if (final / CHECKPOINT_JSON).exists():
            return False
        tmp = self.layout.checkpoints_dir / f".{step_name(step)}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        with quiet_transformers_progress():
            self.model.save_pretrained(tmp)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(tmp)
        store.write_json(tmp / CHECKPOINT_JSON, {
            "step": step,
            "tokens_seen": step * self.B * self.row_len,
            "rows_seen": step * self.B,
            "loss": loss,
            "seq_len": self.seq_len,
            "rows_per_step": self.B,
            "tokens_path": str(self.tokens_path.resolve()),
        })
        if final.exists():  # a directory without its JSON: a foreign leftover, replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        return True

    def _remove_stale_temps(self) -> None:
        if self.layout.checkpoints_dir.exists():
            for p in self.layout.checkpoints_dir.glob(".step_*.tmp-*"):
                shutil.rmtree(p, ignore_errors=True)

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self._prepare()
        with deterministic_mode(self.device):
            self._build()
            return self._loop()

    def _train_step(self, s: int, stream: Any, autocast: Any) -> tuple[Any, float]:
        """One optimizer step on rows ``[s·B, (s+1)·B)``; the loss (on the device) and the lr used."""
        import torch

        B = self.B
        rows = stream.rows(s * B, (s + 1) * B)  # [B, row_len] in training order
        if int(rows.max()) >= self.vocab:
            raise DataError(
                f"{self.tokens_path}: rows {s * B}..{(s + 1) * B - 1} hold token id {int(rows.max())}, "
                f"outside the model's vocabulary of {self.vocab}; the stream and tokenizer do not match"
            )
        inputs, targets = batch_tensors(rows, self.device)  # [B, seq_len] each
        lr = self.optimizer.param_groups[0]["lr"]
        with autocast:
            loss = lm_loss(self.model, inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), lr

    def _record(self, pending: list[tuple[int, Any, float]], history: list[LossRow], result: TrainResult,
                interval: tuple[float, float], tokens_per_step: int, bar: Any) -> None:
        """Read the pending losses back (one device sync) into ``history`` and the interval's time into ``result``."""
        import torch

        losses = torch.stack([p[1] for p in pending]).float().cpu().tolist()
        dt = time.perf_counter() - interval[0]
        rate = len(pending) * tokens_per_step / dt if dt > 0 else float("nan")
        history.extend(LossRow(st, lo, lr_, st * self.B * self.row_len, rate)
                       for (st, _, lr_), lo in zip(pending, losses))
        result.steps_run += len(pending)
        result.train_seconds += dt
        result.train_cpu_seconds += time.process_time() - interval[1]
        pending.clear()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{rate:,.0f}", refresh=False)

    def _loop(self) -> TrainResult:
        import torch
        from tqdm.auto import tqdm

        cfg, B = self.cfg, self.B
        self._remove_stale_temps()
        start = self._load_state()
        history = self._read_loss(start)
        ckpt_steps = set(checkpoint_steps(cfg.max_steps, cfg.log_spaced_until, cfg.checkpoint_every))
        result = TrainResult(run_dir=self.run_dir, start_step=start, final_step=start, steps_run=0,
                             tokens_trained=0, train_seconds=0.0, save_seconds=0.0, tokens_per_s=0.0,
                             final_loss=history[-1].loss if history else None, n_params=self.n_params,
                             device=self.device)
        if start in ckpt_steps:
            t0 = time.perf_counter()
            if self._save_checkpoint(start, result.final_loss):
                result.checkpoints_written.append(start)
            if start == 0 and not (self.layout.state_dir / STATE_FILE).exists():
                self._save_state(0)
            result.save_seconds += time.perf_counter() - t0
        stream = self.source.stream
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device == "cuda"
                    else contextlib.nullcontext())
        tokens_per_step = B * self.seq_len
        pending: list[tuple[int, Any, float]] = []  # (step, loss tensor, lr) not yet read back
        bar = tqdm(total=cfg.max_steps, initial=start, unit="step", disable=not self.progress,
                   dynamic_ncols=True, desc="train", file=sys.stderr, mininterval=1.0)
        last_state_time = time.monotonic()
        interval = (time.perf_counter(), time.process_time())  # wall and CPU clock at the interval's start
        try:
            for s in range(start, cfg.max_steps):
                loss, lr = self._train_step(s, stream, autocast)
                step = s + 1
                pending.append((step, loss, lr))
                bar.update(1)
                due_ckpt = step in ckpt_steps
                due_state = (step % cfg.state_every == 0 or step == cfg.max_steps or due_ckpt
                             or (cfg.state_seconds > 0 and time.monotonic() - last_state_time >= cfg.state_seconds))
                if due_state or step % LOG_EVERY == 0:
                    self._record(pending, history, result, interval, tokens_per_step, bar)
                    if due_state:
                        t0 = time.perf_counter()
                        self._write_loss(history)  # loss first: a kill between the two loses nothing
                        if due_ckpt and self._save_checkpoint(step, history[-1].loss):
                            result.checkpoints_written.append(step)
                        self._save_state(step)
                        last_state_time = time.monotonic()
                        result.save_seconds += time.perf_counter() - t0
                    interval = (time.perf_counter(), time.process_time())
        finally:
            bar.close()
        result.final_step = cfg.max_steps
        result.final_loss = history[-1].loss if history else None
        result.tokens_trained = result.steps_run * tokens_per_step
        result.tokens_per_s = result.tokens_trained / result.train_seconds if result.train_seconds > 0 else 0.0
        if self.peak_tflops > 0 and result.tokens_per_s > 0:
            result.mfu = model_flops_utilisation(self.flops_token, result.tokens_per_s, self.peak_tflops)
        return result


def train(cfg: TrainSection, tokens_path: str | os.PathLike[str], run_dir: str | os.PathLike[str],
          **kwargs: Any) -> TrainResult:
    """Train (or resume) a run; see :class:`Trainer` for the keyword arguments."""
    return Trainer(cfg, tokens_path, run_dir, **kwargs).fit()


def summary_table(r: TrainResult) -> str:
    rows = [
        ("run", str(r.run_dir)),
        ("device", r.device),
        ("parameters", f"{r.n_params:,}"),
        ("steps", f"{r.start_step} → {r.final_step} ({r.steps_run} this call)"),
        ("tokens trained", f"{r.tokens_trained:,}"),
        ("final loss", "n/a" if r.final_loss is None else f"{r.final_loss:.4f}"),
        ("tokens/s", f"{r.tokens_per_s:,.0f} (saving excluded)"),
        ("training time", f"{r.train_seconds:.1f} s wall, {r.train_cpu_seconds:.1f} s CPU "
                          f"({r.tokens_trained / max(r.train_cpu_seconds, 1e-9):,.0f} tokens per CPU-second)"),
        ("saving time", f"{r.save_seconds:.1f} s (checkpoints, state, loss.parquet)"),
        ("checkpoints written", ", ".join(map(str, r.checkpoints_written)) or "none"),
    ]
    if r.mfu is not None:
        rows.append(("MFU", f"{100 * r.mfu:.1f} %"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


