"""Exposure: when, in training order, did each critical phrase (and its bad counterpart) occur?

For every pair of ``phrases.parquet`` this stage searches the token stream for the critical
phrase and the bad phrase, tokenized with the tokenizer of the model under study
(:class:`grokscope.exposure.search.PhraseSearch`), and writes ``exposure.parquet``
(docs/CONTRACTS.md "Exposure"): the first step at which each phrase occurred (``r // B + 1``
for the first occurrence in row ``r``), its total count, and its cumulative count in window(t) =
rows ``[0, t·B)`` for every checkpoint step ``t``. Matching is exact on token ids with
whole-word boundaries, in one pass over the stream for all phrases; finished shards are kept in
``exposure.parts/`` so a killed run resumes (:mod:`grokscope.exposure.shards`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.checkpoints import checkpoint_steps
from grokscope.core.config import VARIANTS, StudyConfig
from grokscope.core.errors import ConfigError, DataError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study
from grokscope.exposure.search import PhraseSearch
from grokscope.exposure.shards import DEFAULT_SHARD_ROWS, StreamSpec, remove_parts, window_edges


def exposure_table(pairs: Any, good_first: np.ndarray, good_counts: np.ndarray, bad_first: np.ndarray,
                   bad_counts: np.ndarray, steps: Sequence[int], rows_per_step: int) -> Any:
    """The exposure.parquet table: per pair first steps, totals, cumulative count per step.
    ``*_counts`` are per-interval ``[n_pairs, len(steps) + 1]``; ``*_first`` first rows."""
    import pandas as pd

    cols: dict[str, Any] = {
        "uid": pairs["uid"].to_numpy(),
        "pair_id": pairs["pair_id"].to_numpy(),
        "supported": pairs["supported"].to_numpy(dtype=bool),
        "good_phrase": pairs["critical_phrase"].fillna("").astype(str).to_numpy(),
        "bad_phrase": pairs["bad_phrase"].fillna("").astype(str).to_numpy(),
    }
    for side, first in (("good", good_first), ("bad", bad_first)):
        step = pd.array(first // rows_per_step + 1, dtype="Int64")
        step[first < 0] = pd.NA  # never occurred
        cols[f"{side}_first_step"] = step
    cols["good_total_count"] = good_counts.sum(axis=1)
    cols["bad_total_count"] = bad_counts.sum(axis=1)
    good_cum = np.cumsum(good_counts, axis=1)
    bad_cum = np.cumsum(bad_counts, axis=1)
    for j, t in enumerate(steps):
        cols[f"good_count_{t}"] = good_cum[:, j]  # intervals 0..j = rows [0, t·B)
        cols[f"bad_count_{t}"] = bad_cum[:, j]
    return pd.DataFrame(cols)


@dataclass
class ExposureSummary:
    pairs: int
    phrases: int
    sequences: int
    rows: int
    tokens: int
    seconds: float
    good_seen_final: int
    bad_seen_final: int
    skipped: bool = False
    tokenize_seconds: float = 0.0
    search_seconds: float = 0.0


def _read_phrases(path: Path) -> tuple[Any, dict[str, Any]]:
    import pandas as pd

    from grokscope.core import store

    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataError(f"{path}: could not read the phrases table: {e}") from None
    need = ["uid", "pair_id", "supported", "critical_phrase", "bad_phrase"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected the phrases table of docs/CONTRACTS.md")
    return df, store.read_parquet_metadata(path)


def _forms_of(pairs: Any, column: str) -> list[Any]:
    """The surface forms ``[mid, sentence_start, line_start]`` of each pair (``None`` for a
    phrases table without the column: its phrase is taken as the mid-text form)."""
    if column not in pairs.columns:
        return [None] * len(pairs)
    return [list(f) if f is not None and len(f) else None for f in pairs[column]]


def _load_study_tokenizer(tokenizer: str | None, stream: Any) -> Any:
    from grokscope.core.tokenizer import load_tokenizer

    if tokenizer:
        return load_tokenizer(tokenizer)
    if getattr(stream, "tokenizer_dir", None) is not None:
        return load_tokenizer(stream.tokenizer_dir)
    raise ConfigError(
        f"{stream.path}: the token stream has no tokenizer/ directory; give the tokenizer of the model "
        "under study with --tokenizer (tokenizer.json, a vocab.json+merges.txt dir, or an HF dir)"
    )


def _check_tokenizer(stream: Any, tok: Any) -> tuple[str, int]:
    """The tokenizer's fingerprint and vocabulary size, after checking them against what the
    stream recorded (manifest ``tokenizer_fingerprint`` and ``vocab_size``)."""
    from grokscope.core.tokenizer import tokenizer_fingerprint, vocab_size

    fp = tokenizer_fingerprint(tok)
    recorded = getattr(stream, "tokenizer", None)
    if stream.format == "grokscope" and recorded and recorded != fp:
        raise DataError(
            f"{stream.path}/manifest.json: the token stream was made with tokenizer fingerprint {recorded}, "
            f"but the tokenizer used for the phrases has fingerprint {fp}; search with the stream's own tokenizer"
        )
    n_vocab = vocab_size(tok)
    sv = getattr(stream, "vocab_size", None)
    if sv is not None and int(sv) != n_vocab:
        raise DataError(
            f"{stream.path}: the token stream records a vocabulary of {sv} ids but the tokenizer has {n_vocab}"
        )
    return fp, n_vocab


def compute_exposure(phrases_path: Path, spec: StreamSpec, steps: Sequence[int], out_path: Path, *,
                     tokenizer: str | None = None, variants: Sequence[str] = VARIANTS, workers: int = 1,
                     scheduler: str = "", shard_rows: int = DEFAULT_SHARD_ROWS, progress: bool = True,
                     force: bool = False, window_tokens: int = 0) -> ExposureSummary:
    """Search the stream for every pair's phrases (and, with ``window_tokens`` > 0, its windowed
    long-distance pair, :mod:`grokscope.exposure.windows`) and write ``out_path`` (exposure.parquet).
    Skips (returns ``skipped=True``) when ``out_path`` exists with the same inputs."""
    from grokscope.core import store
    from grokscope.exposure.windows import pair_windows, window_columns

    t0 = time.perf_counter()
    variants = list(dict.fromkeys(variants))
    bad_v = sorted(set(variants) - set(VARIANTS))
    if bad_v or not variants:
        raise ConfigError(f"exposure: variants {variants} invalid; expected a non-empty subset of {list(VARIANTS)}")
    pairs, pmeta = _read_phrases(phrases_path)
    stream = spec.open()
    B = spec.rows_per_step_of(stream)
    steps = sorted({int(s) for s in steps})
    window_edges(steps, B, stream.n_rows, spec.path)  # a step past the stream: said before any work
    tok = _load_study_tokenizer(tokenizer, stream)
    fp, n_vocab = _check_tokenizer(stream, tok)
    meta = {
        "steps": steps, "rows_per_step": int(B), "row_len": int(stream.row_len),
        "tokens_path": str(Path(stream.path).resolve()), "tokenizer_fingerprint": fp, "variants": variants,
        "benchmark_fingerprint": pmeta.get("benchmark_fingerprint", ""), "n_rows": int(stream.n_rows),
        "whole_words": True,
    }
    if window_tokens:
        meta["window_tokens"] = int(window_tokens)
    phrases_sha = store.file_sha256(phrases_path)
    key = hashlib.sha256(json.dumps([meta, phrases_sha], sort_keys=True).encode()).hexdigest()[:16]
    meta["inputs_key"] = key
    if out_path.exists() and not force and store.read_parquet_metadata(out_path).get("inputs_key") == key:
        return ExposureSummary(len(pairs), 0, 0, int(stream.n_rows), int(stream.n_rows * stream.row_len),
                               0.0, 0, 0, skipped=True)

    good = pairs["critical_phrase"].fillna("").astype(str).tolist()
    bad = pairs["bad_phrase"].fillna("").astype(str).tolist()
    good_forms, bad_forms = _forms_of(pairs, "good_forms"), _forms_of(pairs, "bad_forms")
    t_tok = time.perf_counter()
    good_w, bad_w = pair_windows(pairs, variants) if window_tokens else ([], [])
    search = PhraseSearch(good + bad, tok, variants, eos_id=getattr(stream, "eos_id", None), vocab_size=n_vocab,
                          forms=good_forms + bad_forms, windows=[w for w in good_w + bad_w if w is not None],
                          window_tokens=window_tokens)
    t_tok = time.perf_counter() - t_tok
    t_search = time.perf_counter()
    parts_dir = out_path.parent / (out_path.stem + ".parts")
    found = search.search(spec, steps, workers=workers, scheduler=scheduler, shard_rows=shard_rows,
                          parts_dir=parts_dir, parts_key=key, progress=progress)
    t_search = time.perf_counter() - t_search
    gi, bi = found.rows_of(good, good_forms), found.rows_of(bad, bad_forms)
    table = exposure_table(pairs, found.first_row[gi], found.counts[gi], found.first_row[bi], found.counts[bi],
                           steps, B)
    table["good_forms"] = [list(found.keys[i][1]) for i in gi]  # the texts searched, summed in the counts
    table["bad_forms"] = [list(found.keys[i][1]) for i in bi]
    if window_tokens:
        window_columns(table, found, good_w, "good", steps, B)
        window_columns(table, found, bad_w, "bad", steps, B)
    store.write_parquet(out_path, table, metadata=meta)
    remove_parts(parts_dir)
    last = steps[-1] if steps else None
    return ExposureSummary(
        pairs=len(pairs), phrases=len(search.phrases), sequences=search.n_sequences, rows=int(stream.n_rows),
        tokens=int(stream.n_rows * stream.row_len), seconds=time.perf_counter() - t0,
        good_seen_final=int((table[f"good_count_{last}"] > 0).sum()) if last is not None else 0,
        bad_seen_final=int((table[f"bad_count_{last}"] > 0).sum()) if last is not None else 0,
        tokenize_seconds=t_tok, search_seconds=t_search,
    )


def _print_summary(s: ExposureSummary, out: Path, steps: Sequence[int]) -> None:
    if s.skipped:
        print(f"exposure: {out} is up to date (same inputs); nothing to do")
        return
    rate = s.tokens / s.search_seconds if s.search_seconds else float("nan")
    rows = [
        ("pairs", f"{s.pairs:,}"), ("distinct phrases", f"{s.phrases:,}"), ("token sequences", f"{s.sequences:,}"),
        ("stream rows / tokens", f"{s.rows:,} / {s.tokens:,}"),
        ("checkpoints", f"{len(steps)} ({steps[0]}…{steps[-1]})"),
        (f"good phrase seen by step {steps[-1]}", f"{s.good_seen_final:,} / {s.pairs:,}"),
        (f"bad phrase seen by step {steps[-1]}", f"{s.bad_seen_final:,} / {s.pairs:,}"),
        ("tokenize phrases + word tables", f"{s.tokenize_seconds:.1f} s"),
        ("search (index + scan)", f"{s.search_seconds:.1f} s ({rate / 1e6:.1f}M tokens/s)"),
        ("total", f"{s.seconds:.1f} s"), ("written", str(out)),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------
def _phrases_path(p: str) -> Path:
    path = Path(p)
    return Study(path).phrases_path if path.is_dir() or path.suffix != ".parquet" else path


def run(cfg: StudyConfig, study: Study) -> None:
    """Exposure of the study's phrases (or ``[exposure] phrases``) in its token stream (``[data]
    tokens``, else the prepared one) at its checkpoints (``[exposure] checkpoints``, else ``[score]
    checkpoints``, else the steps of the study's run)."""
    toml = cfg.source or "STUDY.toml"
    phrases = _phrases_path(cfg.exposure.phrases) if cfg.exposure.phrases else study.phrases_path
    study.require(phrases, "phrases table",
                  f"grokscope phrases --benchmark BENCHMARK --out {study.root}  (or: grokscope run {toml})")
    tokens = cfg.data.tokens or str(study.tokens_dir)
    if not cfg.data.tokens:
        study.require(study.tokens_dir / "manifest.json", "prepared token stream",
                      f"grokscope prepare --config {toml}  (or set [data] tokens to an existing stream)")
    specs = cfg.exposure.checkpoints or cfg.score.checkpoints
    if not specs:
        study.require(study.checkpoints_dir, "training checkpoints (their steps define the windows)",
                      f"grokscope train --config {toml}  (or list checkpoints in [score] checkpoints)")
        specs = [str(study.checkpoints_dir)]
    steps = checkpoint_steps(specs)
    rows_per_step = cfg.data.rows_per_step or (cfg.train.batch_size if cfg.train.enabled else None)
    spec = StreamSpec(tokens, cfg.data.format, rows_per_step or None, cfg.data.row_len or None,
                      cfg.data.eos_id if cfg.data.eos_id >= 0 else None)
    tokenizer = cfg.data.tokenizer if cfg.data.tokens and cfg.data.tokenizer else None
    summary = compute_exposure(phrases, spec, steps, study.exposure_path, tokenizer=tokenizer,
                               variants=cfg.exposure.variants, workers=cfg.exposure.workers,
                               scheduler=cfg.exposure.scheduler, shard_rows=cfg.exposure.shard_rows,
                               progress=cfg.options.progress,
                               force=cfg.options.force, window_tokens=cfg.exposure.window_tokens)
    _print_summary(summary, study.exposure_path, steps)


def _cli_defaults(raw: dict[str, Any]) -> None:
    """``grokscope exposure``: without ``--out`` the table goes next to ``--phrases``; ``--out``
    may name the study or its ``exposure.parquet``."""
    out, phrases = raw["study"]["out"], raw["exposure"]["phrases"]
    if not out and phrases:
        raw["study"]["out"] = str(_phrases_path(phrases).parent)
    elif out.endswith(".parquet"):
        if Path(out).name != Study(Path(out).parent).exposure_path.name:
            raise ConfigError(f"exposure --out {out}: expected a study directory (or its exposure.parquet)")
        raw["study"]["out"] = str(Path(out).parent)


STAGE = Stage(
    name="exposure", sections=("exposure",), run=run, inputs=("phrases_path", "tokens_dir"),
    outputs=lambda s: [s.exposure_path], done=Study.has_exposure, libraries=("pandas",),
    cli=CommandLine(
        flags=(Flag("exposure.phrases", required=True),
               Flag("data.tokens", "--tokens", "token stream: a prepared tokens/ dir, Megatron prefix, nanoGPT .bin, "
                                               "OLMo dir", required=True),
               Flag("exposure.checkpoints", required=True),
               Flag("data.tokenizer", "--tokenizer", "tokenizer of the model under study (default: the stream's "
                                                     "tokenizer/)"),
               Flag("data.format", "--format"), Flag("data.rows_per_step", "--rows-per-step"),
               Flag("data.row_len", "--row-len"), Flag("data.eos_id", "--eos-id"),
               Flag("exposure.window_tokens", "--window-tokens"), Flag("exposure.shard_rows", "--shard-rows"),
               Flag("study.out", "--out", "study directory to write exposure.parquet to (default: the --phrases "
                                          "study)")),
        force=True, prepare=_cli_defaults),
)
run_stage = STAGE.run_config
