"""``grokscope train``: the stage (resumable, skipped when complete). The loop itself is
:class:`grokscope.train.trainer.Trainer`; the schedule and model recipe are in
:mod:`grokscope.train.recipe`. Layout of ``STUDY/run/``: :class:`grokscope.core.store.RunLayout`.
"""
from __future__ import annotations

from pathlib import Path

from grokscope.core import store
from grokscope.core.config import StudyConfig, TrainSection
from grokscope.core.errors import ConfigError, MissingStageError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study
from grokscope.train.run_inputs import finished_run_differences
from grokscope.train.trainer import CHECKPOINT_JSON, Trainer, summary_table


def is_complete(run_dir: Path, cfg: TrainSection) -> bool:
    """True when ``run_dir`` holds the final checkpoint and a state at ``max_steps`` (nothing to resume)."""
    run = store.RunLayout(run_dir)
    final = run.checkpoint_dir(cfg.max_steps) / CHECKPOINT_JSON
    return run.state_json.exists() and final.exists() and store.read_json(run.state_json).get("step") == cfg.max_steps


def run(cfg: StudyConfig, study: Study) -> None:
    """Train the study's model from ``[train]`` on ``[data] tokens`` or the study's prepared
    stream, resuming if ``run/`` holds a state; nothing to do when the run is complete."""
    tokens = Path(cfg.data.tokens) if cfg.data.tokens else study.tokens_dir
    if not tokens.exists() and not Path(str(tokens) + ".bin").exists():
        how = f"grokscope prepare --config {cfg.source}" if cfg.source else "grokscope prepare (or pass --tokens PATH)"
        raise MissingStageError("token stream", str(tokens), how)
    if cfg.data.rows_per_step and cfg.data.rows_per_step != cfg.train.batch_size:
        raise ConfigError(
            f"[data] rows_per_step = {cfg.data.rows_per_step} but [train] batch_size = {cfg.train.batch_size}; "
            "a run grokscope trains reads batch_size rows per step, so set them equal (or rows_per_step = 0)"
        )
    if is_complete(study.run_dir, cfg.train):
        diffs = finished_run_differences(study.run.run_json, cfg.train)
        if diffs:
            raise ConfigError(f"{study.run.run_json}: this run is complete but was trained with a different config; "
                              "differing keys:\n  " + "\n  ".join(diffs)
                              + "\nUse a new --out for the new model, or restore the original settings.")
        print(f"grokscope train: {study.run_dir} is complete (step {cfg.train.max_steps}); nothing to do")
        return
    result = Trainer(
        cfg.train, tokens, study.run_dir, data_format=cfg.data.format,
        tokenizer=cfg.data.tokenizer if cfg.data.tokenizer and cfg.data.tokens else "",
        eos_id=cfg.data.eos_id if cfg.data.eos_id >= 0 else None,
        peak_tflops=cfg.train.peak_tflops, progress=cfg.options.progress,
    ).fit()
    print(summary_table(result))


STAGE = Stage(
    name="train", sections=("train",), run=run, inputs=("tokens_dir",), outputs=lambda s: [s.run_dir],
    done=Study.has_checkpoints,
    wanted=lambda cfg: "" if cfg.train.enabled else "[train] enabled = false (scoring [score] checkpoints)",
    libraries=("pandas", "torch", "transformers.models.gpt2.modeling_gpt2"),
    cli=CommandLine(
        flags=(Flag("study.out", "--out", "study directory (the run goes to OUT/run); default: from --config"),
               Flag("data.tokens", "--tokens", "token stream to train on (default: the study's tokens/ directory)"),
               Flag("data.format", "--format", "format of --tokens"),
               Flag("data.tokenizer", "--tokenizer", "tokenizer saved into checkpoints when the stream has none")),
        exclude=("enabled",), fixed={"train.enabled": True}, config="--config", progress="--no-progress"),
)
run_stage = STAGE.run_config
