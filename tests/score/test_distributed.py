"""Scoring on Dask (score/distributed.py): 2 local workers write byte-for-byte the files of one
process, a resumed run scores only the missing checkpoints, a worker SIGKILLed mid-task changes
nothing, and a scheduler that does not answer is one message (exit 2) within the timeout."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("dask.distributed")

from grokscope import cli  # noqa: E402
from grokscope.core.store import Study  # noqa: E402
from tests.score import test_stage as base  # noqa: E402

# the fixtures of the scoring tests: real tokenizers, real BLiMP pairs with spans, one torch thread
gpt2_tok, pairs, _one_thread = base.gpt2_tok, base.pairs, base._one_thread
STEPS = (0, 4, 8)


def _model(seed: int, n_layer: int = 2, n_embd: int = 64):
    torch.manual_seed(seed)  # a different model per checkpoint: a table written under the wrong step shows
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=128, vocab_size=50257)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _study(tmp: Path, tok, pairs: pd.DataFrame, steps=STEPS, **shape) -> Path:
    ckpts = tmp / "study" / "run" / "checkpoints"
    for step in steps:
        base._save_checkpoint(_model(step, **shape), tok, ckpts / f"step_{step:08d}", step)
    pairs.to_parquet(tmp / "phrases.parquet")
    return tmp / "study"


def _argv(tmp: Path, out: Path, *extra: str) -> list[str]:
    return ["score", "--checkpoints", str(tmp / "study"), "--phrases", str(tmp / "phrases.parquet"),
            "--out", str(out), "--batch-size", "16", "--hidden-pairs", "5", "--quiet", "--threads", "1", *extra]


def _files(study: Path) -> dict[str, str]:
    """The finished outputs (tables, hidden states, attention) by name, as sha256 of their bytes."""
    root = Study(study).scores_dir.parent
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".parquet", ".npy")
            and p.name != "phrases.parquet" and "run" not in p.relative_to(root).parts}


def test_two_local_workers_write_the_files_of_one_process(tmp_path, gpt2_tok, pairs, capsys):
    _study(tmp_path, gpt2_tok, pairs)
    assert cli.main(_argv(tmp_path, tmp_path / "one")) == 0
    assert cli.main(_argv(tmp_path, tmp_path / "two", "--workers", "2")) == 0
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(one) == 4 * len(STEPS)  # table, hidden states, attention and its baseline per checkpoint
    assert one == two  # byte-identical
    assert Study(tmp_path / "two").scored_steps() == list(STEPS)
    for step in STEPS:  # and each checkpoint's own numbers (the models differ)
        pd.testing.assert_frame_equal(pd.read_parquet(Study(tmp_path / "one").score_path(step)),
                                      pd.read_parquet(Study(tmp_path / "two").score_path(step)))
    t0, t4 = (pd.read_parquet(Study(tmp_path / "two").score_path(s)) for s in (0, 4))
    assert not t0["good_logprob"].equals(t4["good_logprob"])
    assert not list(Study(tmp_path / "two").scores_dir.parent.rglob("*.partial"))


def test_resume_scores_only_the_missing_checkpoints(tmp_path, gpt2_tok, pairs, capsys):
    _study(tmp_path, gpt2_tok, pairs)
    out = tmp_path / "out"
    ckpts = tmp_path / "study" / "run" / "checkpoints"
    partial = ["score", "--checkpoints", str(ckpts / "step_00000004"), *_argv(tmp_path, out)[3:]]
    assert cli.main(partial) == 0  # an earlier run that got through one of the three
    study = Study(out)
    before = {4: os.stat(study.score_path(4))}
    capsys.readouterr()
    assert cli.main(_argv(tmp_path, out, "--workers", "2")) == 0
    printed = capsys.readouterr().out
    rows = {int(line.split()[0]): line for line in printed.splitlines() if line.split() and line.split()[0].isdigit()}
    assert "skipped (done)" in rows[4]
    assert "scored" in rows[0] and "scored" in rows[8] and "skipped" not in rows[0] + rows[8]
    after = os.stat(study.score_path(4))  # never written again
    assert (after.st_ino, after.st_mtime_ns) == (before[4].st_ino, before[4].st_mtime_ns)
    assert cli.main(_argv(tmp_path, tmp_path / "fresh")) == 0
    assert _files(out) == _files(tmp_path / "fresh")


def test_a_bad_checkpoint_fails_alone_with_the_message_of_one_process(tmp_path, gpt2_tok, pairs, capsys):
    _study(tmp_path, gpt2_tok, pairs)
    (tmp_path / "study/run/checkpoints/step_00000004/model.safetensors").write_bytes(b"not a safetensors file")
    capsys.readouterr()
    errs = {}
    for name, extra in (("one", ()), ("two", ("--workers", "2"))):
        assert cli.main(_argv(tmp_path, tmp_path / name, "--no-hidden", "--no-attention", *extra)) == 2
        errs[name] = capsys.readouterr().err.strip().replace(str(tmp_path / name), "OUT")
        assert Study(tmp_path / name).scored_steps() == [0, 8]
    assert errs["one"] == errs["two"] and "step_00000004 (step 4)" in errs["two"]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "not-a-scheduler"])
def test_unreachable_scheduler_is_one_message_within_the_timeout(tmp_path, gpt2_tok, pairs, capsys, address):
    _study(tmp_path, gpt2_tok, pairs, steps=(0,))
    capsys.readouterr()
    t0 = time.perf_counter()
    code = cli.main(_argv(tmp_path, tmp_path / "out", "--scheduler", address, "--scheduler-timeout", "2"))
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    if ":" in address:  # an address nobody answers at
        assert "[score] scheduler" in err and address in err and "could not connect" in err
    else:  # not an address at all: refused before connecting (exposure's check)
        assert address in err and "not a Dask scheduler address" in err
    assert seconds < 15
    assert not Study(tmp_path / "out").scores_dir.exists() or not list(Study(tmp_path / "out").scores_dir.iterdir())


def test_cuda_without_a_gpu_is_one_message_before_any_worker_starts(tmp_path, gpt2_tok, pairs, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _study(tmp_path, gpt2_tok, pairs, steps=(0, 4))
    capsys.readouterr()
    assert cli.main(_argv(tmp_path, tmp_path / "out", "--workers", "2", "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch sees no CUDA device" in err, err


@pytest.mark.slow
def test_a_worker_killed_mid_task_changes_nothing(tmp_path, gpt2_tok, pairs):
    """SIGKILL the worker process that is writing a checkpoint's hidden states (its ``.partial``
    file names its pid); the scheduler reruns the task and the files equal an uninterrupted run."""
    from dask.distributed import Client, LocalCluster

    many = pd.concat([pairs] * 6, ignore_index=True)  # a task long enough to be caught mid-way
    _study(tmp_path, gpt2_tok, many, steps=(0, 4, 8), n_layer=4, n_embd=256)
    assert cli.main(_argv(tmp_path, tmp_path / "fresh")) == 0
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from grokscope import cli; "
                                 "sys.exit(cli.main(sys.argv[1:]))",
                                 *_argv(tmp_path, out, "--scheduler", cluster.scheduler_address)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = None
        deadline = time.time() + 120
        while killed is None and proc.poll() is None and time.time() < deadline:
            for p in out.rglob("*.partial"):
                pid = int(p.name.split(".")[-3])
                if pid in pids:
                    os.kill(pid, signal.SIGKILL)
                    killed = (pid, p.name)
                    break
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no task was caught mid-way"
    assert (Study(out).scores_dir / killed[1]).exists()  # the killed write stayed half-done ...
    assert proc.returncode == 0, stderr
    assert _files(out) == _files(tmp_path / "fresh")
    assert Study(out).scored_steps() == [0, 4, 8]  # ... and its checkpoint was scored again by another worker


def test_devices_one_gpu_per_worker_and_threads_split_per_host(monkeypatch):
    from grokscope.score import distributed as dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [dist.worker_device("cuda", k) for k in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert dist.worker_device("auto", 1) == "cuda:1" and dist.worker_device("cpu", 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a dask-cuda worker sees its one GPU
    assert dist.worker_device("cuda", 5) == "cuda"

    class FakeClient:  # two 1-thread workers on a 2-core host, one 4-thread worker on an 8-core host
        def scheduler_info(self, n_workers: int = 5):
            return {"workers": {"a": {"host": "h", "nthreads": 1}, "b": {"host": "h", "nthreads": 1},
                                "c": {"host": "g", "nthreads": 4}}}

        def run(self, fn):
            return {"a": 2, "b": 2, "c": 8}

    assert dist.threads_per_task(FakeClient(), 0) == {"a": 1, "b": 1, "c": 2}
    assert dist.threads_per_task(FakeClient(), 3) == {"a": 3, "b": 3, "c": 3}


def test_a_full_disk_stops_a_dask_run_with_one_message_as_in_one_process(tmp_path, gpt2_tok, pairs, capsys,
                                                                         monkeypatch):
    """The worker returns the error itself, so a full disk (DiskError) stops the run instead of
    failing every checkpoint in turn. In-process workers, so the patched free space reaches them."""
    import shutil
    from collections import namedtuple

    from dask.distributed import LocalCluster

    _study(tmp_path, gpt2_tok, pairs, steps=(0, 4, 8))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 8192, 8192))
    capsys.readouterr()
    errs = {}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        for name, extra in (("one", ()), ("dask", ("--scheduler", cluster.scheduler_address))):
            assert cli.main(_argv(tmp_path, tmp_path / name, *extra)) == 2
            errs[name] = capsys.readouterr().err.strip()
            assert Study(tmp_path / name).scored_steps() == []
    for err in errs.values():
        assert len(err.splitlines()) == 1 and "no space left on device [errno ENOSPC]" in err, err
        assert "not scored" not in err
