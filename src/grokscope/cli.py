"""The ``grokscope`` command: one subcommand per pipeline stage, plus ``run`` and ``demo``.

The stages come from :mod:`grokscope.pipeline.registry`; a stage command's flags are generated
from its config section (:mod:`grokscope.core.flags`), and the command builds a study config and
calls the stage's ``run(cfg, study)``, as ``grokscope run`` does. Only the module of the chosen
subcommand is imported, so ``grokscope --help`` is instant and heavy libraries (torch, dask,
matplotlib) load only when a stage needs them. Input problems raise
:class:`~grokscope.core.errors.GrokscopeError`; they are printed without a traceback and exit 2.
"""
from __future__ import annotations

import argparse
import atexit
import errno
import gc
import importlib
import os
import sys
import threading

from grokscope import __version__
from grokscope.core import heap
from grokscope.core.errors import GrokscopeError
from grokscope.pipeline.registry import ENTRIES, load_stage

# commands that are not stages: name -> (module with add_arguments(parser) and run(args), help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("grokscope.pipeline.run", "run every stage a study still lacks, from a study TOML"),
    "demo": ("grokscope.pipeline.demo", "offline controlled-exposure testbed: generate, train, analyse, report"),
    "pool": ("grokscope.pipeline.pool", "pool the verdicts of several analysed runs of one recipe (seeds), with "
                                        "their spread"),
}
STAGE_COMMANDS: dict[str, str] = {e.name: e.help for e in ENTRIES if e.command}


# a study directory that cannot be written: one message naming the path, exit 2 (temporary files are
# removed where they are made: store.atomic_path, score's arrays; finished outputs are never touched)
DISK_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})


def disk_error_text(e: OSError) -> str:
    where = e.filename if e.filename is not None else "the study directory"
    if e.filename2 is not None:
        where = f"{e.filename2} (from {e.filename})"
    from grokscope.core.errors import disk_message

    return disk_message(where, e.strerror or os.strerror(e.errno or 0), e.errno)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grokscope",
        description="Trace when a language model learns grammar during pre-training, and whether "
        "it first fits phrases it has seen (proxy-train) before generalising to unseen ones (proxy-val).",
    )
    parser.add_argument("--version", action="version", version=f"grokscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {**STAGE_COMMANDS, **{name: help_text for name, (_, help_text) in COMMANDS.items()}}
    for name, help_text in helps.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        if name in STAGE_COMMANDS:
            from grokscope.core.flags import add_stage_arguments

            add_stage_arguments(p, load_stage(name))
        else:
            importlib.import_module(COMMANDS[name][0]).add_arguments(p)
    return parser


def _run_stage_command(name: str, args: argparse.Namespace) -> int:
    from grokscope.core.flags import config_from_args
    from grokscope.core.locks import stage_lock
    from grokscope.core.store import Study

    stage = load_stage(name)
    cfg = config_from_args(stage, args).resolved()
    study = Study.for_config(cfg)
    with stage_lock(study.root, name):
        stage.run(cfg, study)
    return 0


def main(argv: list[str] | None = None, pause_gc: bool = False) -> int:
    """Run one subcommand; returns its exit code. ``pause_gc`` (the console script): for a stage
    that settles the heap itself (``Stage.settles_heap``, or ``SETTLES_HEAP = True`` in the module of
    ``run``/``demo``), cyclic garbage collection is paused until the stage has imported its
    libraries (see :mod:`grokscope.core.heap`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in STAGE_COMMANDS and command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not sys.stderr.isatty():  # a log file: a progress line every 30 s, not a \r-bar every 0.1 s
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    if args.command in STAGE_COMMANDS:
        settles = load_stage(args.command).settles_heap
    else:
        module = importlib.import_module(COMMANDS[args.command][0])
        settles = getattr(module, "SETTLES_HEAP", False)
    if pause_gc and settles:
        heap.pause()
    try:
        if args.command in STAGE_COMMANDS:
            return _run_stage_command(args.command, args)
        return int(module.run(args) or 0)
    except GrokscopeError as e:
        print(f"grokscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"grokscope {args.command}: error: {disk_error_text(e)}", file=sys.stderr)
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
