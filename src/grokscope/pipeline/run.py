"""``grokscope run STUDY.toml``: run every stage a study still lacks, in order.

Stages (each a module with ``run_stage(cfg, study)``, see docs/CONTRACTS.md "Stage API"):

    testbed   generate the controlled-exposure corpus + pairs   if [testbed] enabled
    prepare   tokenize the corpus into the token stream         if [data] corpus is given
    train     pre-train a GPT with log-spaced checkpoints       if [train] enabled
    phrases   critical phrase of every pair
    exposure  search the token stream for every phrase
    score     score every checkpoint on every pair
    analyse   proxy splits, fit/generalisation/delay, probes, heads
    report    HTML report + summary table

The config is copied into the study directory on the first run; a later run whose config
differs in a key that changes results is refused (naming the keys). ``--reset STAGE`` redoes a
stage and every stage after it: their outputs are moved aside to ``STUDY/reset/<time>/`` (never
deleted), and the config may then differ in the keys of those stages (e.g. a new ``[score]``
or ``[analyse]`` setting, a larger ``[benchmark] pairs_per_paradigm`` with ``--reset phrases``). Every stage resumes its
own partial work, so killing ``grokscope run`` at any moment and running it again gives the
same final tables. A stage counts as done when its output is on disk *and* the pipeline
recorded its completion (``pipeline.json``); a finished study says there is nothing to do.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grokscope.core import heap
from grokscope.core.config import StudyConfig, config_from_dict, dump_config, load_config
from grokscope.core.errors import ConfigError, GrokscopeError
from grokscope.core.store import Study, read_json, write_json, write_text

STAGES: tuple[str, ...] = ("testbed", "prepare", "train", "phrases", "exposure", "score", "analyse", "report")

# keys that do not change any result: they may differ between runs of one study
HARMLESS_KEYS: frozenset[tuple[str, str]] = frozenset({
    ("study", "name"), ("study", "out"), ("report", "title"), ("report", "formats"),
    ("exposure", "workers"), ("exposure", "scheduler"), ("score", "batch_size"),
    ("score", "device"), ("train", "device"), ("train", "threads"), ("testbed", "out"),
})

PIPELINE_STATE = "pipeline.json"
# the first stage whose results a config section changes (a change there needs --reset of that stage
# or an earlier one); [study] seed subsamples pairs and seeds training: everything
SECTION_STAGE: dict[str, str] = {
    "study": "testbed", "testbed": "testbed", "data": "prepare", "train": "train", "benchmark": "phrases",
    "phrases": "phrases", "exposure": "exposure", "score": "score", "analyse": "analyse", "report": "report",
}


@dataclass
class StageResult:
    stage: str
    status: str  # "done" (already there) | "ran" | "skipped" (not asked for) | "failed"
    seconds: float
    note: str = ""


# --------------------------------------------------------------------------------------
# Which stages a study asks for, and where their outputs are
# --------------------------------------------------------------------------------------
def testbed_dir(cfg: StudyConfig) -> Path:
    return cfg.resolve_path(cfg.testbed.out) if cfg.testbed.out else cfg.study_dir / "testbed"


def effective_config(cfg: StudyConfig) -> StudyConfig:
    """The config the stages see: paths made absolute, testbed outputs filled in."""
    data = dataclasses.replace(cfg.data)
    bench = dataclasses.replace(cfg.benchmark)
    if cfg.testbed.enabled:
        tb = testbed_dir(cfg)
        if not data.corpus and not data.tokens:
            data.corpus = [str(tb / "corpus.jsonl")]
        if bench.path in ("", "testbed"):
            bench.path = str(tb / "pairs.jsonl")
    data.corpus = [c if c.startswith("hf:") else str(cfg.resolve_path(c)) for c in data.corpus]
    if data.tokens:
        data.tokens = str(cfg.resolve_path(data.tokens))
    if data.tokenizer and data.tokenizer != "train-bpe" and _is_local(data.tokenizer):
        data.tokenizer = str(cfg.resolve_path(data.tokenizer))
    if bench.path and _is_local(bench.path):
        bench.path = str(cfg.resolve_path(bench.path))
    out = dataclasses.replace(cfg, data=data, benchmark=bench)
    out.study = dataclasses.replace(cfg.study, out=str(cfg.study_dir))
    return out


def _is_local(spec: str) -> bool:
    """A path rather than a hub id ("org/name" with one slash and nothing that looks local)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return True
    return Path(spec).exists()


def wanted_stages(cfg: StudyConfig) -> dict[str, str]:
    """stage -> "" if the study asks for it, else the reason it is skipped."""
    return {
        "testbed": "" if cfg.testbed.enabled else "no [testbed] enabled",
        "prepare": "" if cfg.data.corpus else "no [data] corpus (using [data] tokens)",
        "train": "" if cfg.train.enabled else "[train] enabled = false (scoring [score] checkpoints)",
        "phrases": "", "exposure": "", "score": "", "analyse": "", "report": "",
    }


def output_exists(stage: str, cfg: StudyConfig, study: Study) -> bool:
    if stage == "testbed":
        tb = testbed_dir(cfg)
        return all((tb / f).exists() for f in ("corpus.jsonl", "pairs.jsonl", "ground_truth.json"))
    if stage == "prepare":
        return study.has_tokens()
    if stage == "train":
        return (study.run_dir / "checkpoints").exists()
    if stage == "phrases":
        return study.has_phrases()
    if stage == "exposure":
        return study.has_exposure()
    if stage == "score":
        return bool(study.scored_steps())
    if stage == "analyse":
        return study.has_analysis()
    if stage == "report":
        return study.has_report()
    raise ValueError(stage)


# --------------------------------------------------------------------------------------
# Checks before anything runs
# --------------------------------------------------------------------------------------
def check_inputs(cfg: StudyConfig, eff: StudyConfig) -> None:
    """Raise a :class:`ConfigError` for a missing path or a stage asked for without inputs."""
    where = cfg.source or "<config>"
    if cfg.testbed.enabled:
        cfg.testbed.validate(f"{where}: [testbed]")
    tb_files = {str(testbed_dir(cfg) / f) for f in ("corpus.jsonl", "pairs.jsonl")} if cfg.testbed.enabled else set()
    for c in eff.data.corpus:
        if c.startswith("hf:") or c in tb_files:
            continue
        if not any(ch in c for ch in "*?[") and not Path(c).exists():
            raise ConfigError(f"{where}: [data] corpus path does not exist: {c}")
        if any(ch in c for ch in "*?[") and not glob.glob(c):
            raise ConfigError(f"{where}: [data] corpus pattern matches no file: {c}")
    if eff.data.tokens and not Path(eff.data.tokens).exists() and not Path(eff.data.tokens + ".bin").exists():
        raise ConfigError(f"{where}: [data] tokens path does not exist: {eff.data.tokens}")
    if eff.data.corpus and eff.data.tokens:
        raise ConfigError(f"{where}: [data] give either 'corpus' (to prepare) or 'tokens' (an existing stream), not both")
    if not eff.data.corpus and not eff.data.tokens:
        raise ConfigError(
            f"{where}: no token stream: the exposure stage needs [data] corpus (to prepare) or [data] tokens"
        )
    if eff.data.corpus and not eff.data.tokenizer:
        raise ConfigError(f"{where}: [data] corpus needs [data] tokenizer (a tokenizer path or \"train-bpe\")")
    if eff.data.tokenizer and eff.data.tokenizer != "train-bpe" and _is_local(eff.data.tokenizer) \
            and not Path(eff.data.tokenizer).exists():
        raise ConfigError(f"{where}: [data] tokenizer path does not exist: {eff.data.tokenizer}")
    if not eff.benchmark.path:
        raise ConfigError(f"{where}: the phrases stage needs [benchmark] path (BLiMP dir or pairs jsonl)")
    if _is_local(eff.benchmark.path) and eff.benchmark.path not in tb_files and not Path(eff.benchmark.path).exists():
        raise ConfigError(f"{where}: [benchmark] path does not exist: {eff.benchmark.path}")
    if not cfg.train.enabled and not cfg.score.checkpoints:
        raise ConfigError(
            f"{where}: the score stage needs checkpoints: set [train] enabled = true or list [score] checkpoints"
        )
    if cfg.train.enabled and not eff.data.corpus and not eff.data.tokens:
        raise ConfigError(f"{where}: [train] enabled needs a token stream ([data] corpus or [data] tokens)")


def changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``section.key`` names whose values differ and change results."""
    out = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) in HARMLESS_KEYS:
                continue
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key} ({a.get(key)!r} -> {b.get(key)!r})")
    return out


def check_config_against_saved(cfg: StudyConfig, study: Study, reset: str = "") -> None:
    """Refuse a run whose config differs from the study's saved copy in keys that change
    results, unless every such key belongs to ``reset`` or a later stage (:func:`run_study`
    then saves the new config)."""
    path = study.config_path
    if path.exists():
        try:
            saved_raw = tomllib.loads(path.read_text(encoding="utf-8"))
            saved = config_from_dict(saved_raw, where=str(path)).to_dict()
        except (tomllib.TOMLDecodeError, GrokscopeError) as e:
            raise ConfigError(f"{path}: the study's saved config cannot be read ({e}); move the study away") from None
        diff = changed_keys(saved, cfg.to_dict())
        earliest = min((STAGES.index(SECTION_STAGE.get(k.split(".")[0], "testbed")) for k in diff), default=None)
        if earliest is None:
            return
        first = STAGES[earliest]
        head = (f"{cfg.source}: the study {study.root} was run with a different config; these keys change "
                f"results: {', '.join(diff)}")
        if not reset:
            raise ConfigError(f"{head}. Restore them, give the study a new [study] out, or re-run with "
                              f"--reset {first} to redo the {first} stage and the ones after it (their outputs "
                              "are moved aside, not deleted).")
        if STAGES.index(reset) > earliest:
            raise ConfigError(f"{head}; they change the {first} stage, which --reset {reset} does not redo: "
                              f"use --reset {first}, restore them, or give the study a new [study] out.")


_SAVED_COPY_HEADER = "# config of this study, copied by `grokscope run` from "


def refuse_saved_copy(config_path: str) -> None:
    """A study's ``study.toml`` keeps the original's relative paths (they are relative to the
    original file), so running the copy would resolve them against the study directory and
    start a new study inside it: name the original instead."""
    try:
        with open(config_path, encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return  # load_config reports a missing file
    if first.startswith(_SAVED_COPY_HEADER):
        original = first[len(_SAVED_COPY_HEADER):].strip()
        raise ConfigError(f"{config_path}: this is the copy a study keeps of its config (its relative paths are "
                          f"relative to the original); run the original, {original}")


def _save_config(cfg: StudyConfig, study: Study) -> None:
    header = f"{_SAVED_COPY_HEADER}{cfg.source}\n"
    header += "# (relative paths are relative to that file)\n"
    write_text(study.config_path, header + dump_config(cfg))


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def _stage_function(stage: str) -> Callable[[StudyConfig, Study], None]:
    if stage == "testbed":
        return run_testbed_stage
    module_name = {"prepare": "grokscope.stream.stage"}.get(stage, f"grokscope.{stage}.stage")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise GrokscopeError(f"stage '{stage}': module {module_name} is not installed") from None
        raise
    fn = getattr(module, "run_stage", None)
    if fn is None:
        raise GrokscopeError(f"stage '{stage}': {module_name} has no run_stage(cfg, study)")
    return fn


def run_testbed_stage(cfg: StudyConfig, study: Study) -> None:
    """Generate the testbed (corpus, pairs, ground truth) unless it is there with the same settings."""
    from grokscope.data.testbed import generate, write_testbed

    out = testbed_dir(cfg)
    settings = cfg.testbed.settings()
    want = dataclasses.asdict(settings)
    if (out / "settings.json").exists() and all(
        (out / f).exists() for f in ("corpus.jsonl", "pairs.jsonl", "ground_truth.json")
    ):
        have = read_json(out / "settings.json")
        if have == want:
            return
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ConfigError(
            f"{out}: a testbed with different settings is already there (keys: {', '.join(diff)}); "
            "remove it or set [testbed] out elsewhere"
        )
    write_testbed(generate(settings), out)


def stage_outputs(stage: str, cfg: StudyConfig, study: Study) -> list[Path]:
    """What a stage writes (what ``--reset`` moves aside)."""
    return {
        "testbed": [testbed_dir(cfg)], "prepare": [study.tokens_dir], "train": [study.run_dir],
        "phrases": [study.phrases_path], "exposure": [study.exposure_path], "score": [study.scores_dir],
        "analyse": [study.analysis_dir], "report": [study.report_dir],
    }[stage]


def _check_reset_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"--reset: unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def reset_stages(cfg: StudyConfig, study: Study, first: str, echo: Callable[[str], None] = print) -> None:
    """Move the outputs of ``first`` and every later stage to ``STUDY/reset/<UTC time>/`` and
    forget their completion, so the next run redoes them. Nothing moves if any of those
    outputs lies outside the study."""
    _check_reset_stage(first)
    later = STAGES[STAGES.index(first):]
    root = study.root.resolve()
    found = [(stage, path) for stage in later for path in stage_outputs(stage, cfg, study) if path.exists()]
    for stage, path in found:
        if root not in path.resolve().parents:
            raise ConfigError(f"--reset {first}: {path} (the {stage} stage's output) is outside the study "
                              f"{study.root}; move it away yourself")
    aside = study.root / "reset" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for stage, path in found:
        target = aside / path.resolve().relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        echo(f"  {stage:<9} reset    ({path} -> {target})")
    state = _read_state(study)
    for stage in later:
        state["completed"].pop(stage, None)
    if (study.root / PIPELINE_STATE).exists():
        write_json(study.root / PIPELINE_STATE, state)


def _read_state(study: Study) -> dict[str, Any]:
    path = study.root / PIPELINE_STATE
    try:
        return read_json(path) if path.exists() else {"completed": {}}
    except ValueError:
        return {"completed": {}}


# the heavy libraries each stage imports: under the console script (collection paused, see
# grokscope.core.heap) those of the stages about to run are imported before the first one's "running"
# line (so stage times are the stages' own work) and frozen, which saves the 9 full collections
# (1.3 s) a demo run made over them
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "testbed": (),
    "prepare": ("transformers",),
    "train": ("pandas", "torch", "transformers.models.gpt2.modeling_gpt2"),
    "phrases": ("pandas",),
    "exposure": ("pandas",),
    "score": ("pandas", "pyarrow.parquet", "torch", "transformers.modeling_utils"),
    "analyse": ("pandas", "torch", "sklearn.linear_model", "numba"),
    "report": ("pandas", "grokscope.report.figures"),  # matplotlib with the Agg backend
}


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
    eff = effective_config(cfg)
    check_inputs(cfg, eff)
    study = Study(cfg.study_dir)
    study.root.mkdir(parents=True, exist_ok=True)
    first_run = not study.config_path.exists()
    # the saved copy itself (API use; the CLI refuses it): nothing to compare with or to save
    saved_copy = bool(cfg.source) and not first_run and study.config_path.resolve() == Path(cfg.source).resolve()
    if not saved_copy:
        check_config_against_saved(cfg, study, reset)
    if reset:
        reset_stages(eff, study, reset, echo)
    if (first_run or reset) and not saved_copy:
        _save_config(cfg, study)
    state = _read_state(study)
    wanted = wanted_stages(eff)
    results: list[StageResult] = []
    upstream_ran = False
    for stage in STAGES:
        if wanted[stage]:
            results.append(StageResult(stage, "skipped", 0.0, wanted[stage]))
            echo(f"  {stage:<9} skipped  ({wanted[stage]})")
            continue
        if not upstream_ran and stage in state["completed"] and output_exists(stage, eff, study):
            results.append(StageResult(stage, "done", 0.0))
            echo(f"  {stage:<9} done")
            continue
        fn = (stages or {}).get(stage) or _stage_function(stage)
        heap.settle_after(*dict.fromkeys(lib for later in STAGES[STAGES.index(stage):] if not wanted[later]
                                         for lib in STAGE_LIBRARIES[later]))
        echo(f"  {stage:<9} running ...")
        t0 = time.perf_counter()
        try:
            fn(eff, study)
        except GrokscopeError:
            results.append(StageResult(stage, "failed", time.perf_counter() - t0))
            echo(f"  {stage:<9} failed after {time.perf_counter() - t0:.1f}s (finished work is kept)")
            raise
        seconds = time.perf_counter() - t0
        upstream_ran = True
        state["completed"][stage] = {
            "seconds": round(seconds, 3), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(study.root / PIPELINE_STATE, state)
        results.append(StageResult(stage, "ran", seconds))
        echo(f"  {stage:<9} ran in {seconds:.1f}s")
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
    parser.add_argument("config", help="study TOML file (see studies/ and docs/studies.md)")
    parser.add_argument("--reset", metavar="STAGE", default="", choices=["", *STAGES],
                        help="redo STAGE and every later stage: their outputs are moved to STUDY/reset/<time>/, "
                             "and the config may change in those stages' sections")


SETTLES_HEAP = True  # run_study settles (grokscope.core.heap)


def run(args: argparse.Namespace) -> int:
    refuse_saved_copy(args.config)
    cfg = load_config(args.config)
    study_dir = cfg.study_dir
    print(f"grokscope run: study {cfg.study.name!r} in {study_dir}")
    results = run_study(cfg, reset=args.reset)
    print()
    print(format_summary(results))
    if all(r.status in ("done", "skipped") for r in results):
        print("\nnothing to do: every stage of this study is already done.")
    print(f"\nreport: {Study(study_dir).report_path}")
    return 0
