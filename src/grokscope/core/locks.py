"""One process per stage per study: a lock file ``STUDY/.lock-<stage>`` held with ``fcntl.flock``.

Two ``grokscope score`` runs on one study (two terminals, a job array) would otherwise race on the
same temporary files and could leave a score table from one run beside arrays from the other. The
lock file records the holder (pid, host, start time); the lock itself is the kernel's ``flock``,
which the kernel releases when the holder dies, so a lock left by a SIGKILLed process is stale by
construction and the next run takes it over (saying whose it was). A live holder is an error
naming it (exit 2).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from grokscope.core.errors import GrokscopeError


class LockedError(GrokscopeError):
    """Another live process holds the stage's lock on this study."""


def lock_path(root: str | os.PathLike[str], stage: str) -> Path:
    return Path(root) / f".lock-{stage}"


def _holder(fd: int) -> dict[str, object]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        info = json.loads(raw) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict[str, object]) -> str:
    if not info:
        return "a process that left no details"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started))) if isinstance(started, (int, float)) \
        else "?"
    return f"pid {info.get('pid')} on {info.get('host')}, started {when}"


def _open_locked(path: Path, stage: str, root: Path) -> int:
    """An fd of ``path`` holding its flock; retried when the file was replaced while we waited (a holder
    removes it on release, so a lock on the old inode would not exclude a newcomer on the new one)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _describe(_holder(fd))
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise LockedError(f"{root}: another `grokscope {stage}` is running on this study ({holder}, "
                              f"lock {path}); wait for it to finish or use another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def stage_lock(root: str | os.PathLike[str], stage: str) -> Iterator[Path]:
    """Hold ``root/.lock-<stage>`` while the block runs; :class:`LockedError` when a live process has it.
    On release the lock file is removed (and ``root`` too when this call made it and it stayed empty)."""
    root = Path(root)
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = lock_path(root, stage)
    fd = _open_locked(path, stage, root)
    try:
        before = _holder(fd)
        if before and before.get("pid") != os.getpid():
            print(f"grokscope {stage}: taking over a stale lock of {_describe(before)} (that process has ended)",
                  file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "stage": stage}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)  # released cleanly: no stale holder to report next time
            fcntl.flock(fd, fcntl.LOCK_UN)
            if made:
                with contextlib.suppress(OSError):
                    root.rmdir()  # only if empty: a command that failed before writing leaves no directory
    finally:
        os.close(fd)
