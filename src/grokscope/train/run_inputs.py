"""What a training run is made of, besides its loop: the token stream it reads (with its path and
format), the tokenizer it saves into checkpoints, and its identity (config + stream fingerprint
+ model shape), which a resume must match key by key."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokscope.core.config import TrainSection
from grokscope.core.errors import DataError, MissingStageError

# [train] keys that do not change the weights a run produces: a resume may change them.
RESUMABLE_KEYS = frozenset({"enabled", "threads", "state_every", "state_seconds", "peak_tflops"})
# stream fields recorded in run.json but not compared on resume (a study directory may move).
_STREAM_INFO_ONLY = frozenset({"path"})


@dataclass
class TrainingStream:
    """What the trainer needs from a token stream (grokscope.stream.readers.TokenStream) plus its path."""

    stream: Any
    path: Path
    format: str


def open_training_stream(path: Path, fmt: str, rows_per_step: int, eos_id: int | None) -> TrainingStream:
    from grokscope.stream.readers import open_stream

    if not path.exists() and not Path(str(path) + ".bin").exists():
        raise MissingStageError("token stream", str(path), "grokscope prepare")
    stream = open_stream(path, format=fmt, rows_per_step=rows_per_step, eos_id=eos_id)
    return TrainingStream(stream=stream, path=path, format=fmt)


def load_run_tokenizer(s: TrainingStream, spec: str) -> Any | None:
    """The tokenizer saved into every checkpoint: ``spec`` if given, else the tokenizer directory
    recorded with the stream (a prepared stream's ``tokens/tokenizer/``), else None (checkpoints
    then hold only the model)."""
    from grokscope.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    if spec:
        tok = load_tokenizer(spec)
        recorded_fp = s.stream.tokenizer
        if recorded_fp and tokenizer_fingerprint(tok) != recorded_fp:
            raise DataError(
                f"{s.path}: the stream was tokenized with a tokenizer of fingerprint {recorded_fp}, but --tokenizer "
                f"{spec} has fingerprint {tokenizer_fingerprint(tok)}; its checkpoints would carry the wrong "
                "tokenizer. Drop --tokenizer (the stream's own is used) or give the one the stream was made with")
        return tok
    recorded = getattr(s.stream, "tokenizer_dir", None)
    if recorded is not None and Path(recorded).is_dir():
        return load_tokenizer(recorded)
    prepared = s.path / "tokenizer"
    if s.path.is_dir() and prepared.is_dir():
        return load_tokenizer(prepared)
    return None


def stream_fingerprint(s: TrainingStream) -> dict[str, Any]:
    """Identity of the stream a run trains on: shape, ids, and a hash of its first and last rows."""
    stream = s.stream
    h = hashlib.sha256()
    n = stream.n_rows
    for start, stop in ((0, min(n, 64)), (max(0, n - 64), n)):
        h.update(stream.rows(start, stop).astype("<u4").tobytes())
    return {
        "path": str(s.path.resolve()),
        "n_rows": int(n),
        "row_len": int(stream.row_len),
        "eos_id": None if stream.eos_id is None else int(stream.eos_id),
        "vocab_size": None if stream.vocab_size is None else int(stream.vocab_size),
        "tokenizer": stream.tokenizer,
        "rows_sha256": h.hexdigest(),
    }


def run_identity(cfg: TrainSection, device: str, fingerprint: dict[str, Any],
                 model_info: dict[str, Any]) -> dict[str, Any]:
    train = dataclasses.asdict(cfg)
    train["device"] = device
    return {"train": train, "stream": fingerprint, "model": model_info}


def finished_run_differences(run_json: Path, cfg: TrainSection) -> list[str]:
    """``train.key: run has X, now Y`` for every [train] key that changes the weights and differs from
    what the finished run in ``run_json`` recorded (device is resolved there: not compared)."""
    import json

    try:
        saved = json.loads(run_json.read_text(encoding="utf-8")).get("train", {})
    except (OSError, ValueError):
        return []
    now = dataclasses.asdict(cfg)
    skip = RESUMABLE_KEYS | {"device"}
    return [f"train.{key}: run has {saved.get(key)!r}, now {now.get(key)!r}"
            for key in sorted(set(saved) | set(now)) if key not in skip and saved.get(key) != now.get(key)]


def identity_differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``section.key: run has X, now Y`` for every key that would change the weights."""
    diffs = []
    for section, skip in (("train", RESUMABLE_KEYS), ("stream", _STREAM_INFO_ONLY), ("model", frozenset())):
        old, cur = saved.get(section, {}), new.get(section, {})
        for key in sorted(set(old) | set(cur)):
            if key in skip or old.get(key) == cur.get(key):
                continue
            diffs.append(f"{section}.{key}: run has {old.get(key)!r}, now {cur.get(key)!r}")
    return diffs
