"""``grokscope train``: the stage (:func:`run_stage`, resumable, skipped when complete) and its
command line. The loop itself is :class:`grokscope.train.trainer.Trainer`; the schedule and model
recipe are in :mod:`grokscope.train.recipe`. Layout of ``STUDY/run/``: see :mod:`grokscope.train.trainer`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from grokscope.core import store
from grokscope.core.config import StudyConfig, TrainSection, config_from_dict, load_config
from grokscope.core.errors import ConfigError, MissingStageError
from grokscope.core.store import Study, step_name
from grokscope.train.trainer import CHECKPOINT_JSON, Trainer, TrainResult, summary_table


# ---------------------------------------------------------------------------------------------
# stage API and CLI
# ---------------------------------------------------------------------------------------------
def _tokens_path(cfg: StudyConfig, study: Study) -> Path:
    return cfg.resolve_path(cfg.data.tokens) if cfg.data.tokens else study.tokens_dir


def is_complete(run_dir: Path, cfg: TrainSection) -> bool:
    """True when ``run_dir`` holds the final checkpoint and a state at ``max_steps`` (nothing to resume)."""
    state = run_dir / "state" / "state.json"
    final = run_dir / "checkpoints" / step_name(cfg.max_steps) / CHECKPOINT_JSON
    return state.exists() and final.exists() and store.read_json(state).get("step") == cfg.max_steps


def run_stage(cfg: StudyConfig, study: Study, *, peak_tflops: float = 0.0, progress: bool = True) -> TrainResult | None:
    """Train the study's model from ``[train]`` (resuming if ``run/`` holds a state); None if done."""
    tokens = _tokens_path(cfg, study)
    if not tokens.exists() and not Path(str(tokens) + ".bin").exists():
        how = f"grokscope prepare --config {cfg.source}" if cfg.source else "grokscope prepare"
        raise MissingStageError("token stream", str(tokens), how)
    if cfg.data.rows_per_step and cfg.data.rows_per_step != cfg.train.batch_size:
        raise ConfigError(
            f"[data] rows_per_step = {cfg.data.rows_per_step} but [train] batch_size = {cfg.train.batch_size}; "
            "a run grokscope trains reads batch_size rows per step, so set them equal (or rows_per_step = 0)"
        )
    if is_complete(study.run_dir, cfg.train):
        print(f"grokscope train: {study.run_dir} is complete (step {cfg.train.max_steps}); nothing to do")
        return None
    result = Trainer(
        cfg.train, tokens, study.run_dir, data_format=cfg.data.format,
        tokenizer=str(cfg.resolve_path(cfg.data.tokenizer)) if cfg.data.tokenizer and cfg.data.tokens else "",
        eos_id=cfg.data.eos_id if cfg.data.eos_id >= 0 else None,
        peak_tflops=peak_tflops, progress=progress,
    ).fit()
    print(summary_table(result))
    return result


_HELP = {
    "n_layer": "transformer blocks", "n_embd": "model width", "n_head": "attention heads",
    "n_positions": "model context; 0 = the stream's seq_len", "batch_size": "rows per optimizer step (B)",
    "max_steps": "optimizer steps", "lr": "peak learning rate", "min_lr_ratio": "cosine floor as a fraction of lr",
    "warmup_steps": "linear warmup steps", "weight_decay": "AdamW decay (not on biases/LayerNorm)",
    "grad_clip": "max gradient norm; 0 = off", "log_spaced_until": "checkpoints at 0,1,2,4,... up to this",
    "checkpoint_every": "then a checkpoint every N steps (and the last step)", "device": "auto | cpu | cuda",
    "threads": "torch CPU threads; 0 = all cores", "state_every": "save resume state every N steps",
    "state_seconds": "... and at least this often (seconds; 0 = off)",
    "pad_vocab_to": "round the vocabulary up to a multiple of this",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="study TOML; its [train] and [data] sections give the defaults")
    parser.add_argument("--out", help="study directory (the run goes to OUT/run); default: from --config")
    parser.add_argument("--tokens", help="token stream to train on (default: the study's tokens/ directory)")
    parser.add_argument("--format", choices=["auto", "grokscope", "megatron", "nanogpt", "olmo"],
                        help="format of --tokens (default: auto)")
    parser.add_argument("--tokenizer", help="tokenizer saved into checkpoints when the stream has none")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="device peak (bf16 dense) TFLOP/s; when given, the summary reports MFU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("[train] settings (override the config)")
    defaults = TrainSection()
    hints = typing.get_type_hints(TrainSection)
    for f in dataclasses.fields(TrainSection):
        if f.name == "enabled":
            continue
        default = getattr(defaults, f.name)
        if hints[f.name] is bool:
            group.add_argument(_flag(f.name), dest=f"train_{f.name}", action=argparse.BooleanOptionalAction,
                               default=None, help=f"{_HELP.get(f.name, f.name)} (default: {default})")
        else:
            group.add_argument(_flag(f.name), dest=f"train_{f.name}", type=hints[f.name], default=None,
                               metavar=hints[f.name].__name__.upper(),
                               help=f"{_HELP.get(f.name, f.name)} (default: {default})")


def config_from_args(args: argparse.Namespace) -> tuple[StudyConfig, Study]:
    """The study config (file + flag overrides, validated) and study directory the flags describe."""
    if args.config:
        base = load_config(args.config)
        raw = base.to_dict()
    else:
        base, raw = None, StudyConfig().to_dict()
    for f in dataclasses.fields(TrainSection):
        value = getattr(args, f"train_{f.name}", None)
        if value is not None:
            raw["train"][f.name] = value
    if args.tokens:
        raw["data"]["tokens"] = str(Path(args.tokens).resolve())
    if args.format:
        raw["data"]["format"] = args.format
    if args.tokenizer:
        raw["data"]["tokenizer"] = str(Path(args.tokenizer).resolve())
    raw["train"]["enabled"] = True
    cfg = config_from_dict(raw, where=args.config or "command line")
    if base is not None:
        cfg.source = base.source
    if args.out:
        study = Study(Path(args.out))
    elif base is not None:
        study = Study(cfg.study_dir)
    else:
        raise ConfigError("give --out STUDY_DIR (or --config study.toml) to say where the run goes")
    return cfg, study


def run(args: argparse.Namespace) -> int:
    cfg, study = config_from_args(args)
    if not cfg.data.tokens and not study.tokens_dir.exists():
        raise MissingStageError("token stream", str(study.tokens_dir),
                                "grokscope prepare (or pass --tokens PATH)")
    run_stage(cfg, study, peak_tflops=args.peak_tflops, progress=not args.no_progress)
    return 0
