"""The copy of its config a study keeps (``study.toml``), and what may change between runs.

The config is copied into the study directory on the first run; a later run whose config
differs in a key that changes results is refused (naming the keys), unless ``--reset`` redoes
the first stage those keys change. Settings declared ``harmless`` (device, workers, titles) may
differ freely.
"""
from __future__ import annotations

from typing import Any

import tomllib

from grokscope.core.config import StudyConfig, all_settings, config_from_dict, dump_config
from grokscope.core.errors import ConfigError, GrokscopeError
from grokscope.core.store import Study, write_text
from grokscope.pipeline.registry import STAGES, load_stage

HARMLESS_KEYS: frozenset[tuple[str, str]] = frozenset((s.section, s.name) for s in all_settings() if s.harmless)
_SAVED_COPY_HEADER = "# config of this study, copied by `grokscope run` from "


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


def first_stage_of(section: str, stages: tuple[str, ...] = STAGES) -> str:
    """The first stage (in the run's order ``stages``) whose results a config section changes
    ([study] seed: every stage)."""
    return next((name for name in stages if section in load_stage(name).sections), stages[0])


def check_config_against_saved(cfg: StudyConfig, study: Study, reset: str = "",
                               stages: tuple[str, ...] = STAGES) -> None:
    """Refuse a run whose config differs from the study's saved copy in keys that change
    results, unless every such key belongs to ``reset`` or a later stage of ``stages`` (the run
    then saves the new config)."""
    path = study.config_path
    if not path.exists():
        return
    try:
        saved = config_from_dict(tomllib.loads(path.read_text(encoding="utf-8")), where=str(path)).to_dict()
    except (tomllib.TOMLDecodeError, GrokscopeError) as e:
        raise ConfigError(f"{path}: the study's saved config cannot be read ({e}); move the study away") from None
    diff = changed_keys(saved, cfg.to_dict())
    if not diff:
        return
    first = min((first_stage_of(k.split(".")[0], stages) for k in diff), key=stages.index)
    head = (f"{cfg.source}: the study {study.root} was run with a different config; these keys change "
            f"results: {', '.join(diff)}")
    if not reset:
        raise ConfigError(f"{head}. Restore them, give the study a new [study] out, or re-run with "
                          f"--reset {first} to redo the {first} stage and the ones after it (their outputs "
                          "are moved aside, not deleted).")
    if stages.index(reset) > stages.index(first):
        raise ConfigError(f"{head}; they change the {first} stage, which --reset {reset} does not redo: "
                          f"use --reset {first}, restore them, or give the study a new [study] out.")


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


def save_config(cfg: StudyConfig, study: Study) -> None:
    header = f"{_SAVED_COPY_HEADER}{cfg.source}\n"
    header += "# (relative paths are relative to that file)\n"
    write_text(study.config_path, header + dump_config(cfg))
