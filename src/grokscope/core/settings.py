"""One definition per setting: its type (the annotation), default, help text and allowed values.

A config section is a dataclass whose fields are declared with :func:`setting`. The same
declaration is read by the TOML loader (:mod:`grokscope.core.config`: types, allowed values,
ranges), by the command line (every stage command's flags and ``--set section.key=value``,
:mod:`grokscope.core.flags`) and by the docs. Nothing else lists a setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grokscope.core.errors import ConfigError

# what a string setting holds, when it is a location: resolved against the config file's directory
# (paths) or kept as it is when it names a hub id (specs); see grokscope.core.paths
KINDS = ("", "path", "paths", "spec", "specs")


def setting(default: Any, help: str, *, choices: Iterable[str] = (), ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            kind: str = "", flag: str = "", negative: str = "", sep: str = "", onoff: bool = False,
            harmless: bool = False) -> Any:
    """A dataclass field for a config section.

    ``choices``: the allowed values (strings, or each item of a list). ``ge``/``gt``/``le``/``lt``:
    bounds of a number. ``kind``: "path"/"paths" (relative to the config file) or "spec"/"specs"
    (a path or a hub id). ``flag``: the command-line flag when it is not ``--name-with-dashes``;
    ``negative``: an extra flag that sets a boolean to false (``--no-hidden``); ``sep``: a list's
    items may also be given as one ``sep``-separated string on the command line; ``onoff``: a boolean
    is given as ``--flag on|off`` rather than ``--flag/--no-flag``. ``harmless``: the
    setting changes no result (device, workers, titles), so it may differ between runs of a study.
    """
    if kind not in KINDS:
        raise ValueError(f"setting kind {kind!r}; expected one of {KINDS}")
    meta = {"help": help, "choices": tuple(choices), "ge": ge, "gt": gt, "le": le, "lt": lt, "kind": kind,
            "flag": flag, "negative": negative, "sep": sep, "onoff": onoff, "harmless": harmless}
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class SettingInfo:
    """What :func:`setting` declared about one field, with its type."""

    section: str
    name: str
    hint: Any
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    kind: str = ""
    flag: str = ""
    negative: str = ""
    sep: str = ""
    onoff: bool = False
    harmless: bool = False

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.hint) is list

    @property
    def item_type(self) -> Any:
        return typing.get_args(self.hint)[0] if self.is_list else self.hint

    def bounds_text(self) -> str:
        """The allowed range in interval notation, e.g. ``[0, 1)`` or ``> 0``."""
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else ""
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else ""
        if lo and hi:
            return f"{lo}, {hi}"
        if lo:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if hi:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return ""


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def section_settings(cls: type, section: str) -> list[SettingInfo]:
    """Every field of the section dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        meta = dict(f.metadata)
        out.append(SettingInfo(section, f.name, hints[f.name], default, meta.pop("help", ""), **meta))
    return out


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (as TOML parsed it) as the type ``hint``; a :class:`ConfigError` naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {hint}, got {type(value).__name__} {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # a single string where a list is expected is a list of one
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [coerce(v, item, where) for v in value]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    expected = {int: "an integer", bool: "true or false", str: "a string"}
    if hint in expected:
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {expected[hint]}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")


def check_value(info: SettingInfo, value: Any, where: str) -> None:
    """Raise a :class:`ConfigError` when ``value`` is outside what ``info`` allows."""
    if info.choices:
        bad = [v for v in (value if info.is_list else [value]) if v not in info.choices]
        if bad and info.is_list:
            noun = info.name.removesuffix("s")
            raise ConfigError(f"{where}: [{info.section}] key '{info.name}' has unknown {noun}(s) "
                              f"{sorted(bad)}; expected some of {list(info.choices)}")
        if bad:
            raise ConfigError(f"{where}: [{info.section}] key '{info.name}' must be one of "
                              f"{sorted(info.choices)}, got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ok = ((info.ge is None or value >= info.ge) and (info.gt is None or value > info.gt)
          and (info.le is None or value <= info.le) and (info.lt is None or value < info.lt)
          and not (isinstance(value, float) and math.isnan(value)))
    if not ok:
        rng = info.bounds_text()
        if rng == "> 0":
            raise ConfigError(f"{where}: [{info.section}] key '{info.name}' must be positive, got {value!r}")
        raise ConfigError(f"{where}: [{info.section}] key '{info.name}' must be in {rng}, got {value!r}"
                          if "," in rng else
                          f"{where}: [{info.section}] key '{info.name}' must be {rng}, got {value!r}")


def suggest(key: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, else the list of options."""
    options = list(options)
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f"; expected one of {sorted(options)}"
