"""``grokscope run STUDY.toml``: run every stage a study still lacks, in order.

Stages (each a package exporting ``STAGE``, listed in :mod:`grokscope.pipeline.registry`):

    testbed   generate the controlled-exposure corpus + pairs   if [testbed] enabled
    prepare   tokenize the corpus into the token stream         if [data] corpus is given
    train     pre-train a GPT with log-spaced checkpoints       if [train] enabled
    phrases   critical phrase of every pair
    exposure  search the token stream for every phrase
    score     score every checkpoint on every pair
    analyse   proxy splits, fit/generalisation/delay, probes, heads
    report    HTML report + summary table

The config is copied into the study directory on the first run; a later run whose config
differs in a key that changes results is refused, naming the keys (:mod:`grokscope.pipeline.saved`).
``--reset STAGE`` redoes a
stage and every stage after it: their outputs are moved aside to ``STUDY/reset/<time>/`` (never
deleted), and the config may then differ in the keys of those stages (e.g. a new ``[score]``
or ``[analyse]`` setting, a larger ``[benchmark] pairs_per_paradigm`` with ``--reset phrases``). Every stage resumes its
own partial work, so killing ``grokscope run`` at any moment and running it again gives the
same final tables. A stage counts as done when its output is on disk *and* the pipeline
recorded its completion (``pipeline.json``); a finished study says there is nothing to do.
"""
from __future__ import annotations

import argparse
import glob
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grokscope.core import heap
from grokscope.core.config import StudyConfig, load_config
from grokscope.core.errors import ConfigError, GrokscopeError
from grokscope.core.paths import has_glob, is_local
from grokscope.core.store import Study, read_json, write_json
from grokscope.pipeline.registry import STAGES, load_stage, order
from grokscope.pipeline.saved import check_config_against_saved, refuse_saved_copy, save_config


@dataclass
class StageResult:
    stage: str
    status: str  # "done" (already there) | "ran" | "skipped" (not asked for) | "failed"
    seconds: float
    note: str = ""


# --------------------------------------------------------------------------------------
# Checks before anything runs
# --------------------------------------------------------------------------------------
def check_inputs(cfg: StudyConfig, eff: StudyConfig) -> None:
    """Raise a :class:`ConfigError` for a missing path or a stage asked for without inputs
    (``eff``: the resolved config)."""
    where = cfg.source or "<config>"
    if cfg.testbed.enabled:
        cfg.testbed.validate(where)
    testbed = Study.for_config(eff)
    tb_files = {str(testbed.testbed_file(f)) for f in ("corpus.jsonl", "pairs.jsonl")} if cfg.testbed.enabled else set()
    for c in eff.data.corpus:
        if c.startswith("hf:") or c in tb_files:
            continue
        if not has_glob(c) and not Path(c).exists():
            raise ConfigError(f"{where}: [data] corpus path does not exist: {c}")
        if has_glob(c) and not glob.glob(c):
            raise ConfigError(f"{where}: [data] corpus pattern matches no file: {c}")
    if eff.data.tokens and not Path(eff.data.tokens).exists() and not Path(eff.data.tokens + ".bin").exists():
        raise ConfigError(f"{where}: [data] tokens path does not exist: {eff.data.tokens}")
    if eff.data.corpus and eff.data.tokens:
        raise ConfigError(f"{where}: [data] give either 'corpus' (to prepare) or 'tokens' (an existing stream), "
                          "not both")
    if not eff.data.corpus and not eff.data.tokens:
        raise ConfigError(
            f"{where}: no token stream: the exposure stage needs [data] corpus (to prepare) or [data] tokens"
        )
    if eff.data.corpus and not eff.data.tokenizer:
        raise ConfigError(f"{where}: [data] corpus needs [data] tokenizer (a tokenizer path or \"train-bpe\")")
    if eff.data.tokenizer and eff.data.tokenizer != "train-bpe" and is_local(eff.data.tokenizer) \
            and not Path(eff.data.tokenizer).exists():
        raise ConfigError(f"{where}: [data] tokenizer path does not exist: {eff.data.tokenizer}")
    if not eff.benchmark.path:
        raise ConfigError(f"{where}: the phrases stage needs [benchmark] path (BLiMP dir or pairs jsonl)")
    if is_local(eff.benchmark.path) and eff.benchmark.path not in tb_files and not Path(eff.benchmark.path).exists():
        raise ConfigError(f"{where}: [benchmark] path does not exist: {eff.benchmark.path}")
    if not cfg.train.enabled and not cfg.score.checkpoints:
        raise ConfigError(
            f"{where}: the score stage needs checkpoints: set [train] enabled = true or list [score] checkpoints"
        )
    if cfg.train.enabled and not eff.data.corpus and not eff.data.tokens:
        raise ConfigError(f"{where}: [train] enabled needs a token stream ([data] corpus or [data] tokens)")


# --------------------------------------------------------------------------------------
# Resetting and the record of finished stages
# --------------------------------------------------------------------------------------
def _check_reset_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"--reset: unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def reset_stages(study: Study, first: str, echo: Callable[[str], None] = print,
                 stages: tuple[str, ...] = STAGES) -> None:
    """Move the outputs of ``first`` and every later stage (in the run's order ``stages``) to
    ``STUDY/reset/<UTC time>/`` and forget their completion, so the next run redoes them.
    Nothing moves if any of those outputs lies outside the study."""
    _check_reset_stage(first)
    later = stages[stages.index(first):]
    root = study.root.resolve()
    found = [(stage, path) for stage in later for path in load_stage(stage).outputs(study) if path.exists()]
    for stage, path in found:
        if root not in path.resolve().parents:
            raise ConfigError(f"--reset {first}: {path} (the {stage} stage's output) is outside the study "
                              f"{study.root}; move it away yourself")
    aside = study.reset_dir / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for stage, path in found:
        target = aside / path.resolve().relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        echo(f"  {stage:<9} reset    ({path} -> {target})")
    state = _read_state(study)
    for stage in later:
        state["completed"].pop(stage, None)
    if study.pipeline_state_path.exists():
        write_json(study.pipeline_state_path, state)


def _read_state(study: Study) -> dict[str, Any]:
    path = study.pipeline_state_path
    try:
        return read_json(path) if path.exists() else {"completed": {}}
    except ValueError:
        return {"completed": {}}


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def run_study(
    cfg: StudyConfig,
    stages: dict[str, Callable[[StudyConfig, Study], None]] | None = None,
    echo: Callable[[str], None] = print,
    reset: str = "",
) -> list[StageResult]:
    """Run every stage the study lacks; with ``reset``, first move aside the outputs of that
    stage and every later one (see :func:`reset_stages`). ``stages`` overrides stage functions
    (tests)."""
    if reset:
        _check_reset_stage(reset)
    eff = cfg.resolved()
    eff.options.in_pipeline = True
    check_inputs(cfg, eff)
    study = Study.for_config(eff)
    study.root.mkdir(parents=True, exist_ok=True)
    first_run = not study.config_path.exists()
    # the saved copy itself (API use; the CLI refuses it): nothing to compare with or to save
    saved_copy = bool(cfg.source) and not first_run and study.config_path.resolve() == Path(cfg.source).resolve()
    if not saved_copy:
        check_config_against_saved(cfg, study, reset, order(eff.data.withhold > 0))
    if reset:
        reset_stages(study, reset, echo, order(eff.data.withhold > 0))
    if (first_run or reset) and not saved_copy:
        save_config(cfg, study)
    return _run_stages(eff, study, stages or {}, echo)


def _stage_function(name: str) -> Callable[[StudyConfig, Study], None]:
    """The stage's ``run``, holding its study lock (:mod:`grokscope.core.locks`) while it runs."""
    from grokscope.core.locks import stage_lock

    run = load_stage(name).run

    def locked(cfg: StudyConfig, study: Study) -> None:
        with stage_lock(study.root, name):
            run(cfg, study)

    return locked


def output_exists(name: str, eff: StudyConfig, study: Study) -> bool:
    return load_stage(name).done(study)


def _run_stages(eff: StudyConfig, study: Study, overrides: dict[str, Callable[[StudyConfig, Study], None]],
                echo: Callable[[str], None]) -> list[StageResult]:
    state = _read_state(study)
    stages = order(eff.data.withhold > 0)
    records = {name: load_stage(name) for name in stages}
    wanted = {name: records[name].wanted(eff) for name in stages}
    results: list[StageResult] = []
    upstream_ran = False
    for i, name in enumerate(stages):
        if wanted[name]:
            results.append(StageResult(name, "skipped", 0.0, wanted[name]))
            echo(f"  {name:<9} skipped  ({wanted[name]})")
            continue
        if not upstream_ran and name in state["completed"] and output_exists(name, eff, study):
            results.append(StageResult(name, "done", 0.0))
            echo(f"  {name:<9} done")
            continue
        # under the console script (collection paused, grokscope.core.heap) the libraries of the stages
        # about to run are imported before the first one's "running" line (stage times are the stages'
        # own work) and frozen, which saves the 9 full collections (1.3 s) a demo run made over them
        heap.settle_after(*dict.fromkeys(lib for later in stages[i:] if not wanted[later]
                                         for lib in records[later].libraries))
        echo(f"  {name:<9} running ...")
        t0 = time.perf_counter()
        try:
            (overrides.get(name) or _stage_function(name))(eff, study)
        except GrokscopeError:
            results.append(StageResult(name, "failed", time.perf_counter() - t0))
            echo(f"  {name:<9} failed after {time.perf_counter() - t0:.1f}s (finished work is kept)")
            raise
        seconds = time.perf_counter() - t0
        upstream_ran = True
        state["completed"][name] = {
            "seconds": round(seconds, 3), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(study.pipeline_state_path, state)
        results.append(StageResult(name, "ran", seconds))
        echo(f"  {name:<9} ran in {seconds:.1f}s")
    return results


def format_summary(results: list[StageResult]) -> str:
    lines = [f"{'stage':<10}{'status':<9}{'time':>9}  note", "-" * 44]
    for r in results:
        t = f"{r.seconds:.1f}s" if r.status == "ran" else "-"
        lines.append(f"{r.stage:<10}{r.status:<9}{t:>9}  {r.note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grokscope.core.flags import add_set_flag

    parser.add_argument("config", help="study TOML file (see studies/ and docs/studies.md)")
    parser.add_argument("--reset", metavar="STAGE", default="", choices=["", *STAGES],
                        help="redo STAGE and every later stage: their outputs are moved to STUDY/reset/<time>/, "
                             "and the config may change in those stages' sections")
    add_set_flag(parser)


SETTLES_HEAP = True  # run_study settles (grokscope.core.heap)


def run(args: argparse.Namespace) -> int:
    from grokscope.core.flags import given_settings, with_settings

    refuse_saved_copy(args.config)
    cfg = load_config(args.config)
    if args.set_values:
        cfg = with_settings(cfg, given_settings(args), where=f"{args.config} + --set")
    print(f"grokscope run: study {cfg.study.name!r} in {cfg.study_dir}")
    results = run_study(cfg, reset=args.reset)
    print()
    print(format_summary(results))
    if all(r.status in ("done", "skipped") for r in results):
        print("\nnothing to do: every stage of this study is already done.")
    print(f"\nreport: {Study(cfg.study_dir).report_path}")
    return 0
