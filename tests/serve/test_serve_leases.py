"""Leases: which serving process is dead, and voiding what it had reserved (serve/leases.py).

A dead process is simulated by pointing a lease row at it: a pid that has exited, a pid
alive but started at another time (reused), or another host whose heartbeat stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import insert, select, update

from foundry.config.schema import PlanConfig
from foundry.serve import leases
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.store import RESERVED, VOIDED, idempotency, serve_leases, usage_events

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

PLANS = {"tiny": PlanConfig(included_units=5, hard_limit=True, requests_per_minute=1_000)}


@pytest.fixture
def gate(foundry_home):
    g = Gate(PLANS)
    g.start()
    yield g
    g.close()


def _other_lease(gate: Gate, **values) -> int:
    """A lease row of another process (host, pid, heartbeat as given)."""
    with gate.store.write() as conn:
        now = conn.execute(select(leases.db_epoch(conn.dialect.name))).scalar_one()
        row = {"host": leases.host_id(), "pid": os.getpid(),
               "pid_start": leases.pid_start(os.getpid()), "created_at": now,
               "heartbeat_at": now, **values}
        if callable(row["heartbeat_at"]):
            row["heartbeat_at"] = row["heartbeat_at"](now)
        return int(conn.execute(insert(serve_leases).values(**row)).inserted_primary_key[0])


def _reserve_under(gate: Gate, lease: int, units: int, ikey: str | None = None,
                   key=None) -> int:
    """A reservation as another process would have made it: admitted here, then moved."""
    key = key or gate.authenticate(gate.create_key("acme", "tiny").key)
    adm = gate.admit(key, model="m", units=units, request_id=f"r-{lease}",
                     idempotency_key=ikey, request_hash="h" if ikey else None)
    with gate.store.write() as conn:
        conn.execute(update(usage_events).where(usage_events.c.id == adm.event_id)
                     .values(lease_id=lease))
    return adm.event_id


def _status(gate: Gate, event_id: int) -> int:
    with gate.store.read() as conn:
        return conn.execute(select(usage_events.c.status)
                            .where(usage_events.c.id == event_id)).scalar_one()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_process_keeps_its_reservations(gate):
    alive = _other_lease(gate)  # this very process, as another lease
    far = _other_lease(gate, host="other-machine")  # another host, fresh heartbeat
    events = [_reserve_under(gate, alive, 2), _reserve_under(gate, far, 3)]
    assert leases.sweep(gate.store) == leases.Voided(0, 0, 0)
    assert [_status(gate, e) for e in events] == [RESERVED, RESERVED]


def test_a_dead_pid_on_this_host_is_voided_at_once_and_its_quota_comes_back(gate):
    dead = _other_lease(gate, pid=_dead_pid())
    key = gate.authenticate(gate.create_key("beta", "tiny").key)
    event = _reserve_under(gate, dead, 5, ikey="order-1", key=key)
    assert gate.usage(key)["remaining_units"] == 0
    leases.sweep(gate.store)  # (or the lease thread's own sweep got there first)
    assert _status(gate, event) == VOIDED
    with gate.store.read() as conn:
        assert conn.execute(select(serve_leases.c.id).where(serve_leases.c.id == dead)
                            ).first() is None
        assert conn.execute(select(idempotency)).first() is None  # the key is free
    assert gate.usage(key)["remaining_units"] == 5
    assert gate.usage_report().voided == {"requests": 1, "units": 5}


def test_a_reused_pid_and_a_silent_host_are_dead(gate):
    reused = _other_lease(gate, pid_start=1)  # our pid, but not our start time
    silent = _other_lease(gate, host="other-machine",
                          heartbeat_at=lambda now: now - leases.LEASE_TTL_S - 1)
    events = [_reserve_under(gate, reused, 1), _reserve_under(gate, silent, 1)]
    assert set(leases.dead_leases(gate.store)) == {reused, silent}
    leases.sweep(gate.store)
    assert [_status(gate, e) for e in events] == [VOIDED, VOIDED]


def test_a_lease_taken_for_dead_registers_again(gate):
    first = gate.lease.id
    with gate.store.write() as conn:
        conn.execute(update(serve_leases).where(serve_leases.c.id == first)
                     .values(pid=_dead_pid()))
    leases.sweep(gate.store)
    gate.lease.heartbeat()
    assert gate.lease.id not in (None, first)
    key = gate.authenticate(gate.create_key("acme", "tiny").key)
    adm = gate.admit(key, model="m", units=1, request_id="after")
    assert _status(gate, adm.event_id) == RESERVED
    assert leases.sweep(gate.store).requests == 0  # the new lease is alive


def test_closing_a_gate_voids_what_it_still_holds(foundry_home):
    g = Gate(PLANS)
    key = g.authenticate(g.create_key("acme", "tiny").key)
    answered = g.admit(key, model="m", units=2, request_id="answered")
    g.complete(answered, status=200, latency_ms=1.0)
    unanswered = g.admit(key, model="m", units=3, request_id="unanswered")
    g.close()
    assert _status(g, answered.event_id) == 200  # the buffered settlement was written
    assert _status(g, unanswered.event_id) == VOIDED
    with g.store.read() as conn:
        assert conn.execute(select(serve_leases)).first() is None
    assert g.usage(key)["remaining_units"] == 3


_HOLDER = """
import sys
import time
from foundry.config.schema import PlanConfig
from foundry.serve.gate import Gate
g = Gate({"tiny": PlanConfig(included_units=5, hard_limit=True, requests_per_minute=1000)})
adm = g.admit(g.authenticate(sys.argv[1]), model="m", units=5, request_id="held",
              idempotency_key="order-7", request_hash="h")
print(adm.event_id, flush=True)
sys.stdin.read()  # generating... until killed
"""


def test_a_key_held_by_a_killed_process_is_taken_over_within_seconds(gate, foundry_home):
    created = gate.create_key("acme", "tiny")
    key = gate.authenticate(created.key)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, created.key],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "FOUNDRY_HOME": str(foundry_home)})
    try:
        held = int(holder.stdout.readline())
        with pytest.raises(ApiError) as busy:  # its process runs: in progress
            gate.admit(key, model="m", units=5, request_id="retry", idempotency_key="order-7",
                       request_hash="h")
        assert busy.value.code == "idempotency_in_progress"
    finally:
        holder.kill()  # SIGKILL: no finalizer, no close
        holder.wait(timeout=30)
    # This process's lease thread sweeps every second: the retry takes over, and the
    # dead request's 5 units are back in the quota (it could not fit otherwise).
    deadline = time.monotonic() + 10
    while True:
        try:
            retry = gate.admit(key, model="m", units=5, request_id="retry",
                               idempotency_key="order-7", request_hash="h")
            break
        except ApiError as exc:
            assert exc.code == "idempotency_in_progress", exc
            assert time.monotonic() < deadline, "still 409 10 s after the kill"
            time.sleep(0.2)
    assert retry.replay is None and _status(gate, held) == VOIDED
