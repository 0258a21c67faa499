"""Leases: which serving process holds which usage reservation, and voiding a dead one's.

    lease = Lease(store)          # per Gate (per serving process): registered on start()
    lease.start()                 # the row, a sweep, then a thread: heartbeat + sweep
    event.lease_id = lease.id     # every reservation (Gate._admit_in)
    sweep(store)                  # void the reservations of dead processes

Admission reserves a request's units (a usage event with status RESERVED, counted by the
quota, not billed) and the answer settles it. A process killed in between (kill -9, out
of memory, the machine gone) leaves its reservations open: they hold quota and were never
answered. Every lease row names its process (host, pid, the pid's start time) and is
refreshed by a heartbeat; a lease is dead when

- it is on this host (same hostname, boot and pid namespace) and its pid is gone or now
  belongs to a process that started at another time (a reused pid) — known at once; or
- it is on another host and its heartbeat is older than LEASE_TTL_S by the database's
  clock (one clock for every host, so skew between machines does not matter).

`sweep` deletes dead leases and voids every reservation whose lease no longer exists, in
one transaction: status VOIDED (never billed), its units given back to the account's
quota counter, an Idempotency-Key still in progress freed (so a retry runs at once
instead of answering 409). Each void is logged (request id, units) and stays in the
table, so the answers lost to a crash are counted (`foundry usage report` shows them).
Every serving process sweeps when it starts and then every SWEEP_S, so a dead process's
reservations are voided within about a second on its own host and LEASE_TTL_S + SWEEP_S
from another.

A live process whose lease was taken for dead (another host that missed heartbeats for
LEASE_TTL_S) finds its row gone at its next heartbeat and registers a new one; its
reservations were voided, so their answers go unbilled (and are logged), never billed
twice nor over the quota.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Double,
    bindparam,
    cast,
    delete,
    exists,
    extract,
    func,
    insert,
    literal_column,
    select,
    update,
)

from foundry.serve.store import (
    RESERVED,
    VOIDED,
    ServeStore,
    api_keys,
    idempotency,
    serve_leases,
    usage_events,
)

log = logging.getLogger("foundry.serve")

HEARTBEAT_S = 1.0
"""Seconds between a lease's heartbeats (and its process's sweeps)."""
SWEEP_S = HEARTBEAT_S
LEASE_TTL_S = 5.0
"""A lease of another host whose heartbeat is older than this is dead. Five missed
heartbeats: a live process's thread is never held that long by the GIL or a busy
database (admissions hold a lock for milliseconds)."""


@dataclass(frozen=True)
class Voided:
    """What one sweep voided."""

    leases: int
    """Dead leases removed."""
    requests: int
    """Reservations voided (requests admitted whose answer was never settled)."""
    units: int
    """Their units, given back to the quota."""


@cache
def host_id() -> str:
    """This host as leases name it: hostname, boot id and pid namespace, so two
    containers with one hostname (host networking) never check each other's pids."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(
                Path(path).read_text().strip() if "boot" in path else os.readlink(path)
            )
        except OSError:
            parts.append("?")
    return "/".join(parts)[:255]


def pid_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count after its ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, start: int | None) -> bool:
    """Is the process that registered as (pid, start) on this host still running?"""
    if start is not None and Path("/proc/self/stat").exists():
        return pid_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def db_epoch(dialect_name: str) -> ColumnElement[Any]:
    """Now in epoch seconds by the database's clock."""
    if dialect_name == "postgresql":
        # EXTRACT gives a numeric (exact decimal) on PostgreSQL 14+; leases want a float.
        return cast(extract("epoch", func.clock_timestamp()), Double)
    return (func.julianday("now") - 2440587.5) * 86400.0


_IS_RESERVED = usage_events.c.status == literal_column(str(RESERVED))
"""A literal, not a parameter: the partial index `ix_usage_events_reserved` is used only
when the query's condition is visibly the index's."""


class Lease:
    """This Gate's row in serve_leases, its heartbeat and its sweeps (on one thread)."""

    def __init__(self, store: ServeStore) -> None:
        self.store = store
        self.id: int | None = None
        self.pid = 0
        self.models: list[str] = []
        """The pinned refs this process serves (`record_models`), kept on the row."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> int | None:
        """The lease id of this process, None when not registered (or after a fork)."""
        return self.id if self.pid == os.getpid() else None

    def start(self) -> int:
        """Register (once per process), sweep, and start the heartbeat thread; the id."""
        with self._lock:
            lease = self.current()
            if lease is not None:
                return lease
            if self.pid != os.getpid():  # a forked child: the parent's thread is not ours
                self._stop, self._thread = threading.Event(), None
            lease = self._register()
            self.id, self.pid = lease, os.getpid()
        sweep(self.store)
        thread = threading.Thread(
            target=_keep, args=(weakref.ref(self), self._stop), name="foundry-gate-lease",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        return lease

    def record_models(self, refs: list[str]) -> None:
        """Record on this process's row which versions it serves (`served_refs`)."""
        self.models = list(refs)
        lease = self.current()
        if lease is None:
            return
        with self.store.write() as conn:
            conn.execute(
                update(serve_leases).where(serve_leases.c.id == lease).values(models=self.models)
            )

    def heartbeat(self) -> None:
        """Refresh the row; register again if another process took it for dead."""
        lease = self.current()
        if lease is None:
            return
        with self.store.write() as conn:
            now = db_epoch(conn.dialect.name)
            found = conn.execute(
                update(serve_leases).where(serve_leases.c.id == lease).values(heartbeat_at=now)
            ).rowcount
        if not found:
            with self._lock:
                log.warning("this process's lease %s was taken for dead (no heartbeat for "
                            "%.0f s): its open reservations were voided; registering again",
                            lease, LEASE_TTL_S)
                self.id = self._register()

    def release(self) -> None:
        """Stop the thread, delete the row and void what it still holds (requests that
        will not be answered: the process is closing)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        lease = self.current()
        if lease is None:
            return
        self.id = None
        with self.store.write() as conn:
            conn.execute(delete(serve_leases).where(serve_leases.c.id == lease))
        sweep(self.store)

    def _register(self) -> int:
        pid = os.getpid()
        with self.store.write() as conn:
            now = db_epoch(conn.dialect.name)
            created = conn.execute(
                insert(serve_leases).values(host=host_id(), pid=pid, pid_start=pid_start(pid),
                                            created_at=now, heartbeat_at=now,
                                            models=self.models or None)
            )
        return int(created.inserted_primary_key[0])


def _keep(ref: weakref.ref[Lease], stop: threading.Event) -> None:
    """Thread: heartbeat and sweep every HEARTBEAT_S until stopped or the Lease is gone."""
    while not stop.wait(HEARTBEAT_S):
        lease = ref()
        if lease is None:
            return
        try:
            lease.heartbeat()
            sweep(lease.store)
        except Exception:
            log.warning("lease heartbeat or sweep failed; will retry", exc_info=True)
        del lease


def dead_leases(store: ServeStore) -> list[int]:
    """Ids of the leases whose process is dead (see the module docstring)."""
    here = host_id()
    with store.read() as conn:
        now = conn.execute(select(db_epoch(conn.dialect.name))).scalar_one()
        rows = conn.execute(select(serve_leases)).all()
    dead = []
    for row in rows:
        if row.host == here:
            if not process_alive(row.pid, row.pid_start):
                dead.append(row.id)
        elif now - row.heartbeat_at > LEASE_TTL_S:
            dead.append(row.id)
    return dead


def served_refs(store: ServeStore) -> dict[str, int]:
    """{pinned ref: how many live serving processes hold it}: what `foundry models
    delete` refuses. Dead processes' rows (not swept yet) do not count."""
    dead = set(dead_leases(store))
    with store.read() as conn:
        rows = conn.execute(select(serve_leases.c.id, serve_leases.c.models)).all()
    served: dict[str, int] = {}
    for lease, models in rows:
        if lease in dead:
            continue
        for ref in models or ():
            served[ref] = served.get(ref, 0) + 1
    return served


_ORPHANS = (
    select(
        usage_events.c.id,
        usage_events.c.units,
        usage_events.c.period,
        usage_events.c.request_id,
        usage_events.c.lease_id,
        func.coalesce(api_keys.c.account_id, api_keys.c.id).label("account"),
    )
    .select_from(usage_events.join(api_keys, api_keys.c.id == usage_events.c.key_id))
    .where(
        _IS_RESERVED,
        ~exists().where(serve_leases.c.id == usage_events.c.lease_id),
    )
)
"""Open reservations whose lease no longer exists (every dead lease is deleted first)."""
_VOID = (
    update(usage_events)
    .where(usage_events.c.id == bindparam("b_id"), usage_events.c.status == RESERVED)
    .values(status=VOIDED)
)
_GIVE_BACK = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("b_account"),
           api_keys.c.used_period == bindparam("b_period"))
    .values(used_units=api_keys.c.used_units - bindparam("b_units"))
)
_FREE_KEY = delete(idempotency).where(
    idempotency.c.event_id == bindparam("b_id"), idempotency.c.status.is_(None)
)


def sweep(store: ServeStore) -> Voided:
    """Delete dead leases and void every reservation without a live lease (module
    docstring); nothing is written when there is nothing to void."""
    dead = dead_leases(store)
    with store.read() as conn:
        orphans = conn.execute(_ORPHANS.limit(1)).first()
    if not dead and orphans is None:
        return Voided(0, 0, 0)
    voided = units = 0
    with store.write() as conn:
        if dead:
            conn.execute(delete(serve_leases).where(serve_leases.c.id.in_(dead)))
        rows = conn.execute(_ORPHANS).all()
        if rows and not store.is_sqlite:
            # The accounts' rows first, in id order, as every admission locks them: a
            # sweep and an admission wait for each other but never deadlock.
            accounts = sorted({row.account for row in rows})
            conn.execute(
                select(api_keys.c.id).where(api_keys.c.id.in_(accounts))
                .order_by(api_keys.c.id).with_for_update()
            ).all()
        for row in rows:
            # `status = RESERVED` in the update: two processes sweeping at once void (and
            # give back) each reservation once.
            if not conn.execute(_VOID, {"b_id": row.id}).rowcount:
                continue
            voided += 1
            units += row.units
            conn.execute(_GIVE_BACK, {"b_account": row.account, "b_period": row.period,
                                      "b_units": row.units})
            conn.execute(_FREE_KEY, {"b_id": row.id})
            log.warning("voided the reservation of request %s (%d units, lease %s): its "
                        "process died before answering; not billed", row.request_id,
                        row.units, row.lease_id)
    if voided or dead:
        log.warning("voided %d reservations (%d units) of %d dead serving processes",
                    voided, units, len(dead))
    return Voided(len(dead), voided, units)
