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

import argparse
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
from grokscope.core.errors import DataError, GrokscopeError, MissingStageError
from grokscope.score.pairs import (
    REDUCTIONS,
    REGIONS,
    ScoreOptions,
    _hidden_rows,
    model_geometry,
    score_pairs,
)
from grokscope.score.encoding import (
    CONVENTIONS,
    EncodedSentence,
    encode_pairs,
    with_phrases,
)


if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from grokscope.core.checkpoints import Checkpoint
    from grokscope.core.config import StudyConfig
    from grokscope.core.store import Study

# the console script pauses garbage collection until load_model has imported the architecture
# (grokscope.core.heap): 0.9 s of a 9.5 s run on 2,000 pairs
SETTLES_HEAP = True


@dataclass
class ScoreJob:
    """Everything one ``score`` invocation needs (built from CLI flags or a study config)."""

    checkpoints: list[Checkpoint]
    pairs: pd.DataFrame
    benchmark: str
    benchmark_fingerprint: str
    options: ScoreOptions
    tokenizer: str = ""  # override; default: the checkpoint's own tokenizer
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    force: bool = False


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
    import torch

    if job.threads > 0:
        torch.set_num_threads(job.threads)
    errors = [] if errors is None else errors
    device = resolve_device(job.device, "score --device")
    summaries = []
    encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]] = {}
    for ckpt in job.checkpoints:
        meta_expected = {"convention": job.options.convention, "reduction": job.options.reduction,
                         "region": job.options.region, "benchmark_fingerprint": job.benchmark_fingerprint}
        try:
            if not job.force and _already_scored(study, ckpt, meta_expected, job.options):
                summaries.append(_summary_from_disk(study, ckpt))
                continue
            summaries.append(_score_one(job, study, ckpt, device, encode_cache))
        except GrokscopeError as e:
            errors.append(f"{ckpt.label} (step {ckpt.step}): {e}")
            summaries.append(CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "failed"))
    return summaries


def _already_scored(study: Study, ckpt: Checkpoint, expected: dict[str, Any], options: ScoreOptions) -> bool:
    from grokscope.core.store import read_parquet_metadata

    path = study.score_path(ckpt.step)
    if not path.exists():
        return False
    meta = read_parquet_metadata(path)
    differing = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: {a!r} on disk vs {b!r} now" for k, (a, b) in differing.items())
        raise DataError(f"{path}: already scored with different settings ({detail}); "
                        "use another --out or --force to re-score")
    if options.capture_hidden and not study.hidden_path(ckpt.step).exists():
        return False
    if options.capture_attention and not study.attention_path(ckpt.step).exists():
        return False
    return True


def _summary_from_disk(study: Study, ckpt: Checkpoint) -> CheckpointSummary:
    import pyarrow.parquet as pq

    correct = pq.read_table(study.score_path(ckpt.step), columns=["correct"]).column(0).to_numpy()
    acc = float(np.mean(correct)) if len(correct) else float("nan")
    return CheckpointSummary(ckpt.step, ckpt.tokens_seen, ckpt.label, "skipped (done)", acc)


def _score_one(job: ScoreJob, study: Study, ckpt: Checkpoint, device: str,
               encode_cache: dict[tuple[str, str], list[tuple[EncodedSentence, EncodedSentence]]]) -> CheckpointSummary:
    from grokscope.core.store import commit_npy, open_npy_for_writing, write_npy, write_parquet
    from grokscope.core.tokenizer import tokenizer_fingerprint

    t0 = time.perf_counter()
    tokenizer = load_checkpoint_tokenizer(ckpt, job.tokenizer)
    model = load_model(ckpt, device, job.dtype, attention=job.options.capture_attention,
                       progress=job.options.progress)
    check_tokenizer_matches(tokenizer, model, ckpt.label)
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = (fingerprint, job.options.convention)
    if key not in encode_cache:
        encode_cache[key] = encode_pairs(tokenizer, job.pairs, job.options.convention)
    encoded = encode_cache[key]
    geometry = model_geometry(model)
    options = replace(job.options, desc=f"step {ckpt.step}")
    hidden_out = None
    if options.capture_hidden:
        n_captured = int((_hidden_rows(encoded, options) >= 0).sum())
        hidden_out = open_npy_for_writing(study.hidden_path(ckpt.step),
                                          (n_captured, 2, geometry.n_layer + 1, geometry.d_model), np.float16)
    result = score_pairs(model, tokenizer, job.pairs, options=options, encoded=encoded, hidden_out=hidden_out)
    # arrays first, the Parquet last: its presence marks the checkpoint as done
    if hidden_out is not None:
        hidden_out.flush()
        result.hidden = None
        del hidden_out
        commit_npy(study.hidden_path(ckpt.step))
    if result.attention is not None:
        write_npy(study.attention_path(ckpt.step), result.attention)
    metadata = {
        "step": ckpt.step, "tokens_seen": ckpt.tokens_seen, "checkpoint": ckpt.path, "revision": ckpt.revision,
        "model_type": geometry.model_type, "n_layer": geometry.n_layer, "n_head": geometry.n_head,
        "d_model": geometry.d_model, "tokenizer_fingerprint": fingerprint,
        "benchmark": job.benchmark, "benchmark_fingerprint": job.benchmark_fingerprint,
        "convention": options.convention, "reduction": options.reduction, "region": options.region,
        "dtype": str(geometry.dtype).replace("torch.", ""),
        "hidden": options.capture_hidden, "attention": options.capture_attention,
        "hidden_pairs": options.hidden_pairs, "seed": options.seed,
    }
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grokscope.core.config import ScoreSection

    d = ScoreSection()
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="SPEC",
                        help="HF model dirs, globs, grokscope study/run dirs, or hub ids like "
                             "EleutherAI/pythia-160m@step1000")
    parser.add_argument("--benchmark", default="", help="BLiMP dir / pairs jsonl (default: the pairs of STUDY/phrases.parquet)")
    parser.add_argument("--phrases", default="", help="phrases.parquet with critical spans (default: STUDY/phrases.parquet if present)")
    parser.add_argument("--out", required=True, help="study directory; scores go to OUT/scores/")
    parser.add_argument("--tokenizer", default="", help="tokenizer to use instead of each checkpoint's own")
    parser.add_argument("--convention", choices=CONVENTIONS, default=d.convention,
                        help="lm_eval: ' '+sentence after BOS/EOS (default); minicons: sentence after BOS/EOS; none: no prefix")
    parser.add_argument("--reduction", choices=REDUCTIONS, default=d.reduction)
    parser.add_argument("--region", choices=REGIONS, default=d.region)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per forward pass")
    parser.add_argument("--step", type=int, default=None, help="training step of a single plain HF dir")
    parser.add_argument("--tokens-seen", type=int, default=None, help="tokens seen by a single plain HF dir")
    parser.add_argument("--tokens-per-step", type=int, default=None,
                        help="tokens per step, for steps read from directory names / stepN revisions")
    parser.add_argument("--no-hidden", action="store_true", help="do not keep hidden states")
    parser.add_argument("--no-attention", action="store_true", help="do not keep attention weights")
    parser.add_argument("--hidden-pairs", type=int, default=d.hidden_pairs, help="pairs whose hidden states are kept (0 = all)")
    parser.add_argument("--paradigms", nargs="*", default=[], help="only these BLiMP paradigms (uids)")
    parser.add_argument("--pairs-per-paradigm", type=int, default=0, help="seeded subsample per paradigm (0 = all)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip malformed pairs instead of stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default=d.dtype)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--force", action="store_true", help="re-score checkpoints already scored")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from grokscope.core.checkpoints import discover_checkpoints
    from grokscope.core.store import Study

    study = Study(args.out)
    options = ScoreOptions(
        convention=args.convention, reduction=args.reduction, region=args.region, batch_size=args.batch_size,
        capture_hidden=not args.no_hidden, capture_attention=not args.no_attention,
        hidden_pairs=args.hidden_pairs, seed=args.seed, progress=not args.quiet,
    )
    options.validate()
    pairs, benchmark, fingerprint = _pairs_for(study, args.benchmark, args.phrases, args.paradigms,
                                               args.pairs_per_paradigm, args.seed, args.skip_invalid,
                                               report_skipped=True)
    if not _has_spans(pairs):
        if options.capture_hidden or options.capture_attention:
            print("grokscope score: no critical phrases (run `grokscope phrases` or pass --phrases); "
                  "hidden states and attention are not captured", file=sys.stderr)
        options.capture_hidden = options.capture_attention = False
        if options.region == "critical":
            raise MissingStageError("critical phrases (needed for --region critical)", str(study.phrases_path),
                                    f"grokscope phrases --benchmark BENCHMARK --out {study.root}")
    errors: list[str] = []
    checkpoints = discover_checkpoints(args.checkpoints, step=args.step, tokens_seen=args.tokens_seen,
                                       tokens_per_step=args.tokens_per_step, errors=errors)
    job = ScoreJob(checkpoints=checkpoints, pairs=pairs, benchmark=benchmark, benchmark_fingerprint=fingerprint,
                   options=options, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                   threads=args.threads, force=args.force)
    return _finish(score_checkpoints(job, study, errors), errors, len(pairs))


def run_stage(cfg: StudyConfig, study: Study) -> None:
    """Score the checkpoints of ``[score] checkpoints`` (default: the study's run) on the
    pairs of ``phrases.parquet``; skip checkpoints already scored."""
    from grokscope.core.checkpoints import discover_checkpoints

    sc = cfg.score
    toml = cfg.source or "STUDY.toml"
    study.require(study.phrases_path, "critical phrases",
                  f"grokscope phrases --benchmark BENCHMARK --out {study.root}  (or: grokscope run {toml})")
    specs = [str(cfg.resolve_path(s)) if not _is_hub(s) else s for s in sc.checkpoints]
    if not specs:
        study.require(study.run_dir / "checkpoints", "training checkpoints",
                      f"grokscope train --config {toml}  (or list checkpoints in [score] checkpoints)")
        specs = [str(study.run_dir)]
    benchmark = str(cfg.resolve_path(cfg.benchmark.path)) if cfg.benchmark.path else ""
    pairs, bench_name, fingerprint = _pairs_for(study, benchmark, "", cfg.benchmark.paradigms,
                                                cfg.benchmark.pairs_per_paradigm, cfg.study.seed,
                                                cfg.benchmark.skip_invalid)
    options = ScoreOptions(convention=sc.convention, reduction=sc.reduction, region=sc.region,
                           batch_size=sc.batch_size, capture_hidden=sc.capture_hidden,
                           capture_attention=sc.capture_attention, hidden_pairs=sc.hidden_pairs,
                           seed=cfg.study.seed)
    errors: list[str] = []
    checkpoints = discover_checkpoints(specs, errors=errors)
    job = ScoreJob(checkpoints=checkpoints, pairs=pairs, benchmark=bench_name, benchmark_fingerprint=fingerprint,
                   options=options, device=sc.device, dtype=sc.dtype)
    summaries = score_checkpoints(job, study, errors)
    _print_summary(summaries, len(pairs))
    if errors:
        raise GrokscopeError(_error_text(errors))


def _is_hub(spec: str) -> bool:
    from grokscope.core.checkpoints import _looks_like_hub_id

    return not Path(spec).exists() and _looks_like_hub_id(spec)


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


def _finish(summaries: list[CheckpointSummary], errors: list[str], n_pairs: int) -> int:
    _print_summary(summaries, n_pairs)
    if errors:
        print(_error_text(errors), file=sys.stderr)
        return 2
    return 0


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
