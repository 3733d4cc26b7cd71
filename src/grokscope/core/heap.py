"""The cyclic garbage collector around a stage's heavy imports.

Importing torch, transformers and a model architecture leaves about a million long-lived
objects on the heap, and CPython's cyclic collector re-scans all of them on every full
collection: a ``grokscope score`` run of 2,000 pairs on a 4x256 model made 8 full collections
taking 0.9 s of its 9.5 s, nearly all of them during the imports. So the console script pauses
collection (:func:`pause`) for a stage that declares ``SETTLES_HEAP = True``, and that stage
settles once its libraries are in (``score``: ``load_model``; ``run`` and ``demo``:
:func:`settle_after` with the libraries of the stages about to run). What exists then is moved
to the permanent generation (``gc.freeze``, never scanned again) and collection resumes for
everything the stage allocates afterwards. Settling comes before any model weights exist, so a
checkpoint that is later dropped is still collected. Outside the console script (the library
API, tests) nothing is paused and settling does nothing.
"""
from __future__ import annotations

import gc
import importlib

_paused = False


def pause() -> None:
    """Stop cyclic collection until :func:`settle` or :func:`resume`."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def settle() -> None:
    """If :func:`pause` is in effect: freeze everything allocated so far and resume collection."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


def settle_after(*modules: str) -> None:
    """If :func:`pause` is in effect: import ``modules`` (what the coming work needs), then
    :func:`settle`. A module that cannot be imported is left for the work itself to report."""
    if not _paused:
        return
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    settle()


def resume() -> None:
    """If :func:`pause` is still in effect: resume collection, freezing nothing."""
    global _paused
    if _paused:
        gc.enable()
        _paused = False


def is_paused() -> bool:
    return _paused
