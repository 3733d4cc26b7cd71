"""The stage contract: what every stage package exports as ``STAGE``.

A stage reads and writes files of one study directory and runs as ``run(cfg, study)`` with a
resolved :class:`~grokscope.core.config.StudyConfig`, whether it is started by its own command
(``grokscope score ...``, flags generated from its config section) or by ``grokscope run``.
The registry (:mod:`grokscope.pipeline.registry`) lists the stages in pipeline order.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.core.config import StudyConfig
    from grokscope.core.store import Study


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a setting outside the stage's own section, or under another name.

    ``key`` is ``section.name``; ``name`` the flag (``--benchmark``) or, with ``positional``, the
    argument's name (``study``); ``help`` replaces the setting's own help text."""

    key: str
    name: str = ""
    help: str = ""
    required: bool = False
    positional: bool = False


@dataclass(frozen=True)
class CommandLine:
    """What a stage's own command offers besides the flags of its own section.

    ``flags``: settings of other sections (or own settings under another name); ``exclude``: own
    settings not offered as flags (still settable with ``--set``); ``fixed``: values the command
    always sets (``train.enabled = true``); ``config``: ``"--config"`` (a study TOML gives the
    defaults) or ``"study"`` (the positional STUDY's ``study.toml`` gives the defaults of the
    stage's own sections); ``force``/``progress``: offer ``--force`` and a flag that turns progress
    bars off (``--quiet`` or ``--no-progress``); ``prepare``: adjusts the settings dict the flags
    built before it is validated (stage-specific defaults, such as exposure writing next to
    ``--phrases``)."""

    flags: tuple[Flag, ...] = ()
    exclude: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    config: str = ""
    force: bool = False
    progress: str = ""
    prepare: Callable[[dict[str, Any]], None] | None = None


@dataclass
class Stage:
    """One pipeline stage.

    ``sections``: the config sections whose settings change this stage's results (the first is its
    own: its command's flags come from it); ``outputs``: the :class:`~grokscope.core.store.Study`
    paths it writes (what ``--reset`` moves aside); ``inputs``: the study paths it reads (docs,
    and what its command checks for); ``done``: whether its output is complete; ``wanted``: ""
    if a study asks for the stage, else why it is skipped; ``libraries``: heavy modules it imports,
    loaded before the first stage of ``grokscope run`` (:mod:`grokscope.core.heap`);
    ``settles_heap``: the stage calls ``heap.settle()`` itself once its libraries are in, so the
    console script may pause garbage collection until then."""

    name: str
    sections: tuple[str, ...]
    run: Callable[[StudyConfig, Study], None]
    outputs: Callable[[Study], list[Path]]
    done: Callable[[Study], bool]
    inputs: tuple[str, ...] = ()
    wanted: Callable[[StudyConfig], str] = lambda cfg: ""
    libraries: tuple[str, ...] = ()
    settles_heap: bool = False
    cli: CommandLine | None = None

    @property
    def section(self) -> str:
        return self.sections[0]

    def run_config(self, cfg: StudyConfig, study: Study) -> None:
        """Run the stage on a config as loaded (its paths relative to its file): the Python API of
        every stage module (``run_stage(cfg, study)``)."""
        self.run(cfg.resolved(), study)
