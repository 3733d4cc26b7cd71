"""Which torch device a stage runs on."""
from __future__ import annotations

from grokscope.core.errors import ConfigError


def resolve_device(requested: str, where: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an
    error naming ``where`` (the config key or flag that asked for it)."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where} = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return requested
