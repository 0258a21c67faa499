"""Settlements of answered requests waiting to be written (docs/SERVING.md, "Completion").

    if pending.add({"b_id": event, "b_status": 200, "b_latency": ms}):   # Gate.complete
        pending.start_flusher(weakref.ref(gate))
    rows = pending.take()          # every admission's transaction writes them along

A plain success's settlement needs no answer from the database, so `Gate.complete`
buffers it here instead of committing a transaction of its own: the next admission's
transaction writes all that is buffered (one `executemany`), and when no admission comes
a short-lived thread writes it after SETTLE_FLUSH_S. A crash loses only what is buffered
here: those reservations are voided by the next sweep (foundry.serve.leases), never billed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("foundry.serve.gate")

SETTLE_FLUSH_S = 0.1
"""Seconds a buffered settlement waits for an admission to take it along before the
flusher thread writes it (within twice this). Under load every admission's transaction
writes all that is buffered, so at a crash the answers not yet settled are about those of
the requests in flight; they are voided, never billed."""


class PendingSettlements:
    """Settlements of answered requests waiting to be written (see `Gate.complete`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []
        self.since = 0.0
        """time.monotonic() when the oldest row was added."""
        self.flusher: threading.Thread | None = None
        self.stop = threading.Event()
        self.pid = os.getpid()

    def add(self, row: dict[str, Any]) -> bool:
        """Buffer one row; True when the caller must start a flusher thread."""
        with self.lock:
            self._after_fork()
            if not self.rows:
                self.since = time.monotonic()
            self.rows.append(row)
            if self.flusher is not None:
                return False
            self.flusher = _STARTING
            return True

    def take(self) -> list[dict[str, Any]]:
        """The buffered rows, emptying the buffer."""
        with self.lock:
            self._after_fork()
            rows, self.rows = self.rows, []
            return rows

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        """Rows whose transaction failed: written with the next flush."""
        with self.lock:
            if not self.rows:
                self.since = time.monotonic()
            self.rows = rows + self.rows

    def start_flusher(self, owner: weakref.ref[Any]) -> None:
        """Start the thread that writes what no admission took along (`add` said so);
        `owner()` is the Gate, whose `flush()` it calls."""
        thread = threading.Thread(target=_flusher, args=(owner, self, self.stop),
                                  name="foundry-gate-flush", daemon=True)
        self.flusher = thread
        thread.start()

    def stop_flusher(self) -> None:
        with self.lock:
            thread, self.flusher = self.flusher, None
            stop, self.stop = self.stop, threading.Event()
        stop.set()
        if isinstance(thread, threading.Thread) and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _after_fork(self) -> None:
        # The parent's rows are the parent's to write, and its thread is not ours.
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.rows, self.flusher, self.stop = [], None, threading.Event()


_STARTING: Any = object()  # `flusher` while the thread is being started


def _flusher(ref: weakref.ref[Any], pending: PendingSettlements, stop: threading.Event) -> None:
    """Thread: every SETTLE_FLUSH_S, write the buffered settlements no admission took
    along; it ends when the buffer is empty (the next buffered settlement starts
    another), when `stop` is set (Gate.close) or when its Gate is gone."""
    while not stop.wait(SETTLE_FLUSH_S):
        gate = ref()
        if gate is None:
            return  # the finalizer writes what is left
        with pending.lock:
            if not pending.rows:
                if pending.flusher is threading.current_thread():
                    pending.flusher = None
                return
            # While requests come, an admission takes the rows along first and this
            # thread seldom competes for the write lock.
            due = time.monotonic() - pending.since >= SETTLE_FLUSH_S
        if due:
            try:
                gate.flush()
            except Exception:
                log.exception("writing buffered settlements failed; will retry")
        del gate


def flush_at_exit(store: Any, pending: PendingSettlements, lease: Any,
                  write: Callable[[Any, list[dict[str, Any]]], None]) -> None:
    """weakref.finalize of a Gate: write what it still buffered (`write(store, rows)`),
    release its lease."""
    rows = pending.take()
    try:
        if rows:
            write(store, rows)
        lease.release()
    except Exception:
        log.warning("could not write %d buffered settlements or release the lease at "
                    "exit; the next process voids those reservations", len(rows))
