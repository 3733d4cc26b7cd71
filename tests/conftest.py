"""Shared test fixtures. Real data comes from ``../shared/data`` (or ``$GROKSCOPE_DATA``);
tests that need it skip with a clear reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("GROKSCOPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.exists():
        pytest.skip(f"shared data not found at {d} (set GROKSCOPE_DATA to its location)")
    return d


def _sub(name: str):
    @pytest.fixture(scope="session")
    def fixture(shared_data: Path) -> Path:
        p = shared_data / name
        if not p.exists():
            pytest.skip(f"shared data '{name}' not found at {p}")
        return p

    return fixture


blimp_dir = _sub("blimp")
corpus_dir = _sub("corpus")
megatron_dir = _sub("megatron")
gpt2_tokenizer_dir = _sub("tokenizers/gpt2")
pythia_tokenizer_file = _sub("tokenizers/pythia/tokenizer.json")


@pytest.fixture(scope="session")
def gpt2(gpt2_tokenizer_dir: Path):
    """The GPT-2 tokenizer of the shared data, loaded once (read-only)."""
    from grokscope.core.tokenizer import load_tokenizer

    return load_tokenizer(gpt2_tokenizer_dir)
