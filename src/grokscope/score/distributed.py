"""Scoring on Dask: one task per checkpoint, on a ``LocalCluster`` or any scheduler by address.

The client (the ``grokscope score`` process, which holds the study's lock) decides what is left
to score with the single-process rules (:func:`grokscope.score.stage._already_scored`) and submits
only those checkpoints. Each task loads its checkpoint in a worker, scores it with the
single-process code (:func:`grokscope.score.stage._score_one`) and writes that checkpoint's
arrays and table itself, atomically, the table last; the client writes nothing. So a finished
checkpoint is never scored twice, a re-run after an interruption scores only the missing ones,
and the files are those of a single-process run (the same code, the same per-checkpoint inputs).

A worker killed mid-task (SIGKILL, out of memory) leaves at most a ``.partial`` file with its
pid; the scheduler reruns the task on another (or the restarted) worker, which writes the files
from scratch. A checkpoint whose task kills ``distributed.scheduler.allowed-failures`` workers
is reported as failed, the others are still scored.

Devices: on a ``LocalCluster`` of N single-threaded worker processes each task uses
``cpu_count // N`` torch threads (``[score] threads`` overrides); on a scheduler, the CPUs of a
host are split between the task slots of the workers on it. With ``device`` cuda (or auto) and
several GPUs visible to a worker process, worker k uses ``cuda:{k mod GPUs}`` (a dask-cuda
worker, which sees one GPU, uses its own). The pairs and settings travel once, scattered to
every worker; each worker encodes the pairs once per tokenizer.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from grokscope.core.errors import ConfigError, GrokscopeError

if TYPE_CHECKING:  # pragma: no cover
    from grokscope.core.checkpoints import Checkpoint
    from grokscope.core.store import Study
    from grokscope.score.stage import CheckpointSummary, ScoreJob

Load = Callable[..., Any]
ScoreOne = Callable[..., Any]

_WORKER_CACHE: dict[str, Any] = {"job": None, "encoded": {}}


def connect(scheduler: str, timeout: float, where: str = "[score] scheduler") -> Any:
    """A ``dask.distributed.Client`` of the scheduler at ``scheduler``; a one-line
    :class:`ConfigError` (exit 2) when the address is malformed or nothing answers within
    ``timeout`` seconds."""
    from dask.distributed import Client

    from grokscope.exposure.shards import check_scheduler_address

    check_scheduler_address(scheduler)  # not [protocol://]host:port: one message before any connection
    try:
        return Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"{where} = {scheduler!r}: could not connect to a Dask scheduler within {timeout:g} s "
                          f"({detail}); check the address (tcp://host:port) and that the scheduler is running, "
                          "or leave it empty to score on this machine") from None


def local_cluster(workers: int) -> Any:
    """``workers`` single-threaded worker processes on this machine (no dashboard)."""
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR)


def threads_per_task(client: Any, requested: int) -> dict[str, int]:
    """Torch threads for a task on each worker (by address): ``requested`` when given, otherwise
    the host's CPUs (as the workers report them, else this machine's) split between the task
    slots of all the workers on that host."""
    info = _workers(client)
    if requested > 0:
        return dict.fromkeys(info, requested)
    slots: dict[str, int] = {}
    for w in info.values():
        slots[w["host"]] = slots.get(w["host"], 0) + max(1, int(w.get("nthreads", 1)))
    cpus = client.run(os.cpu_count)  # the workers' own hosts
    return {addr: max(1, int(cpus.get(addr) or os.cpu_count() or 1) // slots[w["host"]]) for addr, w in info.items()}


def _workers(client: Any) -> dict[str, Any]:
    """Every worker's info (recent versions list only the first 5 unless asked for all)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return dict(client.scheduler_info(n_workers=-1)["workers"])
    return dict(client.scheduler_info()["workers"])


def worker_device(device: str, index: int) -> str:
    """The device of the ``index``-th worker: one GPU each when this process sees several."""
    from grokscope.core.devices import resolve_device

    resolved = resolve_device(device, "[score] device")
    if resolved == "cuda":
        import torch

        n = torch.cuda.device_count()
        return f"cuda:{index % n}" if n > 1 else "cuda"
    return resolved


def _worker_index() -> int:
    """This worker's number (a LocalCluster names its workers 0..N-1; others count as 0)."""
    from dask.distributed import get_worker

    try:
        return int(get_worker().name)
    except (ValueError, TypeError):
        return 0


def _task(load: Load, score_one: ScoreOne, job: ScoreJob, root: str, ckpt: Checkpoint,
          threads: dict[str, int]) -> tuple[Any, GrokscopeError | None]:
    """Score one checkpoint in a worker: ``(summary, None)``, or ``(None, error)`` for an input
    error (a bad checkpoint is reported, not retried; the error keeps its type, so a full disk
    stops the run as in one process)."""
    import time

    import torch
    from dask.distributed import get_worker

    from grokscope.core.store import Study

    n = threads.get(get_worker().address, 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if _WORKER_CACHE["job"] is not job:  # the encoded pairs of one job (scattered once), per tokenizer
        _WORKER_CACHE.update(job=job, encoded={})
    try:
        device = worker_device(job.device, _worker_index())
        t0 = time.perf_counter()
        return score_one(job, Study(root), ckpt, load(job, ckpt, device), _WORKER_CACHE["encoded"], t0), None
    except GrokscopeError as e:
        return None, e


def score_on_dask(job: ScoreJob, study: Study, todo: list[tuple[int, Checkpoint]], errors: list[str],
                  load: Load, score_one: ScoreOne, failed: Callable[..., CheckpointSummary]
                  ) -> dict[int, CheckpointSummary]:
    """Score the ``todo`` checkpoints as Dask tasks (``job.scheduler``, else a LocalCluster of
    ``job.workers``); their summaries by index. ``load``/``score_one``/``failed``: the stage's own
    single-process functions, run unchanged in the workers."""
    if not todo:
        return {}
    from grokscope.core import heap

    heap.settle()  # the client never loads a model (where a single-process run settles): collect from here on
    own_cluster = None
    if job.scheduler:
        client = connect(job.scheduler, job.scheduler_timeout)
    else:
        if job.device == "cuda":  # the workers see this machine's GPUs: one message now, not one per checkpoint
            from grokscope.core.devices import resolve_device

            resolve_device(job.device, "[score] device")
        own_cluster = local_cluster(job.workers)
        from dask.distributed import Client

        client = Client(own_cluster, set_as_default=False)
    try:
        return _run(client, job, study, todo, errors, load, score_one, failed)
    finally:
        client.close()
        if own_cluster is not None:
            own_cluster.close()


def _run(client: Any, job: ScoreJob, study: Study, todo: list[tuple[int, Checkpoint]], errors: list[str],
         load: Load, score_one: ScoreOne, failed: Callable[..., CheckpointSummary]) -> dict[int, CheckpointSummary]:
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    shipped = replace(job, options=replace(job.options, progress=False), checkpoints=[])
    job_f = client.scatter(shipped, broadcast=True, hash=False)
    threads = threads_per_task(client, job.threads)
    run_id = uuid.uuid4().hex[:8]
    futures = {client.submit(_task, load, score_one, job_f, str(study.root), ckpt, threads, pure=False,
                             key=f"score-step-{ckpt.step}-{run_id}-{i}"): (i, ckpt) for i, ckpt in todo}
    done: dict[int, CheckpointSummary] = {}
    failures: list[tuple[int, GrokscopeError]] = []
    with tqdm(total=len(todo), unit="checkpoint", desc="score (dask)", disable=not job.options.progress,
              file=sys.stderr) as bar:
        for fut in as_completed(futures, loop=client.loop):
            i, ckpt = futures[fut]
            try:
                summary, error = fut.result()
            except Exception as e:  # noqa: BLE001 - KilledWorker and the like: this checkpoint failed, not the run
                summary, error = None, GrokscopeError(f"its Dask task failed: {type(e).__name__}: "
                                                      f"{' '.join(str(e).split())}")
            if summary is None:
                failures.append((i, error))
            else:
                done[i] = summary
            bar.update(1)
    for i, error in sorted(failures, key=lambda f: f[0]):  # in checkpoint order, as one process reports them
        ckpt = next(c for k, c in todo if k == i)
        done[i] = failed(ckpt, error, errors)
    return done
