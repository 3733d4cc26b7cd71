"""Checkpoints loaded one ahead: while checkpoint ``i`` is scored, a background thread reads
checkpoint ``i + 1`` (tokenizer, weights, the tokenizer/embedding check), so a study of many
checkpoints pays loading only once, at the start.

Loading is mostly file reads and tensor copies, which release the GIL; the scoring thread keeps
its torch threads. At most ``ahead + 1`` models are in memory at once. A load that fails
(corrupt weights, a tokenizer that does not fit) surfaces when its checkpoint's turn comes, as
the same error a sequential load would give, and the other checkpoints are still scored.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Ahead(Generic[T, R]):
    """``for item, get in Ahead(items, load, ahead)``: ``get()`` returns ``load(item)``, started
    up to ``ahead`` items early in a background thread (``ahead = 0``: loaded on the spot)."""

    def __init__(self, items: Iterable[T], load: Callable[[T], R], ahead: int = 1) -> None:
        self._items = list(items)
        self._load = load
        self._ahead = max(int(ahead), 0)

    def __iter__(self) -> Iterator[tuple[T, Callable[[], R]]]:
        if not self._ahead:
            for item in self._items:
                yield item, (lambda it=item: self._load(it))  # type: ignore[misc]
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grokscope-load") as pool:
            queue: deque[Future[R]] = deque()
            nxt = 0
            try:
                for item in self._items:
                    while nxt < len(self._items) and len(queue) <= self._ahead:
                        queue.append(pool.submit(self._load, self._items[nxt]))
                        nxt += 1
                    future = queue.popleft()
                    yield item, future.result
                    del future  # the model goes with its checkpoint's turn
            finally:
                for f in queue:
                    f.cancel()
