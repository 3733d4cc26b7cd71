"""bench/gpu_check.sh on CPU with the tiny plan: it runs end to end (lm-eval installed or not)
and its figures agree with a hand computation from the shapes it reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args, "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=120)


def _gpt2_params(n_layer: int, d: int, vocab: int, n_positions: int) -> int:
    """GPT-2 with tied embeddings, counted tensor by tensor: wte, wpe, per block 2 LayerNorms,
    c_attn (d x 3d + 3d), attn c_proj (d x d + d), c_fc (d x 4d + 4d), mlp c_proj (4d x d + d), ln_f."""
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    return vocab * d + n_positions * d + n_layer * block + 2 * d


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run(["--device", "cpu", "--tiny"], out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokens/s" in (out / "gpu_check.txt").read_text()
    return json.loads((out / "gpu_check.json").read_text())


def test_training_figures_match_hand_computation(tiny_result: dict) -> None:
    plan, peak = tiny_result["plan"], tiny_result["peak_tflops"]
    assert peak > 0
    for name in ("train_gpt2_small", "train_paper_35m"):
        r = tiny_result["parts"][name]
        n_layer, d, _ = plan["shapes"][name]
        T, B = plan["seq_len"], plan["batch"][name]
        vocab = -(-plan["vocab"] // 64) * 64  # the trainer pads the embedding rows to a multiple of 64
        assert r["n_params"] == _gpt2_params(n_layer, d, vocab, T)
        assert r["steps"] == plan["train_steps"]
        assert r["tokens_per_s"] > 0 and r["steady_tokens_per_s"] > 0
        assert r["tokens_per_s"] * r["train_seconds"] == pytest.approx(r["steps"] * B * T, rel=1e-9)
        flops = 6 * (r["n_params"] - T * d) + 12 * n_layer * d * T  # PaLM: 6N (no wpe) + 12 L d T
        assert r["mfu"] > 0
        assert r["mfu"] == pytest.approx(flops * r["tokens_per_s"] / (peak * 1e12), rel=1e-9)
        assert r["steady_mfu"] == pytest.approx(flops * r["steady_tokens_per_s"] / (peak * 1e12), rel=1e-9)
        assert r["part_seconds"] > 0


def test_scoring_figures(tiny_result: dict) -> None:
    s = tiny_result["parts"]["score_gpt2_small"]
    assert "error" not in s, s
    assert s["n_pairs"] == tiny_result["plan"]["pairs"]
    g = s["grokscope"]
    assert g["pairs_per_s"] > 0 and g["in_process"]["pairs_per_s"] > 0
    assert g["pairs_per_s"] == pytest.approx(s["n_pairs"] / g["process_seconds"], rel=1e-9)
    if "skipped" in s["lm_eval"]:
        assert s["lm_eval"]["skipped"]
        assert "max_abs_delta_logprob" not in s
    else:  # both tools ran, in float32 on CPU: log-probs agree and so do the decisions
        assert s["lm_eval"]["pairs_per_s"] > 0
        assert s["max_abs_delta_logprob"] < 1e-4
        assert s["pairs_judged_differently"] == 0


def test_cuda_without_gpu_fails_with_one_message(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    proc = _run([], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "sees no CUDA GPU" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
