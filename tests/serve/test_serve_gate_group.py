"""Group admission (`Gate.admit_many`): one transaction for many requests, with exactly
the outcomes one `admit` after another would give."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.dialects import postgresql
from tests import pg_support

from foundry.config.schema import PlanConfig
from foundry.serve import gate as gate_module
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.gate_api import Admission, AdmitRequest
from foundry.serve.store import RESERVED, CompiledSql, usage_events

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc).timestamp()
PLANS = {
    "tiny": PlanConfig(included_units=5, hard_limit=True, requests_per_minute=1_000,
                       max_records_per_request=4),
    "slow": PlanConfig(included_units=10_000, requests_per_minute=3),
    "big": PlanConfig(included_units=1_000, hard_limit=True, requests_per_minute=10_000),
}


@pytest.fixture
def gate():
    g = Gate(PLANS, clock=lambda: T0)
    g.start()  # as a server does at startup: the lease, so groups can run on the loop
    yield g
    g.close()


def _bearer(gate: Gate, plan: str, **kwargs) -> str:
    return f"Bearer {gate.create_key('acme', plan, **kwargs).key}"


def _statements(gate: Gate) -> list[str]:
    seen: list[str] = []
    gate.store.close()  # the next checkout gets the trace callback
    event.listen(gate.store.engine, "checkout",
                 lambda conn, *_: conn.set_trace_callback(seen.append))
    return seen


def _billed(gate: Gate) -> int:
    query = select(func.coalesce(func.sum(usage_events.c.units), 0)).where(
        # Billed or reserved (admitted, not answered yet): what the quota counts.
        (usage_events.c.status < 500) | (usage_events.c.status == RESERVED)
    )
    with gate.store.read() as conn:
        return int(conn.scalar(query))


def _code(outcome: Admission | Exception) -> str:
    if isinstance(outcome, ApiError):
        return outcome.code
    if isinstance(outcome, Exception):
        return type(outcome).__name__
    return "replay" if outcome.replay is not None else "admitted"


def test_a_group_is_one_transaction_and_each_request_gets_its_own_outcome(gate, db_backend):
    tiny = _bearer(gate, "tiny")
    requests = [
        AdmitRequest(tiny, "m", 3, "a"),
        AdmitRequest("Bearer fdy_not_a_real_key_at_all_000000000000", "m", 1, "b"),
        AdmitRequest(None, "m", 1, "c"),
        AdmitRequest(tiny, "m", 9, "d"),  # over the plan's 4 records per request
        AdmitRequest(tiny, "m", 3, "e"),  # 3 + 3 > 5: the quota refuses it
        AdmitRequest(tiny, "m", 2, "f"),  # 3 + 2 = 5: fits
        AdmitRequest(tiny, "m", 1, "g", idempotency_key="k1", request_hash="h"),
    ]
    seen = _statements(gate) if db_backend == "sqlite" else None  # traces SQLite only
    outcomes = gate.admit_many(requests)
    assert [_code(o) for o in outcomes] == [
        "admitted", "invalid_api_key", "missing_api_key", "too_many_records",
        "quota_exceeded", "admitted", "quota_exceeded",
    ]
    assert seen is None or seen.count("BEGIN IMMEDIATE") == seen.count("COMMIT") == 1
    assert outcomes[4].status == 429 and outcomes[4].headers["x-should-retry"] == "false"
    assert outcomes[3].status == 413 and outcomes[3].param == "records"
    assert _billed(gate) == 5
    ids = {o.event_id for o in outcomes if isinstance(o, Admission)}
    assert len(ids) == 2 and None not in ids


def test_the_same_idempotency_key_twice_in_one_group(gate):
    key = _bearer(gate, "big")
    outcomes = gate.admit_many([
        AdmitRequest(key, "m", 1, "a", idempotency_key="k", request_hash="h"),
        AdmitRequest(key, "m", 1, "b", idempotency_key="k", request_hash="h"),
        AdmitRequest(key, "m", 1, "c", idempotency_key="k", request_hash="other"),
    ])
    assert [_code(o) for o in outcomes] == [
        "admitted", "idempotency_in_progress", "idempotency_key_reused"
    ]
    first = outcomes[0]
    gate.complete(first, status=200, latency_ms=1.0, response={"ok": 1})
    again = gate.admit_many([AdmitRequest(key, "m", 1, "d", idempotency_key="k",
                                          request_hash="h")])[0]
    assert again.replay is not None and again.replay.body == {"ok": 1}
    assert _billed(gate) == 1


@pytest.fixture
def second_url(db_backend, tmp_path, request):
    """A second empty database of the test's backend."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    url = pg_support.create_schema(request.getfixturevalue("postgres_database"))
    yield url
    pg_support.drop_schema(url)


def test_groups_give_the_outcomes_of_one_admission_after_another(second_url):
    """The same random stream of requests, admitted in random groups on one database and
    one at a time on another, ends with the same outcomes and the same usage."""
    rng = random.Random(7)
    grouped = Gate(PLANS, clock=lambda: T0)  # the test's database (db_backend)
    single = Gate(PLANS, clock=lambda: T0, url=second_url)
    try:
        bearers = []
        for plan in ("tiny", "slow", "big", "big"):
            a = grouped.create_key("acme", plan, models=["m"] if plan == "big" else None).key
            b = single.create_key("acme", plan, models=["m"] if plan == "big" else None).key
            bearers.append((f"Bearer {a}", f"Bearer {b}"))
        stream = []
        for i in range(300):
            a, b = rng.choice(bearers)
            ikey = f"k{rng.randrange(12)}" if rng.random() < 0.2 else None
            args = dict(model=rng.choice(["m", "m", "m", "other"]),
                        units=rng.choice([0, 1, 1, 2, 5]), request_id=f"r{i}",
                        idempotency_key=ikey, request_hash="h" if ikey else None)
            stream.append((AdmitRequest(a, **args), AdmitRequest(b, **args)))

        got_grouped: list[str] = []
        i = 0
        while i < len(stream):
            size = rng.choice([1, 2, 5, 17, 40])
            group = [a for a, _ in stream[i:i + size]]
            got_grouped += [_code(o) for o in grouped.admit_many(group)]
            i += size
        got_single = [_code(single.admit_many([b])[0]) for _, b in stream]

        assert got_grouped == got_single
        assert {"admitted", "quota_exceeded", "rate_limit_exceeded", "model_not_allowed",
                "idempotency_in_progress"} <= set(got_single)
        assert _billed(grouped) == _billed(single)
    finally:
        grouped.close()
        single.close()


def test_a_database_error_in_a_group_fails_only_its_request(gate, monkeypatch, db_backend):
    key = _bearer(gate, "big")
    working = gate_module.Gate._admit_in

    def flaky(self, cur, key_info, request, *args, **kwargs):
        if request.request_id == "bad":
            cur.execute("SELECT no_such_column FROM usage_events")
        return working(self, cur, key_info, request, *args, **kwargs)

    monkeypatch.setattr(gate_module.Gate, "_admit_in", flaky)
    outcomes = gate.admit_many([AdmitRequest(key, "m", 1, r) for r in ("a", "bad", "c")])
    assert [_code(o) for o in outcomes[::2]] == ["admitted", "admitted"]
    if db_backend == "sqlite":
        assert isinstance(outcomes[1], sqlite3.OperationalError)
    else:
        import psycopg

        assert isinstance(outcomes[1], psycopg.errors.UndefinedColumn)
    assert _billed(gate) == 2  # the failed group was rolled back, then each alone


def test_a_database_error_in_a_group_of_several_keys_fails_only_its_request(
    gate, monkeypatch
):
    """Several keys and a rotated key's account: rows locked up front (PostgreSQL), then
    the group rolled back and admitted one by one; the others are admitted, the quota
    counted once."""
    tiny = _bearer(gate, "tiny")
    big = gate.create_key("acme", "big")
    rotated = f"Bearer {gate.rotate_key(big.record.id).key}"
    working = gate_module.Gate._admit_in

    def flaky(self, cur, key_info, request, *args, **kwargs):
        if request.request_id == "bad":
            raise RuntimeError("injected database failure")
        return working(self, cur, key_info, request, *args, **kwargs)

    monkeypatch.setattr(gate_module.Gate, "_admit_in", flaky)
    outcomes = gate.admit_many([
        AdmitRequest(rotated, "m", 2, "a"),
        AdmitRequest(tiny, "m", 4, "b"),
        AdmitRequest(f"Bearer {big.key}", "m", 1, "bad"),
        AdmitRequest(f"Bearer {big.key}", "m", 3, "c"),
        AdmitRequest(tiny, "m", 2, "d"),  # 4 + 2 > 5
    ])
    assert [_code(o) for o in outcomes] == [
        "admitted", "admitted", "RuntimeError", "admitted", "quota_exceeded"
    ]
    assert _billed(gate) == 2 + 4 + 3
    assert gate.usage(gate.authenticate(rotated))["reserved_units"] == 5  # one account


def test_groups_that_share_keys_in_opposite_orders_do_not_deadlock(gate, caplog):
    """Two Gates (two engines, as two workers) admit groups of the same keys at once, one
    in ascending and one in descending key order, a rotated key among them. Each group
    locks its rows in id order first, so no transaction fails (no one-by-one fallback)
    and every hard quota ends exactly full, as one admission after another would."""
    quota = PLANS["big"].included_units
    created = [gate.create_key("acme", "big") for _ in range(3)]
    rotated = gate.rotate_key(created[0].record.id).key  # account: created[0]'s row
    bearers = [f"Bearer {c.key}" for c in created] + [f"Bearer {rotated}"]
    other = Gate(PLANS, clock=lambda: T0)  # same database, its own engine and pool
    rounds, units = 40, 7  # 2 gates x 40 rounds x 7 units = 560 per key, 1120 per account
    outcomes: list[list] = [[], []]
    start = threading.Barrier(2)

    def admit(index: int, admitting: Gate, order: list[str]) -> None:
        start.wait()
        for r in range(rounds):
            group = [AdmitRequest(b, "m", units, f"{index}-{r}-{i}") for i, b in
                     enumerate(order * 2)]
            admitted = admitting.admit_many(group)
            for outcome in admitted:  # answered (closing a Gate voids what it holds)
                if isinstance(outcome, Admission):
                    admitting.complete(outcome, status=200, latency_ms=1.0)
            outcomes[index] += admitted

    caplog.set_level(logging.WARNING, logger=gate_module.log.name)
    threads = [threading.Thread(target=admit, args=(0, gate, bearers)),
               threading.Thread(target=admit, args=(1, other, bearers[::-1]))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        other.close()
    assert not any(thread.is_alive() for thread in threads)
    codes = [_code(o) for per_gate in outcomes for o in per_gate]
    assert set(codes) == {"admitted", "quota_exceeded"}  # no database error
    assert "one by one" not in caplog.text  # no transaction failed (deadlock)
    # Three accounts, each admitted while units fit: exactly floor(quota / units) each.
    assert codes.count("admitted") == 3 * (quota // units)
    assert _billed(gate) == 3 * (quota // units) * units
    for bearer in bearers:
        usage = gate.usage(gate.authenticate(bearer))
        assert usage["units_used"] == quota // units * units


def test_the_group_lock_takes_rows_in_id_order_on_postgresql():
    lock = CompiledSql(gate_module._LOCK_GROUP, postgresql.dialect())
    assert lock.text.endswith("ORDER BY api_keys.id FOR UPDATE OF api_keys")
    assert "asked.account_id" in lock.text  # the accounts of rotated keys too
    assert lock.params({"b_ids": [3, 1]}) == {"b_ids": [3, 1]}


def test_admit_still_raises_its_refusal(gate):
    key = gate.authenticate(_bearer(gate, "tiny"))
    gate.admit(key, model="m", units=5, request_id="a")
    with pytest.raises(ApiError, match="quota exceeded"):
        gate.admit(key, model="m", units=1, request_id="b")


def test_try_admit_many_leaves_a_server_database_to_the_thread(gate, db_backend):
    bearer = _bearer(gate, "big")
    gate.authenticate(bearer)  # cached
    outcomes = gate.try_admit_many([AdmitRequest(bearer, "m", 1, "a")])
    if db_backend == "sqlite":
        assert [_code(o) for o in outcomes] == ["admitted"]
    else:  # every statement is a round trip to the server: never on the event loop
        assert outcomes is None and _billed(gate) == 0


@pytest.mark.sqlite_only  # holds SQLite's write lock from another connection
def test_try_admit_many_never_waits(gate):
    bearer = _bearer(gate, "big")
    request = AdmitRequest(bearer, "m", 1, "a")
    assert gate.try_admit_many([request]) is None  # the key is not cached yet
    gate.authenticate(bearer)
    holder = sqlite3.connect(gate.store.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock is taken
        assert gate.try_admit_many([request]) is None
        assert _billed(gate) == 0
        # Refusals that need no database are answered even then.
        refused = gate.try_admit_many([AdmitRequest(None, "m", 1, "b")])
        assert [_code(o) for o in refused] == ["missing_api_key"]
        holder.execute("COMMIT")
    finally:
        holder.close()
    assert [_code(o) for o in gate.try_admit_many([request])] == ["admitted"]
    assert _billed(gate) == 1
    # Its connection does not wait for the lock and leaves checkpoints to `checkpoint()`.
    cursor = gate.store._idle_nowait[0].dbapi_connection.cursor()
    assert cursor.execute("PRAGMA busy_timeout").fetchall() == [(0,)]
    assert cursor.execute("PRAGMA wal_autocheckpoint").fetchall() == [(0,)]
    cursor.close()
    gate.checkpoint()
