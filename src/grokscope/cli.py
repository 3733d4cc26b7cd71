"""The ``grokscope`` command: one subcommand per pipeline stage.

Each stage module defines ``add_arguments(parser)`` and ``run(args) -> int``. Only the module
of the chosen subcommand is imported, so ``grokscope --help`` is instant and heavy libraries
(torch, dask, matplotlib) load only when a stage needs them. Input problems raise
:class:`~grokscope.core.errors.GrokscopeError`; they are printed without a traceback and exit 2.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import sys
import threading

from grokscope import __version__
from grokscope.core import heap
from grokscope.core.errors import GrokscopeError

# name -> (module, one-line help). Order = pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("grokscope.stream.stage", "tokenize a corpus into a packed token stream in training order"),
    "train": ("grokscope.train.stage", "pre-train a GPT-2-style model on a token stream, with log-spaced checkpoints"),
    "phrases": ("grokscope.phrases.stage", "find the critical phrase of every minimal pair"),
    "exposure": ("grokscope.exposure.stage", "search the token stream, in training order, for every critical phrase"),
    "score": ("grokscope.score.stage", "score every checkpoint on every minimal pair (+ hidden states, attention)"),
    "analyse": ("grokscope.analyse.stage", "proxy splits, fit/generalisation steps and delay, probes, heads"),
    "report": ("grokscope.report.stage", "write the HTML report, figures and summary table of a study"),
    "run": ("grokscope.pipeline.run", "run every stage a study still lacks, from a study TOML"),
    "demo": ("grokscope.pipeline.demo", "offline controlled-exposure testbed: generate, train, analyse, report"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grokscope",
        description="Trace when a language model learns grammar during pre-training, and whether "
        "it first fits phrases it has seen (proxy-train) before generalising to unseen ones (proxy-val).",
    )
    parser.add_argument("--version", action="version", version=f"grokscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None, pause_gc: bool = False) -> int:
    """Run one subcommand; returns its exit code. ``pause_gc`` (the console script): for a stage
    module that declares ``SETTLES_HEAP = True``, cyclic garbage collection is paused until the
    stage has imported its libraries (see :mod:`grokscope.core.heap`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not sys.stderr.isatty():  # a log file: a progress line every 30 s, not a \r-bar every 0.1 s
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    module = importlib.import_module(COMMANDS[args.command][0])
    if pause_gc and getattr(module, "SETTLES_HEAP", False):
        heap.pause()
    try:
        return int(module.run(args) or 0)
    except GrokscopeError as e:
        print(f"grokscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grokscope {args.command}: interrupted; finished work is kept, re-run to resume", file=sys.stderr)
        return 130
    finally:
        heap.resume()


def entry() -> None:
    """The console script: run :func:`main`, then leave without the interpreter's teardown.

    After torch and transformers are imported the heap holds about a million objects: the final
    garbage collection costs about a second per command, and freeing every module's objects
    another 0.1 s. All results are written and closed by the time :func:`main` returns, so the
    collection is skipped (``gc.freeze``) and, unless a non-daemon thread is still running, the
    process ends with ``os._exit`` after the atexit handlers (logging, tqdm, temporary files) have
    run and the standard streams are flushed (daemon threads, such as tqdm's monitor, would be
    stopped by a normal exit too). A non-daemon thread gets the normal exit, which waits for it.
    Stages that declare ``SETTLES_HEAP`` run with collection paused until their libraries are
    imported (:mod:`grokscope.core.heap`)."""
    code = main(pause_gc=True)
    gc.freeze()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say to it
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
