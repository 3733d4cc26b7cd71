"""Issue #21: ``grokscope exposure --workers 2`` SIGKILLed mid-search (the command and its Dask
worker processes, as a Ctrl-\\ or an OOM killer takes the process group) leaves its finished
shards in ``exposure.parts/`` and no table; the re-run reuses those shards and writes a table
equal to an uninterrupted single-process run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from grokscope.cli import main
from tests.exposure.test_stage import PAIRS, random_documents, write_phrases, write_stream

pytest.importorskip("distributed")



def _argv(study, tokens, *extra: str) -> list[str]:
    return ["exposure", "--phrases", str(study), "--tokens", str(tokens), "--checkpoints", "1,10,100,400",
            "--rows-per-step", "2", "--shard-rows", "8", *extra]


@pytest.mark.slow
def test_sigkill_of_exposure_on_two_workers_resumes_to_the_same_table(tmp_path, gpt2):
    docs = random_documents(np.random.default_rng(21), 2500)
    tokens = write_stream(tmp_path / "tokens", gpt2, docs, row_len=9)
    n_rows = np.load(tokens / "tokens.npy").shape[0]
    assert n_rows // 8 > 300  # hundreds of shards: the kill lands mid-search
    fresh = write_phrases(tmp_path / "fresh", PAIRS)
    assert main(_argv(fresh, tokens)) == 0

    study = write_phrases(tmp_path / "killed", PAIRS)
    parts = study / "exposure.parts"
    cmd = [sys.executable, "-c", "import sys; from grokscope import cli; sys.exit(cli.main(sys.argv[1:]))",
           *_argv(study, tokens, "--workers", "2")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline and len(list(parts.glob("rows_*.npz"))) < 20:
        time.sleep(0.01)
    assert proc.poll() is None, "the search finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its Dask nanny/worker processes
    proc.communicate(timeout=60)
    kept = len(list(parts.glob("rows_*.npz")))
    assert proc.returncode == -signal.SIGKILL and 20 <= kept < -(-n_rows // 8)
    assert not (study / "exposure.parquet").exists()

    assert main(_argv(study, tokens, "--workers", "2")) == 0
    assert not parts.exists()  # the finished table replaces its shards
    pd.testing.assert_frame_equal(pd.read_parquet(study / "exposure.parquet"),
                                  pd.read_parquet(fresh / "exposure.parquet"))
