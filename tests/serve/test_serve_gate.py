"""Admission: quota, token bucket, idempotency, completion, and what holds across processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.dialects import postgresql, sqlite

from foundry.config.schema import PlanConfig
from foundry.serve import gate as gate_module
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.store import usage_events

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


def _key(gate, plan, **kwargs):
    return gate.authenticate(gate.create_key("acme", plan, **kwargs).key)


def _billable_units(gate, request_prefix: str = "") -> int:
    query = select(func.coalesce(func.sum(usage_events.c.units), 0)).where(
        usage_events.c.status < 500, usage_events.c.request_id.startswith(request_prefix)
    )
    with gate.store.read() as conn:
        return int(conn.scalar(query))


def test_admit_and_complete_write_one_usage_event(gate):
    key = _key(gate, "tiny")
    adm = gate.admit(key, model="iris", units=3, request_id="req-1")
    assert adm.replay is None and adm.event_id is not None
    assert adm.rate.limit == 1_000 and adm.rate.remaining == 999
    gate.complete(adm, status=200, latency_ms=12.5, response={"predictions": [1, 2, 3]})
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
        gate.admit(key, model="m", units=1, request_id=str(i))
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
    assert statuses == [200] * 5 + [500]


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


def test_an_abandoned_idempotent_request_is_taken_over(gate, clock):
    key = _key(gate, "tiny")
    gate.admit(key, model="m", units=5, request_id="died", idempotency_key="k")  # no complete
    clock.now = T0 + gate_module.IDEMPOTENCY_STALE_S
    retry = gate.admit(key, model="m", units=5, request_id="retry", idempotency_key="k")
    assert retry.replay is None  # the dead attempt's units went back to the quota
    gate.complete(retry, status=200, latency_ms=1.0, response={})
    assert _billable_units(gate) == 5 and _billable_units(gate, "died") == 0


def test_rotated_keys_share_the_account_quota_and_bucket(gate):
    created = gate.create_key("acme", "tiny")
    old = gate.authenticate(created.key)
    new = gate.authenticate(gate.rotate_key(created.record.id, grace_hours=1).key)
    gate.admit(old, model="m", units=3, request_id="a")
    gate.admit(new, model="m", units=2, request_id="b")
    for key in (old, new):
        with pytest.raises(ApiError, match="quota"):
            gate.admit(key, model="m", units=1, request_id="c")
    assert gate.usage(new)["units_used"] == gate.usage(old)["units_used"] == 5
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


def test_sqlite_admission_begins_immediate_and_postgresql_locks_the_row(gate):
    key = _key(gate, "tiny")
    seen: list[str] = []
    event.listen(
        gate.store.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *a: seen.append(statement),
    )
    gate.admit(key, model="m", units=1, request_id="a")
    assert seen[0] == "BEGIN IMMEDIATE"
    lock = gate_module._LOCK_KEY
    assert "FOR UPDATE" in str(lock.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE" not in str(lock.compile(dialect=sqlite.dialect()))


# --------------------------------------------------------------- across processes


def _admit_many(home: str, key: str, barrier, results, n: int) -> None:
    """One "uvicorn worker": its own Gate, `n` admissions at once from a thread pool."""
    g = Gate(PLANS, home=home)
    info = g.authenticate(f"Bearer {key}")

    def one(i: int) -> str:
        try:
            g.admit(info, model="m", units=1, request_id=f"c-{os.getpid()}-{i}")
            return "ok"
        except ApiError as exc:
            return exc.code
        except Exception as exc:  # reported, so the test fails with the reason
            return f"error: {exc!r}"

    barrier.wait()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results.put(list(pool.map(one, range(n))))


def test_quota_holds_across_processes(gate, foundry_home):
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


def test_kill_9_loses_no_acknowledged_usage(foundry_home, tmp_path):
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
    assert Path(foundry_home / "foundry.db").exists()
