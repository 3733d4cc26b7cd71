"""Where a location named in a config or on the command line points: a local path or a hub id.

One rule for every setting that may be either (checkpoints, tokenizers, benchmarks): a spec is
local when it exists or does not have the shape of a hub id (``org/name[@revision]``, or
``hf:NAME``); a step list (``0,1,2,4``) and the names ``pythia``, ``train-bpe`` and ``testbed``
are neither and stay as they are.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_GLOB = "*?["
NAMES = ("pythia", "train-bpe", "testbed")
_STEP_LIST = re.compile(r"[\d,\s]+")
_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def has_glob(spec: str) -> bool:
    return any(ch in spec for ch in _GLOB)


def is_hub_id(spec: str) -> bool:
    """``org/name`` or ``org/name@revision`` (optionally ``hf:``-prefixed), not a path-like string."""
    repo = spec.removeprefix("hf:").split("@", 1)[0]
    return (repo.count("/") == 1 and not repo.startswith((".", "/", "~"))
            and all(_HUB_PART.fullmatch(part) for part in repo.split("/")))


def resolve_path(value: str, base: Path | None) -> str:
    """``value`` as an absolute path, relative to ``base`` (default: the working directory)."""
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return str(p)


def resolve_spec(spec: str, base: Path | None) -> str:
    """A local spec made absolute (see module docstring); hub ids, step lists and names as they are."""
    if not spec or spec.startswith("hf:") or spec.lower() in NAMES or _STEP_LIST.fullmatch(spec):
        return spec
    path = Path(resolve_path(spec, base))
    if path.exists() or has_glob(spec) or not is_hub_id(spec):
        return str(path)
    return spec


def is_local(spec: str, base: Path | None = None) -> bool:
    """True when ``spec`` names a local file or directory (existing or not) rather than a hub id."""
    if spec.startswith("hf:"):
        return False
    return Path(resolve_path(spec, base)).exists() or not is_hub_id(spec)
