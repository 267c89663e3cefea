"""A background thread that keeps a few host batches ready ahead of the training loop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar('T')

_ITEM, _END, _ERROR = 'item', 'end', 'error'


class Prefetcher(Iterator[T], Generic[T]):
    """Iterates `iterable` on a daemon thread, holding up to `size` items ready.

    Items come out in order; an exception raised by the source is re-raised by `__next__`
    in the consumer's thread. `close()` (or leaving a ``with`` block) stops the thread;
    the source is never advanced more than `size` + 1 items past what was consumed.
    """

    def __init__(self, iterable: Iterable[T], size: int):
        if size < 1:
            raise ValueError(f'prefetch size must be at least 1, got {size}.')
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=self._fill, args=(iter(iterable),), name='prefetch', daemon=True
        )
        self._thread.start()

    def _put(self, entry: tuple[str, object]) -> bool:
        """Blocks until there is room or `close()` was called; False if closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, iterator: Iterator[T]) -> None:
        try:
            for item in iterator:
                if not self._put((_ITEM, item)):
                    return
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put((_ERROR, error))
        else:
            self._put((_END, None))

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stops the background thread (waiting for the item it is producing, if any)."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def prefetch(iterable: Iterable[T], size: int = 2) -> Prefetcher[T]:
    """`iterable`'s items, prepared `size` ahead on a background thread."""
    return Prefetcher(iterable, size)
