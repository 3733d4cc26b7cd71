"""Per-checkpoint work of the analysis spread over the machine's cores with threads (joblib).

The analysis runs BLAS single-threaded (:func:`grokscope.analyse.stage.analyse_study`); the
probes' and concept measures' matrix work (numpy, scipy, scikit-learn's Newton solver) releases
the GIL, so one thread per core runs checkpoints side by side. Each checkpoint's randomness comes
from its own generator (``seed``, checkpoint index), so the tables do not depend on the number
of threads or on the order in which checkpoints finish."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def map_checkpoints(fn: Callable[[T], R], items: Sequence[T], n_jobs: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, in order, on ``n_jobs`` threads (default: the usable cores)."""
    from joblib import Parallel, delayed

    jobs = min(n_jobs or usable_cores(), max(1, len(items)))
    if jobs == 1:
        return [fn(x) for x in items]
    return list(Parallel(n_jobs=jobs, backend="threading")(delayed(fn)(x) for x in items))
