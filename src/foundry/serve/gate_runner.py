"""Admissions in groups, on the event loop when that cannot block, else on the gate's
thread; every other gate call on that thread.

    runner = GateRunner(gate)
    admission = await runner.admit(AdmitRequest(authorization, "adult", 1, request_id))
    records = await runner.call(gate.list_keys)        # any other gate call
    await runner.close()

Every admission is a write transaction, and one commit per request would cost more than
the admission itself. Group commit: the requests that ask for admission during one turn
of the event loop are admitted together, in one transaction, on the next turn
(`Gate.try_admit_many`). Nothing waits to fill a group: a lone request is a group of one.

On SQLite that transaction runs on the event loop itself (~10 µs per request plus one
commit): handing each group to a thread and back cost more than the work, in CPU and in
latency. It never blocks the loop: it is attempted only when every key is in the gate's
authentication cache, without waiting for the write lock (busy timeout 0), and without
checkpointing the WAL on commit. When it cannot go at once (a key to read from the
database, another process or thread holding the write lock), the group goes to the gate's
thread instead, which waits like any writer (`Gate.admit_many`); a checkpoint job runs on
that thread every CHECKPOINT_S while the loop writes.

The thread also groups: while it admits, newly queued requests wait, and the next group
takes all of them (up to `max_group`). SQLite has one write lock per database, and threads
of one process queuing on it sleep in SQLite's busy handler (1, 2, 5, 10... ms), so on
SQLite the runner has one thread and every gate call of the process runs there in turn.
A server database (PostgreSQL) locks per key row, so there groups run in parallel on
several threads, and never on the loop (every statement is a network round trip): each
loop turn's requests go to the threads together, and a thread takes what is queued, up
to PG_MAX_GROUP, as one transaction. That transaction first locks all its keys' rows in
id order (`Gate._admit_group`), so groups of different threads and processes that share
keys wait for each other instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from foundry.serve.errors import ApiError
from foundry.serve.gate_api import Admission, AdmitRequest

log = logging.getLogger("foundry.serve")
T = TypeVar("T")

MAX_GROUP = 256
"""Most admissions in one transaction (the write lock is held ~10 µs per admission)."""

PG_MAX_GROUP = 64
"""Most admissions in one PostgreSQL transaction: its row locks are held for ~2 round
trips per admission, and the other threads' groups on the same keys wait for them."""

CHECKPOINT_S = 1.0
"""Seconds between WAL checkpoints (on the gate's thread) while the loop admits."""

_Pending = tuple[AdmitRequest, asyncio.Future]


class GateRunner:
    """Runs a Gate's calls on its own thread(s); see the module docstring."""

    def __init__(self, gate: Any, *, threads: int | None = None,
                 max_group: int | None = None, inline: bool | None = None) -> None:
        sqlite = getattr(getattr(gate, "store", None), "is_sqlite", True)
        self.gate = gate
        self.threads = threads or (1 if sqlite else 8)
        self.max_group = max_group or (MAX_GROUP if sqlite else PG_MAX_GROUP)
        self.inline = sqlite if inline is None else inline
        """Try each group on the event loop first (see the module docstring)."""
        self._turn: list[_Pending] = []
        """Requests of this turn of the loop, admitted together on the next."""
        self._checkpoint_due = time.monotonic() + CHECKPOINT_S
        self._checkpointing = False
        self._closed = False
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="foundry-gate")
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._draining = 0
        """Drain jobs submitted or running (at most `threads`)."""
        self.groups = 0
        """Admission transactions run so far (for tests and metrics)."""
        self.inline_groups = 0
        """Of those, the ones run on the event loop."""

    async def admit(self, request: AdmitRequest, *, alone: bool = False) -> Admission:
        """`Gate.admit_many` for this request, in whatever group it joins; raises the
        ApiError that refuses it. `alone`: the caller knows no other request is under
        way, so none could join a group: admit it now rather than on the next turn."""
        if self._closed:
            raise _shutting_down()
        if alone and self.inline and not self._turn:
            outcomes = self.gate.try_admit_many([request])
            if outcomes is not None:
                self.groups += 1
                self.inline_groups += 1
                if isinstance(outcomes[0], BaseException):
                    raise outcomes[0]
                return outcomes[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if alone and not self.inline and not self._turn:
            self._to_thread(loop, [(request, future)])
        else:
            if not self._turn:
                loop.call_soon(self._admit_turn, loop)
            self._turn.append((request, future))
        return await future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the gate's thread(s), in turn with the admissions."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    async def close(self) -> None:
        """Finish what was submitted, then release the thread(s); later admissions are
        refused with 503."""
        self._closed = True
        if self._turn:  # requests of this turn: admit them, as they arrived before
            self._admit_turn(asyncio.get_running_loop())
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # ------------------------------------------------------------------ the loop

    def _admit_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Event loop: admit this turn's requests in one transaction if that can be done
        without waiting, else hand them to the thread(s), together."""
        turn, self._turn = self._turn, []
        turn = [pending for pending in turn if not pending[1].done()]
        if not self.inline:
            if turn:
                self._to_thread(loop, turn)
            return
        for start in range(0, len(turn), self.max_group):
            group = turn[start:start + self.max_group]
            try:
                outcomes = self.gate.try_admit_many([request for request, _ in group])
            except Exception as exc:  # try_admit_many answers per request; this is a bug
                log.exception("admitting %d requests failed", len(group))
                outcomes = [exc] * len(group)
            if outcomes is None:
                self._to_thread(loop, group)
                continue
            self.groups += 1
            self.inline_groups += 1
            _deliver(group, outcomes)
        if self.inline_groups and time.monotonic() >= self._checkpoint_due:
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self._checkpointing:
            return
        self._checkpointing = True

        def done(_: Any) -> None:
            self._checkpointing = False
            self._checkpoint_due = time.monotonic() + CHECKPOINT_S

        try:
            self._executor.submit(self._run_checkpoint).add_done_callback(done)
        except RuntimeError:  # shut down
            self._checkpointing = False

    def _run_checkpoint(self) -> None:
        try:
            self.gate.checkpoint()
        except Exception:
            log.warning("WAL checkpoint failed; will retry", exc_info=True)

    # ------------------------------------------------------------------ the thread

    def _to_thread(self, loop: asyncio.AbstractEventLoop, pending: list[_Pending]) -> None:
        with self._lock:
            self._queue.extend(pending)
            # A drain job per queued group, up to one per thread (SQLite: one).
            groups = -(-len(self._queue) // self.max_group)
            start = max(0, min(self.threads, groups) - self._draining)
            self._draining += start
        for _ in range(start):
            self._submit(loop)

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._executor.submit(self._drain, loop)
        except RuntimeError:  # shut down: nothing will admit what is queued
            with self._lock:
                self._draining -= 1
                if self._draining:
                    return
                left = list(self._queue)
                self._queue.clear()
            _post(loop, left, [_shutting_down()] * len(left))

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """One group: take what is queued, admit it, hand the outcomes to the loop. More
        queued: submit the next group behind the executor's other work, so `call`s are
        never starved by a steady stream of admissions."""
        with self._lock:
            n = min(len(self._queue), self.max_group)
            group = [self._queue.popleft() for _ in range(n)]
        if group:
            try:
                outcomes: list[Any] = self.gate.admit_many([request for request, _ in group])
            except Exception as exc:  # admit_many answers per request; this is a bug
                log.exception("admitting %d requests failed", len(group))
                outcomes = [exc] * len(group)
            _post(loop, group, outcomes)
        with self._lock:
            self.groups += bool(group)  # under the lock: several threads drain
            again = bool(self._queue)
            if not again:
                self._draining -= 1
        if again:
            self._submit(loop)


def _shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the server is shutting down; retry the request")


def _post(loop: asyncio.AbstractEventLoop, group: list[_Pending], outcomes: list[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: no one is waiting any more
        loop.call_soon_threadsafe(_deliver, group, outcomes)


def _deliver(group: list[_Pending], outcomes: list[Any]) -> None:
    """Event loop: resolve each request's future with its outcome."""
    for (_, future), outcome in zip(group, outcomes, strict=True):
        if future.done():  # the request was cancelled (client gone)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
