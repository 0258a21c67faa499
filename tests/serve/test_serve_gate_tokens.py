"""Language-model metering in the gate: token reservations settled to what was used, a
tokens-per-minute bucket, and databases created before those columns existed."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from foundry.config.schema import PlanConfig
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.gate_api import AdmitRequest
from foundry.serve.store import usage_events

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc).timestamp()
PLANS = {
    "tokens": PlanConfig(included_units=1_000, hard_limit=True, requests_per_minute=1_000,
                         tokens_per_minute=600),
    "lm": PlanConfig(included_units=1_000, hard_limit=True, requests_per_minute=1_000,
                     max_records_per_request=1),
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def gate(clock):
    g = Gate(PLANS, clock=clock)
    g.start()
    yield g
    g.close()


def _units(gate, event_id):
    with gate.store.read() as conn:
        return conn.execute(
            select(usage_events.c.units, usage_events.c.status).where(
                usage_events.c.id == event_id)
        ).one()


def _admit(gate, bearer, units, tokens, rid):
    [outcome] = gate.admit_many([AdmitRequest(bearer, "gpt", units, rid, tokens=tokens)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def test_a_reservation_is_settled_to_the_tokens_used(gate):
    bearer = f"Bearer {gate.create_key('acme', 'lm').key}"
    key = gate.authenticate(bearer)
    adm = _admit(gate, bearer, units=300, tokens=300, rid="a")  # prompt 44 + max_tokens 256
    assert gate.usage(key)["reserved_units"] == 300  # reserved while generating
    gate.complete(adm, status=200, latency_ms=5.0, units=44 + 17)
    assert tuple(_units(gate, adm.event_id)) == (61, 200)
    assert gate.usage(key)["units_used"] == 61
    # The quota counts what was used: 939 units are left, so a 900 reservation fits.
    _admit(gate, bearer, units=900, tokens=900, rid="b")  # no records limit for tokens
    with pytest.raises(ApiError) as refused:
        _admit(gate, bearer, units=100, tokens=100, rid="c")
    assert refused.value.code == "quota_exceeded"
    with pytest.raises(ValueError, match="reserved"):
        gate.complete(adm, status=200, latency_ms=1.0, units=301)


def test_a_failed_generation_gives_its_whole_reservation_back(gate):
    bearer = f"Bearer {gate.create_key('acme', 'lm').key}"
    adm = _admit(gate, bearer, units=200, tokens=200, rid="a")
    gate.complete(adm, status=500, latency_ms=1.0, units=50)
    assert gate.usage(gate.authenticate(bearer))["units_used"] == 0
    assert _units(gate, adm.event_id).status == 500


def test_tokens_per_minute_bucket(gate, clock):
    bearer = f"Bearer {gate.create_key('acme', 'tokens').key}"
    first = _admit(gate, bearer, units=400, tokens=400, rid="a")
    headers = first.rate.headers()
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert headers["x-ratelimit-remaining-tokens"] == "200"
    with pytest.raises(ApiError) as limited:
        _admit(gate, bearer, units=300, tokens=300, rid="b")
    err = limited.value
    assert err.status == 429 and err.code == "rate_limit_exceeded" and "token" in err.message
    assert err.headers["Retry-After"] == "10"  # 100 missing tokens at 10 per second
    assert err.headers["x-ratelimit-remaining-tokens"] == "200"
    clock.now += 10
    assert _admit(gate, bearer, units=300, tokens=300, rid="c").rate.token_remaining == 0
    with pytest.raises(ApiError) as too_big:
        _admit(gate, bearer, units=700, tokens=700, rid="d")
    assert too_big.value.status == 400 and too_big.value.param == "max_tokens"
    # Requests without tokens (a tabular model on the same key) skip the token bucket.
    assert _admit(gate, bearer, units=1, tokens=0, rid="e").rate.token_limit is None


@pytest.mark.sqlite_only  # PostgreSQL: tests/test_migrations.py
def test_an_older_database_gets_the_new_columns(foundry_home, clock):
    foundry_home.mkdir(parents=True, exist_ok=True)
    db = foundry_home / "foundry.db"
    with sqlite3.connect(db) as conn:  # api_keys as the first release created it
        conn.execute(
            "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, "
            "prefix VARCHAR(16) NOT NULL, key_hash VARCHAR(64) NOT NULL UNIQUE, "
            "plan VARCHAR(64) NOT NULL, models JSON, created_at FLOAT NOT NULL, "
            "expires_at FLOAT, revoked_at FLOAT, rotated_to INTEGER, grace_until FLOAT, "
            "account_id INTEGER, rate_tokens FLOAT NOT NULL, rate_updated FLOAT NOT NULL, "
            "used_period VARCHAR(7), used_units BIGINT NOT NULL)"
        )
    gate = Gate(PLANS, clock=clock)
    try:
        bearer = f"Bearer {gate.create_key('acme', 'tokens').key}"
        assert _admit(gate, bearer, units=10, tokens=10, rid="a").rate.token_remaining == 590
    finally:
        gate.close()
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    assert {"tpm_tokens", "tpm_updated"} <= columns
