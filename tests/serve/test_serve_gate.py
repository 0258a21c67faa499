"""Admission: quota, token bucket, idempotency, completion, and what holds across processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from foundry.config.schema import PlanConfig
from foundry.serve import gate as gate_module
from foundry.serve import leases, settlements
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.store import RESERVED, VOIDED, CompiledSql, serve_leases, usage_events

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc).timestamp()
DEC_1 = datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()

PLANS = {
    "tiny": PlanConfig(included_units=5, hard_limit=True, requests_per_minute=1_000),
    "slow": PlanConfig(included_units=10_000, requests_per_minute=6),
    "metered": PlanConfig(included_units=2, overage_cents_per_1k=100, requests_per_minute=1_000),
    "shared": PlanConfig(included_units=120, hard_limit=True, requests_per_minute=100_000),
}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def gate(clock):
    g = Gate(PLANS, clock=clock)
    yield g
    g.close()


@pytest.fixture
def db_error(db_backend):
    """What the driver raises for a broken statement."""
    if db_backend == "sqlite":
        return sqlite3.OperationalError
    import psycopg

    return psycopg.Error


def _key(gate, plan, **kwargs):
    return gate.authenticate(gate.create_key("acme", plan, **kwargs).key)


def _billable_units(gate, request_prefix: str = "") -> int:
    """Units held by billable events and by open reservations (admitted, not answered
    yet): what the quota counts."""
    held = (usage_events.c.status < 500) | (usage_events.c.status == RESERVED)
    query = select(func.coalesce(func.sum(usage_events.c.units), 0)).where(
        held, usage_events.c.request_id.startswith(request_prefix)
    )
    with gate.store.read() as conn:
        return int(conn.scalar(query))


def test_admit_and_complete_write_one_usage_event(gate):
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="iris", units=3, request_id="req-1")
    assert adm.replay is None and adm.event_id is not None
    assert adm.rate.limit == 1_000 and adm.rate.remaining == 999
    with gate.store.read() as conn:  # reserved by admit, before inference
        row = conn.execute(select(usage_events)).one()
    assert (row.status, row.latency_ms) == (RESERVED, None)
    assert row.lease_id == gate.lease.id
    assert gate.usage(key)["reserved_units"] == 3 and gate.usage(key)["units_used"] == 0
    gate.complete(adm, status=200, latency_ms=12.5, response={"predictions": [1, 2, 3]})
    assert gate.flush() == 1  # a plain success's settlement is buffered (Gate.complete)
    with gate.store.read() as conn:
        row = conn.execute(select(usage_events)).one()
    assert (row.key_id, row.model, row.units, row.status) == (key.id, "iris", 3, 200)
    assert (row.latency_ms, row.request_id, row.period) == (12.5, "req-1", "2026-11")
    assert row.created_at == T0 and row.idempotency_key is None
    usage = gate.usage(key)
    assert usage == {
        "key": key.prefix,
        "name": "acme",
        "plan": "tiny",
        "period": "2026-11",
        "requests": 1,
        "units_used": 3,
        "reserved_units": 0,
        "included_units": 5,
        "remaining_units": 2,
        "hard_limit": True,
        "overage_units": 0,
        "amount_due_cents": 0,
    }


def test_quota_admits_exactly_the_included_units(gate, clock):
    key = _key(gate, "tiny")
    for i in range(5):
        gate.admit(key, model="m", units=1, request_id=f"r{i}")
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="m", units=1, request_id="r5")
    err = exc.value
    assert (err.status, err.code, err.type) == (429, "quota_exceeded", "rate_limit_error")
    assert err.headers["x-should-retry"] == "false"
    assert err.headers["Retry-After"] == str(int(DEC_1 - T0))  # the next period
    assert err.headers["x-ratelimit-limit-requests"] == "1000"
    assert "5 of the 5 units" in err.message
    assert _billable_units(gate) == 5
    assert gate.usage(key)["remaining_units"] == 0

    clock.now = DEC_1  # a new period, a new quota
    gate.admit(key, model="m", units=5, request_id="dec")
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="dec2")


def test_a_request_larger_than_the_quota_left_is_refused_whole(gate):
    key = _key(gate, "tiny")
    gate.admit(key, model="m", units=3, request_id="a")
    with pytest.raises(ApiError, match="needs 3"):
        gate.admit(key, model="m", units=3, request_id="b")
    gate.admit(key, model="m", units=2, request_id="c")
    assert _billable_units(gate) == 5


def test_plans_without_a_hard_limit_bill_overage_instead(gate):
    key = _key(gate, "metered")
    for i in range(4):
        adm = gate.admit(key, model="m", units=1, request_id=str(i))
        gate.complete(adm, status=200, latency_ms=1.0)
    usage = gate.usage(key)
    assert (usage["units_used"], usage["overage_units"], usage["remaining_units"]) == (4, 2, 0)
    assert usage["amount_due_cents"] == 1  # ceil(2 * 100 / 1000)


def test_failed_requests_are_not_billed_and_give_their_units_back(gate):
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="m", units=5, request_id="boom")
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="x")
    gate.complete(adm, status=500, latency_ms=3.0)
    gate.complete(adm, status=500, latency_ms=3.0)  # twice refunds once
    assert _billable_units(gate) == 0
    assert gate.usage(key)["units_used"] == 0
    for i in range(5):
        gate.admit(key, model="m", units=1, request_id=f"ok{i}")
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="x")
    with gate.store.read() as conn:
        statuses = sorted(conn.scalars(select(usage_events.c.status)))
    assert statuses == [500] + [RESERVED] * 5  # five reservations in flight


def test_token_bucket_allows_a_burst_then_refills(gate, clock):
    key = _key(gate, "slow")  # 6 per minute: one token every 10 s
    states = [gate.admit(key, model="m", units=1, request_id=str(i)).rate for i in range(6)]
    assert [s.remaining for s in states] == [5, 4, 3, 2, 1, 0]
    assert states[-1].reset_seconds == pytest.approx(60.0)
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="m", units=1, request_id="over")
    err = exc.value
    assert (err.status, err.code) == (429, "rate_limit_exceeded")
    assert err.headers["Retry-After"] == "10"
    assert err.headers["x-ratelimit-limit-requests"] == "6"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.headers["x-ratelimit-reset-requests"] == "60.000s"
    assert "x-should-retry" not in err.headers  # retryable

    clock.now = T0 + 4
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="m", units=1, request_id="still")
    assert exc.value.headers["Retry-After"] == "6"
    clock.now = T0 + 10
    assert gate.admit(key, model="m", units=1, request_id="refilled").rate.remaining == 0
    clock.now = T0 + 10 + 3600  # a long pause refills to capacity, not beyond
    assert gate.admit(key, model="m", units=1, request_id="full").rate.remaining == 5
    assert _billable_units(gate) == 8  # refused requests write nothing


def test_model_restrictions(gate):
    key = _key(gate, "tiny", models=["iris"])
    gate.admit(key, model="iris", units=1, request_id="a")
    gate.admit(key, model="iris:3", units=1, request_id="b")
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="adult", units=1, request_id="c")
    err = exc.value
    assert (err.status, err.code, err.param) == (403, "model_not_allowed", "model")
    plans = {"narrow": PlanConfig(models=["adult"])}
    narrow = Gate(plans, clock=gate.clock)
    key = narrow.authenticate(narrow.create_key("n", "narrow").key)
    assert key.models == ["adult"]
    with pytest.raises(ApiError, match="may not call model 'iris'"):
        narrow.admit(key, model="iris", units=1, request_id="d")


def test_idempotent_retry_is_answered_from_the_first_result_and_charged_once(gate):
    key = _key(gate, "tiny")
    first = gate.admit(
        key, model="m", units=2, request_id="a", idempotency_key="k1", request_hash="body-1"
    )
    gate.complete(first, status=200, latency_ms=1.0, response={"predictions": [0.5, 0.7]})
    again = gate.admit(
        key, model="m", units=2, request_id="b", idempotency_key="k1", request_hash="body-1"
    )
    assert again.event_id is None
    assert again.replay is not None
    assert (again.replay.status, again.replay.body) == (200, {"predictions": [0.5, 0.7]})
    gate.complete(again, status=200, latency_ms=1.0)  # a replay needs none: no-op
    assert _billable_units(gate) == 2

    with pytest.raises(ApiError) as exc:
        gate.admit(
            key, model="m", units=2, request_id="c", idempotency_key="k1", request_hash="body-2"
        )
    err = exc.value
    assert (err.status, err.code, err.param) == (422, "idempotency_key_reused", "Idempotency-Key")
    other = gate.admit(
        key, model="m", units=1, request_id="d", idempotency_key="k2", request_hash="body-2"
    )
    assert other.replay is None and _billable_units(gate) == 3


def test_idempotency_key_in_flight_answers_409(gate, clock):
    key = _key(gate, "tiny")
    first = gate.admit(
        key, model="m", units=1, request_id="a", idempotency_key="k", request_hash="h"
    )
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="m", units=1, request_id="b", idempotency_key="k", request_hash="h")
    err = exc.value
    assert (err.status, err.code, err.headers["Retry-After"]) == (
        409,
        "idempotency_in_progress",
        "1",
    )
    gate.complete(first, status=201, latency_ms=1.0, response=[1])
    replay = gate.admit(
        key, model="m", units=1, request_id="c", idempotency_key="k", request_hash="h"
    ).replay
    assert (replay.status, replay.body) == (201, [1])
    assert _billable_units(gate) == 1


def test_a_failed_idempotent_request_can_be_retried(gate):
    key = _key(gate, "tiny")
    first = gate.admit(key, model="m", units=1, request_id="a", idempotency_key="k")
    gate.complete(first, status=503, latency_ms=1.0, response={"error": "x"})
    retry = gate.admit(key, model="m", units=1, request_id="b", idempotency_key="k")
    assert retry.replay is None and retry.event_id != first.event_id
    gate.complete(retry, status=200, latency_ms=1.0, response={"ok": True})
    assert _billable_units(gate) == 1


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_abandoned_idempotent_request_is_taken_over_once_its_process_is_dead(gate, clock):
    key = _key(gate, "tiny")
    died = gate.admit(key, model="m", units=5, request_id="died", idempotency_key="k")
    with pytest.raises(ApiError) as exc:  # its process is alive: in progress, however long
        gate.admit(key, model="m", units=5, request_id="early", idempotency_key="k")
    assert (exc.value.status, exc.value.code) == (409, "idempotency_in_progress")
    # The lease of "died" now names a dead process on this host (as after a kill -9).
    with gate.store.write() as conn:
        conn.execute(update(serve_leases).where(serve_leases.c.id == gate.lease.id)
                     .values(pid=_dead_pid()))
    leases.sweep(gate.store)  # (or the lease thread's own sweep got there first)
    assert _event(gate, died.event_id).status == VOIDED
    retry = gate.admit(key, model="m", units=5, request_id="retry", idempotency_key="k")
    assert retry.replay is None  # the dead attempt's units went back to the quota
    gate.complete(retry, status=200, latency_ms=1.0, response={})
    assert _billable_units(gate) == 5 and _billable_units(gate, "died") == 0
    assert gate.usage_report("2026-11").voided == {"requests": 1, "units": 5}


def test_rotated_keys_share_the_account_quota_and_bucket(gate):
    created = gate.create_key("acme", "tiny")
    old = gate.authenticate(created.key)
    new = gate.authenticate(gate.rotate_key(created.record.id, grace_hours=1).key)
    gate.admit(old, model="m", units=3, request_id="a")
    gate.admit(new, model="m", units=2, request_id="b")
    for key in (old, new):
        with pytest.raises(ApiError, match="quota"):
            gate.admit(key, model="m", units=1, request_id="c")
    assert gate.usage(new)["reserved_units"] == gate.usage(old)["reserved_units"] == 5
    first = gate.admit(new, model="m", units=0, request_id="d", idempotency_key="k")
    gate.complete(first, status=200, latency_ms=1.0, response="r")
    assert gate.admit(old, model="m", units=0, request_id="e", idempotency_key="k").replay


def test_bad_arguments(gate):
    key = _key(gate, "tiny")
    for units in (-1, 1.5, True):
        with pytest.raises(ApiError, match="units"):
            gate.admit(key, model="m", units=units, request_id="a")
    with pytest.raises(ApiError) as exc:
        gate.admit(key, model="m", units=1, request_id="a", idempotency_key="x" * 256)
    assert exc.value.param == "Idempotency-Key"


def _trace_sqlite(gate) -> list[str]:
    """Every statement the gate's SQLite connections run from now on."""
    seen: list[str] = []
    gate.start()  # the lease: registered once, before the traced admissions
    gate.store.close()  # drop kept connections: the next checkout gets the trace callback
    event.listen(
        gate.store.engine,
        "checkout",
        lambda dbapi_conn, *_: dbapi_conn.set_trace_callback(seen.append),
    )
    return seen


@pytest.mark.sqlite_only  # traces SQLite's statements
def test_sqlite_admission_begins_immediate_and_postgresql_locks_the_row(gate):
    key = _key(gate, "tiny")
    seen = _trace_sqlite(gate)
    gate.admit(key, model="m", units=1, request_id="a")
    assert seen[0] == "BEGIN IMMEDIATE"
    assert seen[1].startswith("SELECT api_keys.id") and "FOR UPDATE" not in seen[1]
    assert seen[-1] == "COMMIT"
    lock = gate_module._LOCK_KEY
    assert "FOR UPDATE" in str(lock.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in str(lock.compile(dialect=sqlite.dialect()))


@pytest.mark.sqlite_only  # traces SQLite's statements
def test_a_plain_admission_is_three_statements_in_one_transaction(gate):
    key = _key(gate, "tiny")
    seen = _trace_sqlite(gate)
    adm = gate.admit(key, model="m", units=1, request_id="a")
    assert [s.split()[0] for s in seen] == ["BEGIN", "SELECT", "UPDATE", "INSERT", "COMMIT"]
    assert "RETURNING" not in seen[3] and not gate.store.returning_ids  # lastrowid
    seen.clear()
    gate.complete(adm, status=200, latency_ms=1.0)
    assert seen == []  # buffered: no database work for a plain success
    for i in range(3):  # one connection, kept for the next transaction
        gate.admit(key, model="m", units=1, request_id=f"b{i}")
    assert seen.count("BEGIN IMMEDIATE") == 3 and len(gate.store._idle) == 1


def test_hot_statements_compile_for_postgresql_with_row_locks_and_returning(gate):
    """The raw per-request path runs SQLAlchemy's own compilation of each statement for
    the database's dialect: check what PostgreSQL would be sent."""
    pg = postgresql.dialect()
    compiled = {stmt: CompiledSql(stmt, pg) for stmt in gate_module.HOT_STATEMENTS}
    lock = compiled[gate_module._LOCK_KEY]
    assert "WHERE api_keys.id = %(b_id)s" in lock.text and lock.text.endswith(" FOR UPDATE")
    assert lock.names is None and lock.params({"b_id": 7}) == {"b_id": 7}
    insert = compiled[gate_module._INSERT_EVENT_RETURNING]
    assert insert.text.startswith("INSERT INTO usage_events")
    assert insert.text.endswith("RETURNING usage_events.id")
    finish = compiled[gate_module._SETTLE]
    assert finish.params({"b_id": 1, "b_status": 503, "b_latency": 2.0}) == {
        "b_id": 1,
        "b_status": 503,
        "b_latency": 2.0,
        "status_1": RESERVED,
    }
    assert "usage_events.status = %(status_1)s" in finish.text
    for stmt, sql in compiled.items():
        assert "?" not in sql.text, sql
        assert ("FOR UPDATE" in sql.text) == (stmt is gate_module._LOCK_KEY), sql

    lite = sqlite.dialect()
    lock = CompiledSql(gate_module._LOCK_KEY, lite)
    assert lock.text.endswith("WHERE api_keys.id = ?") and lock.params({"b_id": 7}) == (7,)
    finish = CompiledSql(gate_module._SETTLE, lite)
    params = finish.params({"b_id": 1, "b_status": 503, "b_latency": 2})
    assert params == (503, 2.0, 1, RESERVED) and type(params[1]) is float  # SQLAlchemy's Double


# --------------------------------------------------------------- buffered latencies


def _event(gate, event_id):
    with gate.store.read() as conn:
        return conn.execute(select(usage_events).where(usage_events.c.id == event_id)).one()


def _outcome(gate, admission) -> tuple[int, float | None]:
    row = _event(gate, admission.event_id)
    return row.status, row.latency_ms


def test_a_buffered_settlement_is_written_by_the_flusher_thread(gate, monkeypatch):
    monkeypatch.setattr(settlements, "SETTLE_FLUSH_S", 0.02)
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="m", units=1, request_id="a")
    gate.complete(adm, status=200, latency_ms=7.0)
    deadline = time.monotonic() + 10
    while _event(gate, adm.event_id).latency_ms is None:  # no further call needed
        assert time.monotonic() < deadline, "the buffered latency was never written"
        time.sleep(0.01)
    assert _outcome(gate, adm) == (200, 7.0)
    while gate._pending.flusher is not None:  # nothing left: the thread ends
        assert time.monotonic() < deadline, "the flusher thread did not end"
        time.sleep(0.01)


@pytest.mark.sqlite_only  # traces SQLite's statements
def test_admissions_take_buffered_settlements_along(gate, monkeypatch):
    monkeypatch.setattr(settlements, "SETTLE_FLUSH_S", 3600.0)
    key = _key(gate, "shared")
    seen = _trace_sqlite(gate)
    done = [gate.admit(key, model="m", units=1, request_id=f"r{i}") for i in range(3)]
    for i, adm in enumerate(done):
        gate.complete(adm, status=200, latency_ms=float(i))
    assert [_outcome(gate, adm) for adm in done] == [(RESERVED, None)] * 3
    seen.clear()
    gate.admit(key, model="m", units=1, request_id="r3")  # the fourth carries them
    assert [s.split()[0] for s in seen] == ["BEGIN", "SELECT", "UPDATE", "INSERT"] + [
        "UPDATE"
    ] * 3 + ["COMMIT"]
    assert [_outcome(gate, adm) for adm in done] == [(200, 0.0), (200, 1.0), (200, 2.0)]
    assert gate._pending.rows == [] and gate.flush() == 0


def test_a_refused_admission_still_writes_the_buffered_settlements(gate):
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="m", units=5, request_id="a")
    gate.complete(adm, status=200, latency_ms=3.0)
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="b")  # writes nothing of its own
    assert gate.flush() == 0
    assert _event(gate, adm.event_id).latency_ms == 3.0
    assert _billable_units(gate) == 5


def test_a_failed_admission_transaction_puts_the_settlements_back(gate, monkeypatch, db_error):
    key = _key(gate, "shared")
    adm = gate.admit(key, model="m", units=1, request_id="a")
    gate.complete(adm, status=200, latency_ms=4.0)
    working = CompiledSql.executemany

    def broken(self, cursor, rows):
        cursor.execute("SELECT no_such_column FROM usage_events")

    monkeypatch.setattr(CompiledSql, "executemany", broken)
    with pytest.raises(db_error):
        gate.admit(key, model="m", units=1, request_id="b")
    assert _billable_units(gate) == 1  # "b" was rolled back with the latencies
    monkeypatch.setattr(CompiledSql, "executemany", working)
    assert gate.flush() == 1 and _event(gate, adm.event_id).latency_ms == 4.0


def test_failures_and_stored_responses_are_never_buffered(gate):
    key = _key(gate, "tiny")
    ok, created, boom = (gate.admit(key, model="m", units=1, request_id=r) for r in "abc")
    ikey = gate.admit(key, model="m", units=1, request_id="d", idempotency_key="k")
    gate.complete(ok, status=200, latency_ms=1.0)
    gate.complete(created, status=201, latency_ms=2.0)
    gate.complete(boom, status=503, latency_ms=3.0)
    gate.complete(ikey, status=200, latency_ms=4.0, response={"a": 1})
    outcomes = [_outcome(gate, adm) for adm in (ok, created, boom, ikey)]
    assert outcomes == [(RESERVED, None), (RESERVED, None), (503, 3.0), (200, 4.0)]
    assert [row["b_id"] for row in gate._pending.rows] == [ok.event_id, created.event_id]
    # The 503 was refunded at once (usage() writes this process's settlements first).
    assert gate.usage(key)["units_used"] == 3
    replay = gate.admit(key, model="m", units=1, request_id="e", idempotency_key="k").replay
    assert replay is not None and replay.body == {"a": 1}
    # A settlement buffered for an event that failed meanwhile cannot bring it back.
    gate.complete(boom, status=200, latency_ms=9.0)
    assert gate.flush() == 1
    assert _outcome(gate, ok) == (200, 1.0) and _outcome(gate, boom) == (503, 3.0)
    assert gate.usage(key)["units_used"] == 3


def test_a_failed_flush_keeps_its_latencies_and_drops_the_connection(
    gate, monkeypatch, db_error
):
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="m", units=1, request_id="a")
    gate.complete(adm, status=200, latency_ms=5.0)
    working = CompiledSql.executemany

    def broken(self, cursor, rows):
        cursor.execute("SELECT no_such_column FROM usage_events")

    monkeypatch.setattr(CompiledSql, "executemany", broken)
    with pytest.raises(db_error):
        gate.flush()
    assert gate.store._idle == []  # a database error: that connection is not reused
    monkeypatch.setattr(CompiledSql, "executemany", working)
    assert gate.flush() == 1 and _event(gate, adm.event_id).latency_ms == 5.0


def test_close_and_a_dropped_gate_write_what_they_buffered(foundry_home, clock):
    g = Gate(PLANS, clock=clock)
    key = _key(g, "tiny")
    first = g.admit(key, model="m", units=1, request_id="a")
    g.complete(first, status=200, latency_ms=1.5)
    g.close()
    second = g.admit(key, model="m", units=1, request_id="b")  # usable again after close
    g.complete(second, status=200, latency_ms=2.5)
    del g
    gc.collect()  # its finalizer writes the rest (also run at interpreter exit)
    reader = Gate(PLANS, clock=clock)
    assert _event(reader, first.event_id).latency_ms == 1.5
    assert _event(reader, second.event_id).latency_ms == 2.5
    reader.close()


def test_a_refusal_keeps_the_connection_and_a_database_error_drops_it(gate, db_error):
    key = _key(gate, "tiny")
    gate.admit(key, model="m", units=5, request_id="a")
    # SQLite keeps its connection between transactions; PostgreSQL's go back to the pool.
    kept = gate.store._idle[:1]
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="b")
    assert gate.store._idle == kept
    with pytest.raises(db_error), gate.store.fast_write() as cur:
        cur.execute("UPDATE api_keys SET used_units = 0")
        cur.execute("SELECT nope FROM nowhere")
    assert gate.store._idle == []
    assert gate.usage(key)["reserved_units"] == 5  # rolled back
    with pytest.raises(ApiError, match="quota"):
        gate.admit(key, model="m", units=1, request_id="c")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_its_own_connections(gate):
    key = _key(gate, "shared")
    gate.admit(key, model="m", units=1, request_id="parent-1")
    # SQLite: the connection kept between transactions; PostgreSQL: the pool's. Either
    # way the parent's socket or file handle must not be used (or closed) by the child.
    kept = gate.store._idle[:1]
    pid = os.fork()
    if pid == 0:  # the child: never the parent's connection
        code = 1
        try:
            gate.admit(key, model="m", units=1, request_id="child")
            code = 0 if not kept or gate.store._idle[0] is not kept[0] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    gate.admit(key, model="m", units=1, request_id="parent-2")
    assert gate.store._idle == kept
    assert _billable_units(gate) == 3


# --------------------------------------------------------------- across processes


def _admit_many(home: str, key: str, barrier, results, n: int) -> None:
    """One "uvicorn worker": its own Gate, `n` admissions at once from a thread pool."""
    g = Gate(PLANS, home=home)
    info = g.authenticate(f"Bearer {key}")

    def one(i: int) -> str:
        try:
            adm = g.admit(info, model="m", units=1, request_id=f"c-{os.getpid()}-{i}")
            g.complete(adm, status=200, latency_ms=1.0)  # settled at the latest on exit
            return "ok"
        except ApiError as exc:
            return exc.code
        except Exception as exc:  # reported, so the test fails with the reason
            return f"error: {exc!r}"

    barrier.wait()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results.put(list(pool.map(one, range(n))))


def test_quota_holds_across_processes(gate, clock, foundry_home):
    clock.now = time.time()  # the workers' Gates read the real clock: the same period
    created = gate.create_key("acme", "shared")  # 120 units included
    key = gate.authenticate(created.key)
    for i in range(20):
        gate.admit(key, model="m", units=1, request_id=f"pre-{i}")  # 100 left
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_admit_many, args=(str(foundry_home), created.key, barrier, results, 75))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = [o for _ in procs for o in results.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(outcomes) == 300
    assert [o for o in outcomes if o not in ("ok", "quota_exceeded")] == []
    assert outcomes.count("ok") == 100
    assert _billable_units(gate, "c-") == 100
    assert _billable_units(gate) == 120


_CRASHER = """
import sys
from foundry.config.schema import PlanConfig
from foundry.serve.gate import Gate
g = Gate({"big": PlanConfig(included_units=10**9, requests_per_minute=10**9)})
key = g.authenticate(sys.argv[1])
i = 0
while True:
    adm = g.admit(key, model="m", units=1, request_id=f"k-{i}")
    print(adm.event_id, flush=True)  # acknowledged: the event is committed
    i += 1
"""


def test_kill_9_loses_no_acknowledged_usage(foundry_home, tmp_path, db_backend):
    g = Gate({"big": PlanConfig(included_units=10**9, requests_per_minute=10**9)})
    created = g.create_key("acme", "big")
    script = tmp_path / "crasher.py"
    script.write_text(textwrap.dedent(_CRASHER))
    proc = subprocess.Popen(
        [sys.executable, str(script), created.key],
        stdout=subprocess.PIPE,
        env={**os.environ, "FOUNDRY_HOME": str(foundry_home)},
        text=True,
    )
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) == 200:
            os.kill(proc.pid, signal.SIGKILL)
            break
    acked += [int(line) for line in proc.stdout if line.strip()]  # printed before the kill
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with g.store.read() as conn:
        stored = set(conn.scalars(select(usage_events.c.id)))
    assert set(acked) <= stored and len(acked) >= 200
    assert Path(foundry_home / "foundry.db").exists() == (db_backend == "sqlite")
