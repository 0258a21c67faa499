"""Dynamic batching: concurrent requests for one model share a forward pass.

    batcher = Batcher("adult", forward, BatchingConfig(max_batch_size=64, max_wait_ms=2))
    batcher.start()                                   # inside the running event loop
    with batcher.ticket() as ticket:                  # "a request for this model is coming"
        ...                                           # auth, metering (awaits)
        predictions = await ticket.submit(records)    # this request's slice of a batch
    await batcher.close()

One background task per model collects queued requests until the batch holds
`max_batch_size` records or `max_wait_ms` has passed since its first request, then runs
`forward(records) -> results` (one result per record, in order) on a dedicated one-thread
executor, so the event loop never runs model code and one model's passes never overlap.
While a pass runs, new requests queue up and form the next batch.

Waiting only pays when another request can still join: a ticket counts a request that
has started (body read, auth, metering) but not yet submitted its records. When no
ticket is outstanding the batch runs at once, so a lone client never waits `max_wait_ms`.

A request larger than `max_batch_size` runs alone, in pieces of at most `PIECE_RECORDS`
records (or `max_batch_size`, if larger): each piece goes to the back of the queue when
the one before it is done, so other requests for the model run between two pieces
instead of waiting for the whole of it (a 200,000-record request is seconds of model
time; the pieces give the same results, as each record's prediction depends only on
it). If a batch of several requests fails, each request is run again on its own, so one
bad request cannot fail the others. `enabled: false` runs each request alone on the
executor, in order (a large one in pieces as well).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from foundry.config.schema import BatchingConfig
from foundry.torch_threads import adopt_torch_threads

log = logging.getLogger("foundry.serve")

PIECE_RECORDS = 2048
"""Most records of a large request in one forward pass: tens of milliseconds of model
time for a tabular MLP, which is what a small request behind it waits at worst."""

Forward = Callable[[list[Any]], Sequence[Any]]
"""records → one result per record, in order. Runs on the batcher's worker thread."""


@dataclass
class _Job:
    records: list[Any]
    future: asyncio.Future = field(repr=False)


class Ticket:
    """A request on its way to the batcher; see the module docstring. Use as a context
    manager so a request that fails before submitting stops being waited for."""

    __slots__ = ("_batcher", "_open")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._open = True
        batcher._expected += 1

    async def submit(self, records: list[Any]) -> list[Any]:
        self._release()
        return await self._batcher.submit(records)

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._batcher._expected -= 1
            self._batcher._wake.set()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


class Batcher:
    """Per-model request queue + collector task + one-thread executor."""

    def __init__(
        self,
        name: str,
        forward: Forward,
        config: BatchingConfig | None = None,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config or BatchingConfig()
        self._forward = forward
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"foundry-{name}", initializer=adopt_torch_threads
        )
        self._queue: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._expected = 0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.forward_passes = 0
        """Forward passes run so far (one per batch)."""
        self.requests_served = 0
        """Requests answered so far (successfully or not; each piece of a large one)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the collector task on the running loop (idempotent)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            if self.config.enabled:
                self._task = self._loop.create_task(self._collect(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Stop collecting, fail what is still queued, release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError(f"model '{self.name}' is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ requests

    def ticket(self) -> Ticket:
        """Announce a request that will submit soon (see the module docstring)."""
        return Ticket(self)

    async def submit(self, records: list[Any]) -> list[Any]:
        """This request's results (one per record, in order), from some forward pass (a
        large request: from one pass per piece, see the module docstring)."""
        piece = max(PIECE_RECORDS, self.config.max_batch_size)
        if len(records) <= piece:
            return await self._submit(records)
        results: list[Any] = []
        for start in range(0, len(records), piece):
            results.extend(await self._submit(records[start:start + piece]))
        return results

    async def _submit(self, records: list[Any]) -> list[Any]:
        loop = self._loop or asyncio.get_running_loop()
        if not self.config.enabled:
            try:
                return list(await loop.run_in_executor(self._executor, self._run, records))
            finally:
                self.requests_served += 1
        if self._task is None:
            self.start()
        job = _Job(records, loop.create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    # ------------------------------------------------------------------ collector

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        max_size = self.config.max_batch_size
        max_wait = self.config.max_wait_ms / 1000.0
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            jobs = [self._queue.popleft()]
            size = len(jobs[0].records)
            deadline = loop.time() + max_wait
            while size < max_size:
                if self._queue:
                    if size + len(self._queue[0].records) > max_size:
                        break  # it opens the next batch
                    job = self._queue.popleft()
                    jobs.append(job)
                    size += len(job.records)
                    continue
                remaining = deadline - loop.time()
                if self._expected <= 0 or remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            await self._execute(jobs)

    async def _execute(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # a cancelled request needs nothing
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        records = jobs[0].records if len(jobs) == 1 else [r for j in jobs for r in j.records]
        try:
            results = await loop.run_in_executor(self._executor, self._run, records)
        except Exception as exc:
            if len(jobs) == 1:
                _resolve(jobs[0], exc=exc)
            else:
                log.warning("batch of %d requests for '%s' failed (%s); running them one by one",
                            len(jobs), self.name, exc)
                for job in jobs:
                    try:
                        _resolve(job, await loop.run_in_executor(self._executor, self._run,
                                                                 job.records))
                    except Exception as one:
                        _resolve(job, exc=one)
        else:
            start = 0
            for job in jobs:
                end = start + len(job.records)
                _resolve(job, results[start:end])
                start = end
        self.requests_served += len(jobs)

    def _run(self, records: list[Any]) -> Sequence[Any]:
        """Worker thread: one forward pass."""
        results = self._forward(records)
        if len(results) != len(records):
            raise RuntimeError(
                f"model '{self.name}' returned {len(results)} results for {len(records)} records"
            )
        self.forward_passes += 1
        if self._on_batch is not None:
            self._on_batch(len(records))
        return results


def _resolve(job: _Job, result: Any = None, *, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(list(result))
