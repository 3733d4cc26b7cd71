from __future__ import annotations

import pytest
import torch

from grokscope.core.devices import resolve_device
from grokscope.core.errors import ConfigError


def test_auto_picks_what_torch_sees() -> None:
    assert resolve_device("auto", "x") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu", "x") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[train\] device = 'cuda' but torch sees no CUDA device"):
        resolve_device("cuda", "[train] device")
