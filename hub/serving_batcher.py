"""Dynamic batching: requests that arrive close together share one model call.

Each request is submitted with a *key* (its generation options); only requests with equal keys are batched.
A group runs when it holds ``max_batch_size`` requests or when its oldest request has waited
``timeout_s``, whichever comes first. While the model is busy, requests queue up, so under load batches fill
without waiting. One worker thread makes all model calls, in order, so the model is never called concurrently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: Future
    arrived: float = field(default_factory=time.monotonic)


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request ran."""


class DynamicBatcher:
    """Groups submitted payloads by key and calls ``run_batch(key, payloads) -> results`` (one result per
    payload, in order) on its own thread; ``submit`` returns a future of the payload's result.

    Args:
        run_batch: the batched call; an exception fails every request of that batch (not the server).
        max_batch_size: most payloads per call (1 turns batching off).
        timeout_s: longest a request waits for others to join it.
    """

    def __init__(self, run_batch: Callable[[Hashable, list], list], max_batch_size: int = 8,
                 timeout_s: float = 0.02, name: str = "tag2text-batcher"):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be at least 0, got {timeout_s}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._sizes: Counter = Counter()
        self._by_key: Counter = Counter()
        self._requests = 0
        self._failed_batches = 0
        self._busy_seconds = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, payload) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queue.put(_Item(key, payload, future))
        return future

    def stats(self) -> dict:
        with self._lock:
            batches = sum(self._sizes.values())
            return {
                "batches": batches,
                "requests": self._requests,
                "batch_size_histogram": {str(size): count for size, count in sorted(self._sizes.items())},
                "largest_batch": max(self._sizes, default=0),
                "mean_batch_size": round(self._requests / batches, 3) if batches else 0.0,
                "batches_by_options": {str(key): count for key, count in self._by_key.items()},
                "failed_batches": self._failed_batches,
                "model_seconds": round(self._busy_seconds, 3),
                "queued": self._queue.qsize(),
                "max_batch_size": self.max_batch_size,
                "batch_timeout_ms": self.timeout_s * 1000,
            }

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop after the requests already queued; later submissions raise :class:`BatcherClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- worker thread ---------------------------------------------------------------------------------------

    def _work(self) -> None:
        pending: dict[Hashable, list[_Item]] = {}  # insertion order: the group with the oldest request first
        stopping = False
        while pending or not stopping:
            if not pending:
                item = self._queue.get()
                if item is _STOP:
                    stopping = True
                    continue
                pending.setdefault(item.key, []).append(item)
            key = self._collect(pending, stopping)
            if key is _STOP:
                stopping = True
                key = next(iter(pending))
            group = pending.pop(key)
            if len(group) > self.max_batch_size:
                pending[key] = group[self.max_batch_size :]
                group = group[: self.max_batch_size]
            self._run(key, group)

    def _collect(self, pending: dict, stopping: bool):
        """Take queued requests until a group is full or the oldest group's wait is over; that group's key."""
        while True:
            full = next((key for key, items in pending.items() if len(items) >= self.max_batch_size), None)
            if full is not None:
                return full
            oldest = next(iter(pending))
            remaining = pending[oldest][0].arrived + self.timeout_s - time.monotonic()
            if stopping or remaining <= 0:
                try:  # what is already queued joins without waiting
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return oldest
            else:
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return oldest
            if item is _STOP:
                return _STOP
            pending.setdefault(item.key, []).append(item)

    def _run(self, key, group: list[_Item]) -> None:
        live = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        try:
            results = self.run_batch(key, [item.payload for item in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} requests")
        except Exception as error:  # noqa: BLE001 - one failed batch must not stop the worker
            logger.exception("batch of %d (%s) failed", len(live), key)
            with self._lock:
                self._failed_batches += 1
            for item in live:
                item.future.set_exception(error)
            return
        finally:
            with self._lock:
                self._sizes[len(live)] += 1
                self._by_key[key] += 1
                self._requests += len(live)
                self._busy_seconds += time.monotonic() - started
        for item, result in zip(live, results):
            item.future.set_result(result)
