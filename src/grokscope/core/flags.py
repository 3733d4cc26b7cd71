"""Command-line flags generated from the config sections, and the config they describe.

Every setting of a stage's own section becomes ``--name-with-dashes`` (its type, allowed values,
help and default from its :func:`~grokscope.core.settings.setting`); a stage's
:class:`~grokscope.core.stage.CommandLine` adds settings of other sections under the flag names
its users know (``score --benchmark`` is ``benchmark.path``); and every command takes
``--set section.key=value`` (repeatable) for any key of any section. :func:`config_from_args`
turns the parsed flags into the same :class:`~grokscope.core.config.StudyConfig` a study TOML
gives, validated the same way; the command then calls the stage's ``run(cfg, study)``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib

from grokscope.core.config import (
    SECTIONS,
    StudyConfig,
    all_settings,
    config_from_dict,
    load_config,
    resolve_setting,
)
from grokscope.core.errors import ConfigError
from grokscope.core.settings import SettingInfo, coerce, section_settings, suggest
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study

DEST = "setting:"  # argparse dest prefix of a flag that sets a setting: "setting:score.batch_size"


def setting_by_key() -> dict[str, SettingInfo]:
    return {info.key: info for info in all_settings()}


def flag_name(info: SettingInfo) -> str:
    return info.flag or "--" + info.name.replace("_", "-")


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return repr(value) if value == "" else str(value)


def add_setting_flag(parser: argparse.ArgumentParser | Any, info: SettingInfo, name: str = "", help: str = "",
                     required: bool = False, positional: bool = False, dest: str = "",
                     default: Any = argparse.SUPPRESS) -> None:
    """One flag (or positional argument) that sets ``info``. By default it is absent from the
    namespace unless given (``dest`` ``setting:SECTION.KEY``, read by :func:`given_settings`); a
    command with its own ``dest`` and ``default`` reads it itself."""
    name = name or flag_name(info)
    shown = info.default if default is argparse.SUPPRESS else default
    if info.onoff and isinstance(shown, bool):
        shown = "on" if shown else "off"
    text = f"{help or info.help} (default: {_default_text(shown)})"
    dest = dest or DEST + info.key
    if positional:
        parser.add_argument(dest, metavar=name, help=help or info.help)
        return
    if info.hint is bool and info.onoff:
        parser.add_argument(name, dest=dest, choices=("on", "off"), default=default, help=text)
    elif info.hint is bool:
        parser.add_argument(name, dest=dest, action="store_const", const=True, default=default, help=text)
        negatives = ["--no-" + name.removeprefix("--")] + ([info.negative] if info.negative else [])
        parser.add_argument(*negatives, dest=dest, action="store_const", const=False, default=default,
                            help=f"set {info.key} to false")
    else:
        kwargs: dict[str, Any] = {"dest": dest, "default": default, "help": text, "required": required}
        if info.is_list:
            kwargs["nargs"] = "*"
            if info.item_type in (int, float):  # --sensitivity-min-counts 1 5 20
                kwargs["type"], kwargs["metavar"] = info.item_type, info.item_type.__name__.upper()
        elif info.choices:
            kwargs["choices"] = info.choices
        if not info.is_list:
            kwargs["type"] = info.hint
            kwargs["metavar"] = info.hint.__name__.upper() if not info.choices else None
        parser.add_argument(name, **kwargs)


def flag_value(info: SettingInfo, value: Any) -> Any:
    """A parsed flag's value as the setting's type (``on``/``off``, ``sep``-separated list items)."""
    if info.hint is bool and info.onoff and isinstance(value, str):
        return value == "on"
    if info.is_list and info.sep:
        items = [value] if isinstance(value, str) else value
        return [part.strip() for v in items for part in str(v).split(info.sep) if part.strip()]
    return value


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="set_values", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="set any key of any config section (repeatable); VALUE is TOML (42, 0.5, true, "
                             "\"text\", [\"a\", \"b\"]) or plain text")


def add_stage_arguments(parser: argparse.ArgumentParser, stage: Stage) -> None:
    """The flags of a stage's command: its own section's settings, its :class:`CommandLine`
    extras, ``--set``."""
    cli = stage.cli or CommandLine()
    by_key = setting_by_key()
    renamed = {f.key: f for f in cli.flags}
    for f in cli.flags:
        if f.positional:
            add_setting_flag(parser, by_key[f.key], f.name, f.help, positional=True)
    if cli.config == "--config":
        parser.add_argument("--config", help="study TOML; its sections give the defaults of the flags below")
    elif cli.config == "study":
        parser.add_argument("--config", help="study TOML (default: STUDY/study.toml if present)")
    for f in cli.flags:
        if not f.positional and f.key.split(".")[0] != stage.section:
            add_setting_flag(parser, by_key[f.key], f.name, f.help, f.required)
    group = parser.add_argument_group(f"[{stage.section}] settings")
    for info in section_settings(SECTIONS[stage.section], stage.section):
        if info.name in cli.exclude or (info.key in renamed and renamed[info.key].positional):
            continue
        f = renamed.get(info.key, Flag(info.key))
        add_setting_flag(group, info, f.name, f.help, f.required)
    if cli.force:
        parser.add_argument("--force", action="store_true", help="redo the stage even if its output is up to date")
    if cli.progress:
        parser.add_argument(cli.progress, dest="no_progress", action="store_true", help="no progress bars")
    add_set_flag(parser)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``section.key -> value`` of the flags given on the command line (generated flags, then ``--set``)."""
    by_key = setting_by_key()
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith(DEST):
            info = by_key[dest[len(DEST):]]
            out[info.key] = flag_value(info, value)
    for text in getattr(args, "set_values", []) or []:
        key, value = parse_set(text, by_key)
        out[key] = value
    return out


def parse_set(text: str, by_key: dict[str, SettingInfo] | None = None) -> tuple[str, Any]:
    """``section.key=value`` -> (key, typed value); a :class:`ConfigError` naming an unknown key and
    the closest valid one, or a value of the wrong type."""
    by_key = by_key or setting_by_key()
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    if key not in by_key:
        raise ConfigError(f"--set: unknown key '{key}'{suggest(key, by_key)}")
    info = by_key[key]
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if info.is_list and isinstance(value, str) and info.sep:
        value = [v.strip() for v in value.split(info.sep) if v.strip()]
    if info.hint is str and not isinstance(value, str):
        value = raw  # --set data.tokenizer=gpt2 style text that TOML reads as something else
    return key, coerce(value, info.hint, f"--set {key}")


def config_from_args(stage: Stage, args: argparse.Namespace) -> StudyConfig:
    """The config a stage command's flags describe: the study TOML (``--config``, or the positional
    STUDY's ``study.toml`` for its own sections), then the flags, then ``--set``, validated as a
    TOML file is. Paths given on the command line are relative to the working directory."""
    cli = stage.cli or CommandLine()
    base, where = _base_config(stage, cli, args)
    cfg = with_settings(base, {**cli.fixed, **given_settings(args)}, where, cli.prepare)
    if not cfg.study.out and not base.source:
        out = next((f.name for f in cli.flags if f.key == "study.out"), "--out")
        raise ConfigError(f"grokscope {stage.name}: no study directory given: pass {out} STUDY"
                          + (" (or --config STUDY.toml)" if cli.config == "--config" else ""))
    cfg.options.force = bool(getattr(args, "force", False))
    cfg.options.progress = not getattr(args, "no_progress", False)
    return cfg


def with_settings(base: StudyConfig, given: dict[str, Any], where: str = "command line",
                  prepare: Callable[[dict[str, Any]], None] | None = None) -> StudyConfig:
    """``base`` with the settings ``given`` (``section.key -> value``; locations relative to the
    working directory), validated; ``prepare`` may adjust the settings dict first."""
    raw = base.to_dict()
    by_key = setting_by_key()
    for key, value in given.items():
        section, name = key.split(".")
        raw[section][name] = resolve_setting(by_key[key], value, None)  # relative to the cwd
    if prepare is not None:
        prepare(raw)
    cfg = config_from_dict(raw, where=where)
    cfg.source = base.source
    return cfg


def _base_config(stage: Stage, cli: CommandLine, args: argparse.Namespace) -> tuple[StudyConfig, str]:
    config = getattr(args, "config", None)
    if cli.config == "--config":
        return (load_config(config), f"{config} + command line") if config else (StudyConfig(), "command line")
    if cli.config == "study":
        study = getattr(args, DEST + "study.out")
        path = Path(config) if config else Study(study).config_path
        if not path.exists():
            if config:
                raise ConfigError(f"{path}: config file not found")
            return StudyConfig(), "command line"
        return _own_sections(stage, path), f"{path} + command line"
    return StudyConfig(), "command line"


def _own_sections(stage: Stage, path: Path) -> StudyConfig:
    """Only the stage's own sections of a study's TOML (the others are other stages' business)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = config_from_dict({s: raw[s] for s in stage.sections if s in raw}, where=str(path))
    cfg.source = str(path.resolve())
    return cfg
