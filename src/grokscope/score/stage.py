"""The ``score`` stage: score every checkpoint on every minimal pair, and capture what the
analyses need.

For each checkpoint (:mod:`grokscope.core.checkpoints`) and pair, the good and the bad sentence get a
log-probability under one of the conventions of :mod:`grokscope.score.encoding` (lm-eval's
or minicons'), computed by :func:`grokscope.score.pairs.score_pairs` together with the hidden
states at the critical token and the attention from it, when the analyses ask for them. One
Parquet file per checkpoint, ``STUDY/scores/step_XXXXXXXX.parquet`` (docs/CONTRACTS.md,
"Scores"), written last and atomically: its presence marks the checkpoint as done, so a re-run
skips it and a kill loses at most the checkpoint in progress. bf16 on GPU by default.

``from grokscope.score.stage import ScoreOptions, score_pairs`` works (they live in :mod:`grokscope.score.pairs`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grokscope.core.checkpoints import (
    check_tokenizer_matches,
    load_checkpoint_tokenizer,
    load_model,
)
from grokscope.core.devices import resolve_device
from grokscope.core.errors import DataError, DiskError, GrokscopeError, MissingStageError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.score.encoding import (
    EncodedSentence,
    encode_pairs,
    with_phrases,
)
from grokscope.score.loading import Ahead
from grokscope.score.pairs import (
    ScoreOptions,
    _hidden_rows,
    model_geometry,
    score_pairs,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from grokscope.core.checkpoints import Checkpoint
    from grokscope.core.config import StudyConfig
    from grokscope.core.store import Study



@dataclass
class ScoreJob:
    """Everything one ``score`` invocation needs (built from CLI flags or a study config)."""

    checkpoints: list[Checkpoint]
    pairs: pd.DataFrame
    benchmark: str
    benchmark_fingerprint: str
    options: ScoreOptions
    tokenizer: str = ""  # override; default: the checkpoint's own tokenizer
    allow_tokenizer_mismatch: bool = False  # score with the override even where it differs from the checkpoint's
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    force: bool = False
    prefetch: int = 1  # checkpoints loaded ahead of the one being scored (0: load each on its turn)
    workers: int = 1  # > 1: a Dask LocalCluster of this many processes (score/distributed.py)
    scheduler: str = ""  # a Dask scheduler's address: score there
    scheduler_timeout: float = 20.0


@dataclass
class CheckpointSummary:
    step: int
    tokens_seen: int
    checkpoint: str
    status: str  # "scored" | "skipped (done)" | "failed"
    accuracy: float = float("nan")
    seconds: float = 0.0
    pairs_per_s: float = 0.0


def score_checkpoints(job: ScoreJob, study: Study, errors: list[str] | None = None) -> list[CheckpointSummary]:
    """Score every checkpoint of ``job`` into ``study.scores_dir``, skipping those already done.

    A checkpoint that fails on input (unloadable, mismatched tokenizer, too-long pair) is
    reported in ``errors`` and the others are still scored; finished files are never touched.
    """
    errors = [] if errors is None else errors
    meta_expected = {"convention": job.options.convention, "reduction": job.options.reduction,
                     "region": job.options.region, "benchmark_fingerprint": job.benchmark_fingerprint}
    done: dict[int, CheckpointSummary] = {}
    todo = []
    for i, ckpt in enumerate(job.checkpoints):
        try:
            if not job.force and _already_scored(study, ckpt, meta_expected, job.options):
                done[i] = _summary_from_disk(study, ckpt)
            else:
                todo.append((i, ckpt))
        except GrokscopeError as e:
            done[i] = _failed(ckpt, e, errors)
    if job.workers > 1 or job.scheduler:  # one Dask task per checkpoint, the same code in the workers
        from grokscope.score.distributed import score_on_dask

        done.update(score_on_dask(job, study, todo, errors, _load, _score_one, _failed))
        return [done[i] for i in range(len(job.checkpoints))]
    import torch

    if job.threads > 0:
        torch.set_num_threads(job.threads)
    device = resolve_device(job.device, "score --device")
    encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]] = {}
    loads = Ahead(todo, lambda item: _load(job, item[1], device), ahead=job.prefetch)
    for (i, ckpt), loaded in loads:
        try:
            t0 = time.perf_counter()
            done[i] = _score_one(job, study, ckpt, loaded(), encode_cache, t0)
        except GrokscopeError as e:
            done[i] = _failed(ckpt, e, errors)
    return [done[i] for i in range(len(job.checkpoints))]


def _failed(ckpt: Checkpoint, e: GrokscopeError, errors: list[str]) -> CheckpointSummary:
    """Record a checkpoint that failed on its input; a full or read-only study stops the run (every
    later checkpoint would fail the same way: one message, not one per checkpoint)."""
    if isinstance(e, DiskError):
        raise e
    errors.append(f"{ckpt.label} (step {ckpt.step}): {e}")
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "failed")


def _load(job: ScoreJob, ckpt: Checkpoint, device: str) -> tuple[Any, Any]:
    """The checkpoint's tokenizer and model, checked against each other (runs one checkpoint ahead)."""
    tokenizer = load_checkpoint_tokenizer(ckpt, job.tokenizer, job.allow_tokenizer_mismatch)
    model = load_model(ckpt, device, job.dtype, attention=job.options.capture_attention,
                       progress=job.options.progress and not job.prefetch)
    check_tokenizer_matches(tokenizer, model, ckpt.label)
    return tokenizer, model


def _already_scored(study: Study, ckpt: Checkpoint, expected: dict[str, Any], options: ScoreOptions) -> bool:
    """Whether the checkpoint's table is on disk, readable, scored with these settings, and its arrays
    complete (the sizes the table recorded when they were committed with it)."""
    from grokscope.core.store import read_parquet_metadata

    path = study.score_path(ckpt.step)
    if not path.exists():
        return False
    try:
        meta = read_parquet_metadata(path)
    except Exception as e:  # noqa: BLE001 - an unreadable table (truncated by something else) is not scored
        print(f"grokscope score: {path} is unreadable ({type(e).__name__}: {e}); scoring step {ckpt.step} again",
              file=sys.stderr)
        return False
    differing = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in differing.items())
        raise DataError(f"{path}: already scored with different settings ({detail}); "
                        "use another --out or --force to re-score")
    at = meta.get("hidden_at", "critical")  # scores written before hidden_at existed read the critical token
    if options.capture_hidden and study.hidden_path(ckpt.step).exists() and at != options.hidden_at:
        raise DataError(f"{path}: hidden states were kept at hidden_at = {at!r}, now {options.hidden_at!r}; "
                        "use another --out or --force to re-score (or --set score.hidden_at=" + f"{at})")
    for kind, array, wanted in _arrays(study, ckpt.step, options):
        key = f"{kind}_bytes"
        if not wanted:
            continue
        if not array.exists():
            if kind == "attention_baseline" and key not in meta:
                continue  # scored before the baseline existed: analyses use raw attention
            return False
        if key in meta and array.stat().st_size != meta[key]:
            print(f"grokscope score: {array} has {array.stat().st_size} bytes but {path.name} recorded {meta[key]} "
                  f"(not the arrays scored with it); scoring step {ckpt.step} again", file=sys.stderr)
            return False
    return True


def _arrays(study: Study, step: int, options: ScoreOptions) -> list[tuple[str, Path, bool]]:
    """The arrays written beside a score table: ``(kind, path, wanted by these options)``; the
    table's metadata records each one's size as ``<kind>_bytes``."""
    return [("hidden", study.hidden_path(step), options.capture_hidden),
            ("attention", study.attention_path(step), options.capture_attention),
            ("attention_baseline", study.attention_baseline_path(step), options.capture_attention)]


def _summary_from_disk(study: Study, ckpt: Checkpoint) -> CheckpointSummary:
    import pyarrow.parquet as pq

    correct = pq.read_table(study.score_path(ckpt.step), columns=["correct"]).column(0).to_numpy()
    acc = float(np.mean(correct)) if len(correct) else float("nan")
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "skipped (done)", acc)


def _score_one(job: ScoreJob, study: Study, ckpt: Checkpoint, loaded: tuple[Any, Any],
               encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]],
               t0: float) -> CheckpointSummary:
    from grokscope.core.store import commit_npy, open_npy_for_writing, unique_partial, write_npy, write_parquet
    from grokscope.core.tokenizer import tokenizer_fingerprint

    tokenizer, model = loaded
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = (fingerprint, job.options.convention)
    if key not in encode_cache:
        encode_cache[key] = encode_pairs(tokenizer, job.pairs, job.options.convention)
    encoded = encode_cache[key]
    geometry = model_geometry(model)
    options = replace(job.options, desc=f"step {ckpt.step}")
    hidden_out = None
    partial = unique_partial(study.hidden_path(ckpt.step))
    try:
        if options.capture_hidden:
            n_captured = int((_hidden_rows(encoded, options) >= 0).sum())
            hidden_out = open_npy_for_writing(study.hidden_path(ckpt.step),
                                              (n_captured, 2, geometry.n_layer + 1, geometry.d_model), np.float16,
                                              partial=partial)
        result = score_pairs(model, tokenizer, job.pairs, options=options, encoded=encoded, hidden_out=hidden_out)
        # arrays first, the Parquet last: its presence marks the checkpoint as done
        if hidden_out is not None:
            hidden_out.flush()
            result.hidden = None
            del hidden_out
            commit_npy(study.hidden_path(ckpt.step), partial)
    finally:
        partial.unlink(missing_ok=True)
    if result.attention is not None:
        write_npy(study.attention_path(ckpt.step), result.attention)
    if result.attention_baseline is not None:
        write_npy(study.attention_baseline_path(ckpt.step), result.attention_baseline)
    metadata = {
        "step": ckpt.step, "tokens_seen": ckpt.tokens_seen, "checkpoint": ckpt.path, "revision": ckpt.revision,
        "model_type": geometry.model_type, "n_layer": geometry.n_layer, "n_head": geometry.n_head,
        "d_model": geometry.d_model, "tokenizer_fingerprint": fingerprint,
        "benchmark": job.benchmark, "benchmark_fingerprint": job.benchmark_fingerprint,
        "convention": options.convention, "reduction": options.reduction, "region": options.region,
        "dtype": str(geometry.dtype).replace("torch.", ""),
        "hidden": options.capture_hidden, "attention": options.capture_attention,
        "hidden_pairs": options.hidden_pairs, "seed": options.seed, "hidden_at": options.hidden_at,
    }
    for kind, array, wanted in _arrays(study, ckpt.step, options):
        if wanted and array.exists():
            metadata[f"{kind}_bytes"] = array.stat().st_size  # checked on resume: this table's arrays, complete
    write_parquet(study.score_path(ckpt.step), result.table, metadata=metadata)
    seconds = time.perf_counter() - t0
    acc = float(result.table["correct"].mean()) if len(result.table) else float("nan")
    rate = result.stats.n_pairs / result.stats.seconds if result.stats.seconds > 0 else 0.0
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "scored", acc, seconds, rate)


def load_benchmark(path: str, paradigms: list[str] | None = None, pairs_per_paradigm: int = 0, seed: int = 0,
                   skip_invalid: bool = False, report_skipped: bool = False) -> tuple[pd.DataFrame, str]:
    """Pairs (benchmark order) and their fingerprint, via :mod:`grokscope.data.benchmark`;
    ``report_skipped`` prints each invalid pair that ``skip_invalid`` left out (the CLI does; in
    ``grokscope run`` the phrases stage has already reported them)."""
    from grokscope.data.benchmark import benchmark_fingerprint, load_pairs

    df = load_pairs(path, paradigms=paradigms or None, pairs_per_paradigm=pairs_per_paradigm, seed=seed,
                    skip_invalid=skip_invalid)
    if report_skipped:
        for msg in df.attrs.get("skipped", []):
            print(f"grokscope score: skipped invalid pair: {msg}", file=sys.stderr)
    return df, benchmark_fingerprint(df)


def run(cfg: StudyConfig, study: Study) -> None:
    """Score the checkpoints of ``[score] checkpoints`` (default: the study's run) on the pairs of
    ``[benchmark] path`` with the critical spans of the study's phrases table (or ``[score]
    phrases``), or on the phrases table's own pairs; checkpoints already scored are skipped."""
    from grokscope.core.checkpoints import discover_checkpoints
    from grokscope.score.pairs import options_from_section

    sc = cfg.score
    options = options_from_section(sc, seed=cfg.study.seed, progress=cfg.options.progress)
    pairs, benchmark, fingerprint = _pairs_for(study, cfg.benchmark.path, sc.phrases, cfg.benchmark.paradigms,
                                               cfg.benchmark.pairs_per_paradigm, cfg.study.seed,
                                               cfg.benchmark.skip_invalid, report_skipped=not cfg.options.in_pipeline)
    if not _has_spans(pairs):
        if options.capture_hidden or options.capture_attention:
            print("grokscope score: no critical phrases (run `grokscope phrases` or pass --phrases); "
                  "hidden states and attention are not captured", file=sys.stderr)
        options.capture_hidden = options.capture_attention = False
        if options.region == "critical":
            raise MissingStageError("critical phrases (needed for --region critical)", str(study.phrases_path),
                                    f"grokscope phrases --benchmark BENCHMARK --out {study.root}")
    specs = list(sc.checkpoints)
    if not specs:
        study.require(study.checkpoints_dir, "training checkpoints",
                      f"grokscope train --config {cfg.source or 'STUDY.toml'}  (or list checkpoints in "
                      "[score] checkpoints)")
        specs = [str(study.run_dir)]
    errors: list[str] = []
    checkpoints = discover_checkpoints(specs, step=_given(sc.step), tokens_seen=_given(sc.tokens_seen),
                                       tokens_per_step=sc.tokens_per_step or None, errors=errors)
    job = ScoreJob(checkpoints=checkpoints, pairs=pairs, benchmark=benchmark, benchmark_fingerprint=fingerprint,
                   options=options, tokenizer=sc.tokenizer, allow_tokenizer_mismatch=sc.allow_tokenizer_mismatch,
                   device=sc.device, dtype=sc.dtype, threads=sc.threads, force=cfg.options.force,
                   prefetch=sc.prefetch, workers=sc.workers, scheduler=sc.scheduler,
                   scheduler_timeout=sc.scheduler_timeout)
    summaries = score_checkpoints(job, study, errors)
    _print_summary(summaries, len(pairs))
    if errors:
        raise GrokscopeError(_error_text(errors))


def _given(value: int) -> int | None:
    """-1 (the settings' "not given") as None."""
    return None if value < 0 else value


def _has_spans(pairs: pd.DataFrame) -> bool:
    return "critical_start" in pairs.columns


def _pairs_for(study: Study, benchmark: str, phrases: str, paradigms: list[str], pairs_per_paradigm: int,
               seed: int, skip_invalid: bool = False, report_skipped: bool = False) -> tuple[pd.DataFrame, str, str]:
    """The pairs to score, with critical spans merged in when a phrases table is available."""
    import pandas as pd

    from grokscope.core.store import read_parquet_metadata

    phrases_path = Path(phrases) if phrases else study.phrases_path
    if phrases and not phrases_path.exists():
        raise DataError(f"{phrases_path}: phrases table not found")
    ph = pd.read_parquet(phrases_path) if phrases_path.exists() else None
    if benchmark:
        pairs, fingerprint = load_benchmark(benchmark, paradigms, pairs_per_paradigm, seed, skip_invalid,
                                            report_skipped=report_skipped)
        name = benchmark
        if ph is not None:
            pairs = with_phrases(pairs, ph)
    elif ph is not None:
        meta = read_parquet_metadata(phrases_path)
        pairs = ph
        if paradigms:
            pairs = pairs[pairs["uid"].isin(paradigms)].reset_index(drop=True)
        if pairs_per_paradigm:
            from grokscope.data.benchmark import _subsample

            pairs = _subsample(pairs, pairs_per_paradigm, seed).reset_index(drop=True)
        name = meta.get("benchmark", str(phrases_path))
        fingerprint = meta.get("benchmark_fingerprint", "")
        if paradigms or pairs_per_paradigm or not fingerprint:
            from grokscope.data.benchmark import benchmark_fingerprint

            fingerprint = benchmark_fingerprint(pairs)
    else:
        raise MissingStageError("a benchmark (--benchmark) or critical phrases", str(study.phrases_path),
                                f"grokscope phrases --benchmark BENCHMARK --out {study.root}  (or pass --benchmark)")
    if len(pairs) == 0:
        raise DataError(f"benchmark '{name}': no pairs to score (check --paradigms)")
    return pairs, name, fingerprint


def _error_text(errors: list[str]) -> str:
    lines = [f"{len(errors)} checkpoint(s) not scored (finished results are kept):"]
    lines += [f"  - {e}" for e in errors]
    return "\n".join(lines)


def _print_summary(summaries: list[CheckpointSummary], n_pairs: int) -> None:
    if not summaries:
        print("no checkpoints scored")
        return
    print(f"{'step':>10} {'tokens_seen':>14} {'accuracy':>9} {'pairs/s':>9} {'time_s':>8}  status  checkpoint")
    for s in summaries:
        acc = f"{s.accuracy:.4f}" if s.accuracy == s.accuracy else "-"
        rate = f"{s.pairs_per_s:.1f}" if s.pairs_per_s else "-"
        secs = f"{s.seconds:.1f}" if s.seconds else "-"
        print(f"{s.step:>10} {s.tokens_seen:>14} {acc:>9} {rate:>9} {secs:>8}  {s.status}  {s.checkpoint}")
    print(f"{n_pairs} pairs per checkpoint")


STAGE = Stage(
    name="score", sections=("score", "benchmark"), run=run,
    inputs=("checkpoints_dir", "phrases_path"), outputs=lambda s: [s.scores_dir],
    done=lambda s: bool(s.scored_steps()),
    libraries=("pandas", "pyarrow.parquet", "torch", "transformers.modeling_utils"),
    settles_heap=True,  # load_model settles once the architecture is imported: 0.9 s of a 9.5 s run on 2,000 pairs
    cli=CommandLine(
        flags=(Flag("score.checkpoints", required=True), Flag("benchmark.path", "--benchmark",
               "BLiMP dir / pairs jsonl (default: the pairs of STUDY/phrases.parquet)"),
               Flag("study.out", "--out", "study directory; scores go to OUT/scores/", required=True),
               Flag("benchmark.paradigms", "--paradigms"), Flag("benchmark.pairs_per_paradigm", "--pairs-per-paradigm"),
               Flag("benchmark.skip_invalid", "--skip-invalid"), Flag("study.seed", "--seed")),
        force=True, progress="--quiet"),
)
run_stage = STAGE.run_config
