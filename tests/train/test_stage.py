"""Tests of grokscope.train.stage, .trainer and .train_recipe: schedule maths against hand-worked values, the trainer against an
independently written PyTorch loop (bit-identical weights), determinism, SIGKILL + resume, and
bad input. The token stream is a tiny prepared directory built here by hand, exactly per
docs/CONTRACTS.md (tokens.npy, row_docs.npy, tokenizer/, manifest.json)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grokscope.cli import main as cli_main
from grokscope.core.config import TrainSection
from grokscope.train.recipe import checkpoint_steps, flops_per_token, lr_multiplier, padded_vocab_size, param_groups
from grokscope.train.trainer import Trainer

SEQ_LEN = 16
ROW_LEN = SEQ_LEN + 1
BATCH = 4
TINY = ["--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--batch-size", str(BATCH),
        "--lr", "3e-3", "--warmup-steps", "5", "--threads", "1", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# a tiny prepared stream, written by hand per CONTRACTS
# ---------------------------------------------------------------------------------------------
def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    dets, nouns = ["the", "a", "this", "that"], ["cat", "dog", "bird", "sketch", "student", "river"]
    verbs = ["sees", "likes", "draws", "finds"]
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        out.append(" ".join(f"{rng.choice(dets)} {rng.choice(nouns)} {rng.choice(verbs)} "
                            f"{rng.choice(dets)} {rng.choice(nouns)}." for _ in range(k)))
    return out


def make_prepared_stream(root: Path, n_rows: int = 1300, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    docs = _sentences(rng, 3000)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokens_dir = root / "tokens"
    tok.save_pretrained(tokens_dir / "tokenizer")
    eos = tok.eos_token_id
    flat: list[int] = []
    starts: list[int] = []  # first-token position of each document
    for d in docs:
        starts.append(len(flat))
        flat.extend(tok(d)["input_ids"] + [eos])
        if len(flat) >= n_rows * ROW_LEN:
            break
    assert len(flat) >= n_rows * ROW_LEN
    tokens = np.asarray(flat[: n_rows * ROW_LEN], dtype=np.uint16).reshape(n_rows, ROW_LEN)
    row_docs = np.searchsorted(np.asarray(starts), np.arange(n_rows) * ROW_LEN, side="right") - 1
    np.save(tokens_dir / "tokens.npy", tokens)
    np.save(tokens_dir / "row_docs.npy", row_docs.astype(np.int64))
    vocab = max(tok.get_vocab().values()) + 1
    (tokens_dir / "manifest.json").write_text(json.dumps({
        "format": "grokscope", "tokenizer": "tiny-bpe", "tokenizer_fingerprint": "test", "vocab_size": vocab,
        "eos_id": eos, "seq_len": SEQ_LEN, "row_len": ROW_LEN, "dtype": "uint16", "seed": seed,
        "n_rows": n_rows, "n_tokens": n_rows * ROW_LEN, "n_documents": int(row_docs[-1]) + 1, "sources": [],
    }))
    return tokens_dir


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared_stream(tmp_path_factory.mktemp("stream"))


def train_cli(tokens: Path, out: Path, *extra: str) -> int:
    return cli_main(["train", "--tokens", str(tokens), "--out", str(out), *TINY, *extra])


def ckpt(out: Path, step: int) -> Path:
    return out / "run" / "checkpoints" / f"step_{step:08d}"


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert np.array_equal(ta[k], tb[k]), f"{k} differs between {a} and {b}"


# ---------------------------------------------------------------------------------------------
# pure maths
# ---------------------------------------------------------------------------------------------
def test_checkpoint_steps_hand_worked() -> None:
    pythia = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] + list(range(1000, 143001, 1000))
    assert checkpoint_steps(143000, 512, 1000) == pythia
    assert checkpoint_steps(10, 512, 1000) == [0, 1, 2, 4, 8, 10]
    assert checkpoint_steps(1300, 512, 500) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1300]
    assert checkpoint_steps(40, 8, 10) == [0, 1, 2, 4, 8, 10, 20, 30, 40]
    assert checkpoint_steps(0, 512, 1000) == [0]


def test_lr_schedule_hand_worked() -> None:
    # warmup 4, 12 steps, floor 0.1: warmup (s+1)/4, then 0.1 + 0.9·(1+cos(π·(s-4)/8))/2
    assert [lr_multiplier(s, 4, 12, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, 4, 12, 0.1) == pytest.approx(1.0)
    assert lr_multiplier(8, 4, 12, 0.1) == pytest.approx(0.55)  # half way: 0.1 + 0.9/2
    assert lr_multiplier(6, 4, 12, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert lr_multiplier(12, 4, 12, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(50, 4, 12, 0.1) == pytest.approx(0.1)  # stays at the floor
    assert lr_multiplier(0, 0, 10, 0.0) == pytest.approx(1.0)  # no warmup


def test_padding_and_flops() -> None:
    assert padded_vocab_size(50257, 64) == 50304
    assert padded_vocab_size(256, 64) == 256
    assert padded_vocab_size(257, 1) == 257


def test_flops_per_token_matches_torch_flop_counter() -> None:
    """The MFU numerator against torch's own count of a real forward + backward."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    n_layer, d, T, V, B = 2, 128, 64, 1024, 4
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=d, n_head=4, n_positions=T, vocab_size=V))
    x = torch.randint(0, V, (B, T + 1))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    assert flops_per_token(n, n_layer, d, T) == pytest.approx(counter.get_total_flops() / (B * T), rel=0.02)


def test_param_groups_exclude_biases_and_layernorm() -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=64))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    by_name = dict(model.named_parameters())
    expect_no_decay = {n for n in by_name if n.endswith(".bias") or ".ln_" in n or n.startswith("transformer.ln_f")}
    got_no_decay = {n for n, p in by_name.items() if any(p is q for q in no_decay["params"])}
    assert got_no_decay == expect_no_decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(by_name)  # tied lm_head counted once


# ---------------------------------------------------------------------------------------------
# the trainer against an independent loop
# ---------------------------------------------------------------------------------------------
def reference_weights(tokens: Path, steps: int, seed: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """A plain PyTorch loop written independently of grokscope.train.trainer: same hyper-parameters,
    rows read straight from tokens.npy in order, weight decay chosen by parameter name."""
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    vocab = 320  # the tiny BPE has ≤ 300 ids, padded to a multiple of 64
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=SEQ_LEN, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    named = dict(model.named_parameters())
    plain = [p for n, p in named.items() if n.endswith(".bias") or ".ln_" in n or "ln_f" in n]
    decayed = [p for p in named.values() if not any(p is q for q in plain)]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)

    def factor(s: int) -> float:
        if s < 5:
            return (s + 1) / 5
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 5) / (steps - 5)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    data = np.load(tokens / "tokens.npy")
    losses = []
    for s in range(steps):
        block = torch.from_numpy(data[s * BATCH:(s + 1) * BATCH].astype(np.int64))
        logits = model(input_ids=block[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), block[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, losses


def test_trainer_matches_independent_loop_bit_for_bit(tokens_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    steps = 12
    assert train_cli(tokens_dir, tmp_path, "--max-steps", str(steps)) == 0
    ref, ref_losses = reference_weights(tokens_dir, steps)
    got = load_tensors(ckpt(tmp_path, steps))
    for name, value in got.items():
        assert np.array_equal(value, ref[name]), name
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert loss["step"].tolist() == list(range(1, steps + 1))
    assert loss["loss"].tolist() == ref_losses
    assert loss["tokens_seen"].tolist() == [s * BATCH * ROW_LEN for s in range(1, steps + 1)]
    assert loss["lr"].tolist() == pytest.approx([3e-3 * lr_multiplier(s, 5, steps, 0.1) for s in range(steps)])
    assert (loss["tokens_per_s"] > 0).all()


def test_checkpoints_layout_and_window(tokens_dir: Path, tmp_path: Path) -> None:
    """Checkpoints at 0,1,2,4,8 then every 10 + final; each loads with AutoModelForCausalLM; the
    checkpoint at step t, run on rows [t·B, (t+1)·B), reproduces the loss logged for step t+1:
    so step t's update read exactly those rows (training order)."""
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = 25
    assert train_cli(tokens_dir, tmp_path, "--max-steps", str(steps), "--log-spaced-until", "8",
                     "--checkpoint-every", "10") == 0
    made = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert made == [0, 1, 2, 4, 8, 10, 20, 25]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temp dirs left
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet").set_index("step")["loss"]
    data = np.load(tokens_dir / "tokens.npy")
    for t in (0, 4, 20):
        d = ckpt(tmp_path, t)
        meta = json.loads((d / "grokscope_checkpoint.json").read_text())
        assert meta["step"] == t and meta["rows_seen"] == t * BATCH and meta["tokens_seen"] == t * BATCH * ROW_LEN
        assert meta["seq_len"] == SEQ_LEN and meta["rows_per_step"] == BATCH
        assert meta["loss"] == (None if t == 0 else loss[t])
        model = AutoModelForCausalLM.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        assert tok.eos_token == "<|endoftext|>"
        block = torch.from_numpy(data[t * BATCH:(t + 1) * BATCH].astype(np.int64))
        with torch.no_grad():
            logits = model(input_ids=block[:, :-1]).logits
        recomputed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), block[:, 1:].reshape(-1)).item()
        assert recomputed == pytest.approx(loss[t + 1], abs=1e-5)
    # at initialisation (std 0.02) the prediction is near uniform: loss ≈ ln(padded vocab)
    assert loss[1] == pytest.approx(math.log(320), abs=0.05)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["vocab_size"] == 320 and run["model"]["n_positions"] == SEQ_LEN


def test_loss_falls(tokens_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    assert train_cli(tokens_dir, tmp_path, "--max-steps", "80", "--checkpoint-every", "1000") == 0
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")["loss"].to_numpy()
    assert loss[-10:].mean() < loss[:5].mean() - 2.0  # the toy grammar is very predictable


def test_same_seed_bit_identical_and_other_seed_differs(tokens_dir: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert train_cli(tokens_dir, tmp_path / name, "--max-steps", "10", "--seed", str(seed)) == 0
    for step in (0, 1, 2, 4, 8, 10):
        a = (ckpt(tmp_path / "a", step) / "model.safetensors").read_bytes()
        b = (ckpt(tmp_path / "b", step) / "model.safetensors").read_bytes()
        assert a == b, f"step {step}: same seed, different bytes"
    ta, tc = load_tensors(ckpt(tmp_path / "a", 10)), load_tensors(ckpt(tmp_path / "c", 10))
    assert not np.array_equal(ta["transformer.h.0.attn.c_attn.weight"], tc["transformer.h.0.attn.c_attn.weight"])


# ---------------------------------------------------------------------------------------------
# SIGKILL and resume (a real subprocess)
# ---------------------------------------------------------------------------------------------
def test_sigkill_then_resume_gives_same_final_weights(tokens_dir: Path, tmp_path: Path) -> None:
    steps = 150
    common = ["--max-steps", str(steps), "--state-every", "10", "--log-spaced-until", "16",
              "--checkpoint-every", "50"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "grokscope.cli", "train", "--tokens", str(tokens_dir), "--out", str(killed),
           *TINY, *common]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    state_json = killed / "run" / "state" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state_json.exists() and json.loads(state_json.read_text())["step"] >= 30:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(state_json.read_text())["step"]
    assert 30 <= killed_at < steps
    assert not ckpt(killed, steps).exists()

    assert train_cli(tokens_dir, killed, *common) == 0  # resume
    assert train_cli(tokens_dir, tmp_path / "straight", *common) == 0  # uninterrupted
    for step in (16, 50, 100, steps):
        assert_same_weights(ckpt(killed, step), ckpt(tmp_path / "straight", step))
    import pandas as pd

    a = pd.read_parquet(killed / "run" / "loss.parquet")
    b = pd.read_parquet(tmp_path / "straight" / "run" / "loss.parquet")
    assert a["step"].tolist() == list(range(1, steps + 1))
    assert a["loss"].tolist() == b["loss"].tolist()
    assert not list((killed / "run" / "checkpoints").glob(".*"))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_seq_len_above_n_positions_is_refused(tokens_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli(tokens_dir, tmp_path, "--max-steps", "4", "--n-positions", "8") == 2
    err = capsys.readouterr().err
    assert "n_positions = 8" in err and "seq_len 16" in err and str(tokens_dir) in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_with_different_config_is_refused(tokens_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli(tokens_dir, tmp_path, "--max-steps", "6") == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train_cli(tokens_dir, tmp_path, "--max-steps", "9", "--lr", "1e-3") == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "train.lr" in err and "train.max_steps" in err
    assert "train.seed" not in err and "train.threads" not in err
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert before == after  # finished work untouched
    # a key that does not change the weights may differ
    assert train_cli(tokens_dir, tmp_path, "--max-steps", "6", "--threads", "2") == 0


def test_too_few_rows_and_missing_stream(tokens_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_cli(tokens_dir, tmp_path, "--max-steps", "326") == 2  # 1300 rows = 325 steps of 4
    assert "325 steps" in capsys.readouterr().err
    assert cli_main(["train", "--tokens", str(tmp_path / "nope"), "--out", str(tmp_path), *TINY]) == 2
    assert "grokscope prepare" in capsys.readouterr().err


def test_config_file_run_and_finished_run_is_skipped(tokens_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "study.toml"
    cfg.write_text(f'[study]\nout = "mystudy"\n[data]\ntokens = "{tokens_dir}"\n'
                   "[train]\nn_layer = 1\nn_embd = 32\nn_head = 2\nbatch_size = 4\nmax_steps = 3\nthreads = 1\n")
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "mystudy"
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == [f"step_{s:08d}" for s in (0, 1, 2, 3)]
    assert json.loads((out / "run" / "run.json").read_text())["train"]["n_layer"] == 1
    capsys.readouterr()
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_python_api_result_and_resume_of_a_finished_run(tokens_dir: Path, tmp_path: Path) -> None:
    cfg = TrainSection(n_layer=1, n_embd=32, n_head=2, batch_size=BATCH, max_steps=5, threads=1)
    first = Trainer(cfg, tokens_dir, tmp_path / "run", progress=False, peak_tflops=1.0).fit()
    assert (first.start_step, first.final_step, first.steps_run) == (0, 5, 5)
    assert first.tokens_trained == 5 * BATCH * SEQ_LEN
    assert first.checkpoints_written == [0, 1, 2, 4, 5]
    assert first.tokens_per_s == pytest.approx(first.tokens_trained / first.train_seconds)
    assert first.mfu is not None and 0 < first.mfu < 1
    again = Trainer(cfg, tokens_dir, tmp_path / "run", progress=False).fit()
    assert (again.start_step, again.steps_run, again.checkpoints_written) == (5, 0, [])
    assert again.final_loss == first.final_loss
