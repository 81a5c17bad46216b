"""One model, one generation at a time: a bounded queue of jobs run by one worker thread, whose events reach the
asyncio side through the event loop. A job whose client went away is cancelled: skipped if it has not started,
stopped at its next token (or between two decoded media) if it has."""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

_END = object()


class QueueFull(Exception):
    """The queue holds `max_waiting` jobs already."""


class Cancelled(Exception):
    """Raised inside a job's work when its client has gone."""


class Job:
    """A unit of work and its event channel. `work(job)` runs in the worker thread and yields events; the asyncio
    side reads them with `next_event()` (None after the last one). An exception in `work` arrives as the event."""

    _ids = itertools.count()

    def __init__(self, work: Callable[["Job"], Iterator[Any]], loop: asyncio.AbstractEventLoop,
                 cleanup: Callable[[], None] | None = None):
        self.id = next(self._ids)
        self.work = work
        self.cleanup = cleanup
        self.loop = loop
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self._events: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        """Raise Cancelled when the client has gone (called by the work between steps)."""
        if self.cancelled.is_set():
            raise Cancelled()

    def emit(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancel()

    async def next_event(self) -> Any:
        item = await self._events.get()
        return None if item is _END else item

    @property
    def waited(self) -> float:
        return (self.started_at or time.monotonic()) - self.enqueued_at


class GenerationQueue:
    """At most one running job and `max_waiting` waiting ones; `submit` raises QueueFull beyond that."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._waiting: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="nextgpt-generation", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (--max-queue {self.max_waiting})")
            self._waiting.append(job)
            self._cv.notify()
        return job

    def state(self) -> dict[str, int]:
        with self._cv:
            return {"running": int(self._running is not None), "waiting": len(self._waiting),
                    "max_queue": self.max_waiting}

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every job and stop the worker (waits for the running job's next cancellation point)."""
        with self._cv:
            self._closed = True
            jobs = list(self._waiting) + ([self._running] if self._running else [])
            self._cv.notify_all()
        for job in jobs:
            job.cancel()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running = job
            try:
                self._run(job)
            finally:
                with self._cv:
                    self._running = None

    @staticmethod
    def _run(job: Job) -> None:
        job.started_at = time.monotonic()
        try:
            if not job.cancelled.is_set():
                for item in job.work(job):
                    job.emit(item)
                    if job.cancelled.is_set():
                        break
        except Cancelled:
            logger.debug("job %d cancelled", job.id)
        except Exception as err:  # handed to the request, which answers it
            job.emit(err)
        finally:
            if job.cleanup is not None:
                try:
                    job.cleanup()
                except OSError as err:
                    logger.warning("cleanup of job %d failed: %s", job.id, err)
            job.finished.set()
            job.emit(_END)
