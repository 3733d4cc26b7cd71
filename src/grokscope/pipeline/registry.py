"""The stages of a study, in pipeline order: the one list the command line and ``grokscope run`` read.

Each entry names the module whose ``STAGE`` (a :class:`~grokscope.core.stage.Stage`) describes
the stage; modules are imported only when a stage is used, so ``grokscope --help`` stays
instant. Adding a stage: write its package with a ``stage.py`` exporting ``STAGE``, then add one
line here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.core.stage import Stage


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    help: str
    command: bool = True  # has a command of its own (`grokscope NAME`)


ENTRIES: tuple[Entry, ...] = (
    Entry("testbed", "grokscope.pipeline.testbed", "generate the controlled-exposure testbed corpus and pairs",
          command=False),
    Entry("prepare", "grokscope.stream.stage", "tokenize a corpus into a packed token stream in training order"),
    Entry("train", "grokscope.train.stage", "pre-train a GPT-2-style model on a token stream, with log-spaced "
                                            "checkpoints"),
    Entry("phrases", "grokscope.phrases.stage", "find the critical phrase of every minimal pair"),
    Entry("exposure", "grokscope.exposure.stage", "search the token stream, in training order, for every critical "
                                                  "phrase"),
    Entry("score", "grokscope.score.stage", "score every checkpoint on every minimal pair (+ hidden states, "
                                            "attention)"),
    Entry("analyse", "grokscope.analyse.stage", "proxy splits, fit/generalisation steps and delay, probes, heads"),
    Entry("report", "grokscope.report.stage", "write the HTML report, figures and summary table of a study"),
)

STAGES: tuple[str, ...] = tuple(e.name for e in ENTRIES)


def order(withhold: bool = False) -> tuple[str, ...]:
    """The stages in the order ``grokscope run`` takes them. A stream that withholds phrases
    (``[data] withhold`` > 0) is cut from the phrases table, so ``phrases`` (which reads only the
    benchmark) moves before ``prepare``; otherwise :data:`STAGES`."""
    if not withhold:
        return STAGES
    rest = [s for s in STAGES if s != "phrases"]
    return (*rest[:rest.index("prepare")], "phrases", *rest[rest.index("prepare"):])


def entry(name: str) -> Entry:
    for e in ENTRIES:
        if e.name == name:
            return e
    raise KeyError(name)


def load_stage(name: str) -> Stage:
    """The ``STAGE`` record of a stage (imports its module)."""
    stage: Stage = importlib.import_module(entry(name).module).STAGE
    return stage
