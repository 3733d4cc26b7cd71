"""Minimal-pair benchmarks: BLiMP (a directory of its jsonl files, or the ``nyu-mll/blimp``
dataset on the Hugging Face hub) and user jsonl files.

:func:`load_pairs` returns one row per pair with the columns ``uid, pair_id, phenomenon, good,
bad``, BLiMP's metadata columns when present (``one_prefix_*``, ``two_prefix_*``, ``field``,
``lexically_identical``, …) and, for user files that give them, explicit spans
``explicit_critical_start/end`` and ``explicit_context_start/end`` (character offsets in
``good``, -1 where absent) that override the phrase rules.

Accepted field names: ``good``/``sentence_good``, ``bad``/``sentence_bad``, ``uid``/``UID``,
``pair_id``/``pairID``, ``phenomenon``/``linguistics_term``, and optional ``critical`` /
``context``: a word (occurring as a whole word in ``good``; its first occurrence) or a
``[start, end]`` character span in ``good``.

Every problem names the file and line: a missing path, a line that is not JSON or lacks
``good``/``bad``, identical sentences, an explicit span not in the sentence. With
``skip_invalid=True`` such lines are reported (``df.attrs["skipped"]``) and left out instead.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from grokscope.core.errors import DataError

HUB_NAME = "nyu-mll/blimp"

_ALIASES = {
    "good": ("good", "sentence_good"),
    "bad": ("bad", "sentence_bad"),
    "uid": ("uid", "UID"),
    "pair_id": ("pair_id", "pairID"),
    "phenomenon": ("phenomenon", "linguistics_term"),
}
_RENAMED = {alias for names in _ALIASES.values() for alias in names}
_EXPLICIT = ("critical", "context")
SPAN_COLUMNS = (
    "explicit_critical_start", "explicit_critical_end", "explicit_context_start", "explicit_context_end",
)


@dataclass(frozen=True)
class Source:
    """One input: where a record came from, for error messages."""

    path: str
    line: int  # 1-based line in a jsonl file, or row index in a hub split

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class _Invalid(Exception):
    pass


def load_pairs(
    path: str | Path,
    paradigms: Iterable[str] | None = None,
    pairs_per_paradigm: int = 0,
    seed: int = 0,
    skip_invalid: bool = False,
) -> pd.DataFrame:
    """Load minimal pairs from a BLiMP directory, a jsonl file, or the hub (``nyu-mll/blimp``).

    ``paradigms`` keeps only those ``uid`` values (an unknown one is an error);
    ``pairs_per_paradigm`` > 0 keeps a seeded random subsample of that many pairs per paradigm
    (in benchmark order). Raises :class:`DataError` naming the file and line of a bad record
    unless ``skip_invalid``; then the problems are in ``df.attrs["skipped"]``.
    """
    wanted = list(paradigms) if paradigms else None
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    for source, raw, default_uid in _iter_raw(path, wanted):
        try:
            records.append(_normalise(raw, source, default_uid))
        except _Invalid as e:
            if not skip_invalid:
                raise DataError(str(e)) from None
            skipped.append(str(e))
    df = _frame(records)
    if wanted is not None:
        known = set(df["uid"])
        missing = [p for p in wanted if p not in known]
        if missing:
            import difflib

            # a BLiMP directory's unwanted files are not read: their names are the paradigms on offer
            p_dir = Path(str(path)).expanduser()
            offered = known | ({f.stem for f in p_dir.glob("*.jsonl")} if p_dir.is_dir() else set())
            close = {m: difflib.get_close_matches(m, offered, n=1) for m in missing}
            hint = "; ".join(f"'{m}': did you mean '{c[0]}'?" for m, c in close.items() if c)
            raise DataError(
                f"{path}: paradigm(s) {missing} not found" + (f" ({hint})" if hint else "")
                + f"; available ({len(offered)}): {sorted(offered)[:80]}"
            )
        df = df[df["uid"].isin(wanted)].reset_index(drop=True)
    if len(df) == 0:
        raise DataError(f"{path}: no valid minimal pairs found")
    dup = df.duplicated(["uid", "pair_id"])
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(
            f"{path}: pair ({row['uid']}, {row['pair_id']}) occurs more than once; "
            "(uid, pair_id) must identify a pair"
        )
    if pairs_per_paradigm and pairs_per_paradigm > 0:
        df = _subsample(df, pairs_per_paradigm, seed)
    df.attrs["skipped"] = skipped
    df.attrs["source"] = str(path)
    return df


def benchmark_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 over ``(uid, pair_id, good, bad)`` of every pair, in order."""
    h = hashlib.sha256()
    for uid, pid, good, bad in zip(df["uid"], df["pair_id"], df["good"], df["bad"]):
        h.update(f"{uid}\x1f{int(pid)}\x1f{good}\x1f{bad}\x1e".encode())
    return h.hexdigest()


# ---- sources ------------------------------------------------------------------------------
def _iter_raw(path: str | Path, wanted: list[str] | None) -> Iterator[tuple[Source, Any, str]]:
    p = Path(str(path)).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.glob("*.jsonl") if f.is_file())
        if not files:
            raise DataError(f"{p}: directory holds no *.jsonl files (expected BLiMP's <paradigm>.jsonl)")
        for f in files:
            if wanted is not None and f.stem not in wanted and not _may_hold_other_uids(f):
                continue
            yield from _iter_jsonl(f)
    elif p.is_file():
        yield from _iter_jsonl(p)
    elif str(path).removeprefix("hf:") == HUB_NAME:
        yield from _iter_hub(wanted)
    else:
        raise DataError(
            f"{path}: benchmark not found (expected a directory of BLiMP jsonl files, a jsonl "
            f"file, or '{HUB_NAME}' for the Hugging Face hub)"
        )


def _may_hold_other_uids(f: Path) -> bool:
    """A BLiMP file holds one paradigm named like the file; peek at its first line."""
    from grokscope.core.textfile import iter_utf8_lines

    first = next((line for _, line in iter_utf8_lines(f)), "")
    try:
        uid = json.loads(first).get("UID") or json.loads(first).get("uid")
    except (json.JSONDecodeError, AttributeError):
        return True
    return uid != f.stem


def _iter_jsonl(f: Path) -> Iterator[tuple[Source, Any, str]]:
    from grokscope.core.textfile import iter_utf8_lines

    for lineno, line in iter_utf8_lines(f):
        if not line.strip():
            continue
        src = Source(str(f), lineno)
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raw = _Invalid(f"{src}: not valid JSON ({e.msg} at column {e.colno})")
        yield src, raw, f.stem


def _iter_hub(wanted: list[str] | None) -> Iterator[tuple[Source, Any, str]]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"'{HUB_NAME}' needs the 'datasets' package (pip install 'grokscope[hub]'), "
            "or pass a local directory of BLiMP jsonl files"
        ) from None
    try:
        configs = wanted or datasets.get_dataset_config_names(HUB_NAME)
        for config in configs:
            ds = datasets.load_dataset(HUB_NAME, config, split="train")
            for i, row in enumerate(ds):
                yield Source(f"hf:{HUB_NAME}/{config}", i), dict(row), config
    except Exception as e:  # network, hub or cache errors
        if isinstance(e, DataError):
            raise
        raise DataError(
            f"could not load '{HUB_NAME}' from the Hugging Face hub ({type(e).__name__}: {e}); "
            "pass a local directory of BLiMP jsonl files instead"
        ) from None


# ---- records ------------------------------------------------------------------------------
def _pick(raw: dict[str, Any], key: str) -> Any:
    for alias in _ALIASES[key]:
        if alias in raw and raw[alias] is not None:
            return raw[alias]
    return None


def _normalise(raw: Any, src: Source, default_uid: str) -> dict[str, Any]:
    if isinstance(raw, _Invalid):
        raise raw
    if not isinstance(raw, dict):
        raise _Invalid(f"{src}: expected a JSON object with 'good' and 'bad', got {type(raw).__name__}")
    good, bad = _pick(raw, "good"), _pick(raw, "bad")
    for name, value in (("good", good), ("bad", bad)):
        if value is None:
            raise _Invalid(f"{src}: no '{name}' sentence (expected a '{name}' or 'sentence_{name}' field)")
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"{src}: '{name}' must be a non-empty string, got {value!r}")
    if good == bad:
        raise _Invalid(f"{src}: good and bad sentences are identical ({good!r}); a minimal pair must differ "
                       "(use --skip-invalid to skip such pairs)")
    uid = _pick(raw, "uid")
    uid = str(uid) if uid is not None else default_uid
    pid = _pick(raw, "pair_id")
    if pid is None:
        pid = src.line - 1
    try:
        pair_id = int(pid)
    except (TypeError, ValueError):
        raise _Invalid(f"{src}: pair_id must be an integer, got {pid!r}") from None
    phenomenon = _pick(raw, "phenomenon")
    rec: dict[str, Any] = {
        "uid": uid,
        "pair_id": pair_id,
        "phenomenon": str(phenomenon) if phenomenon is not None else uid,
        "good": good,
        "bad": bad,
    }
    for key, value in raw.items():
        if key not in _RENAMED and key not in _EXPLICIT:
            rec[key] = value
    for key in _EXPLICIT:
        start, end = _explicit_span(raw.get(key), good, key, src)
        rec[f"explicit_{key}_start"] = start
        rec[f"explicit_{key}_end"] = end
    return rec


def _explicit_span(value: Any, good: str, key: str, src: Source) -> tuple[int, int]:
    """``critical``/``context`` as a character span of ``good``; (-1, -1) when not given."""
    if value is None or value == "":
        return -1, -1
    if isinstance(value, str):
        m = re.search(rf"(?<![\w'-]){re.escape(value)}(?![\w'-])", good)
        if m is None:
            raise _Invalid(f"{src}: {key} {value!r} does not occur as a whole word in the good sentence {good!r}")
        return m.start(), m.end()
    if (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        start, end = value
        if not 0 <= start < end <= len(good):
            raise _Invalid(
                f"{src}: {key} span {list(value)} is not inside the good sentence "
                f"(0 <= start < end <= {len(good)})"
            )
        if not good[start:end].strip():
            raise _Invalid(f"{src}: {key} span {list(value)} covers only whitespace in {good!r}")
        return start, end
    raise _Invalid(f"{src}: {key} must be a word of the good sentence or a [start, end] span, got {value!r}")


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    if len(df) == 0:
        df = pd.DataFrame(columns=["uid", "pair_id", "phenomenon", "good", "bad", *SPAN_COLUMNS])
    df["pair_id"] = df["pair_id"].astype("int64")
    for col in SPAN_COLUMNS:
        df[col] = df[col].fillna(-1).astype("int64") if col in df else -1
    return df


def _subsample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in df.groupby("uid", sort=False).indices.items():
        if len(idx) <= n:
            keep.extend(idx)
        else:
            keep.extend(sorted(rng.choice(idx, size=n, replace=False)))
    return df.iloc[sorted(keep)].reset_index(drop=True)
