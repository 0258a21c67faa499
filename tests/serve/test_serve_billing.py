"""Billing: per-account rows in integer cents whose totals equal the usage events."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from foundry.config.schema import BUILTIN_PLANS, PlanConfig
from foundry.serve import billing
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.store import usage_events

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)


def _ts(day: int, month: int = 11, year: int = 2026, hour: int = 12) -> float:
    return datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


PLANS = {
    **BUILTIN_PLANS,
    # 1,001 overage units at 7 cents per 1k: 7.007 cents, billed 8 (rounded up).
    "odd": PlanConfig(
        price_cents=999, included_units=10, overage_cents_per_1k=7, requests_per_minute=10_000
    ),
}


def _use(gate, clock, key, when, units, status=200):
    clock.now = when
    adm = gate.admit(key, model="m", units=units, request_id=f"r{when}-{units}")
    gate.complete(adm, status=status, latency_ms=1.0)


@pytest.fixture
def month():
    """A month of traffic: three customers on three plans, plus noise around it."""
    clock = Clock(_ts(20, month=10))
    gate = Gate(PLANS, clock=clock)
    acme = gate.authenticate(gate.create_key("acme", "starter").key)
    clock.now = _ts(1)
    beta = gate.authenticate(gate.create_key("beta", "odd").key)
    trial = gate.authenticate(gate.create_key("tina", "trial").key)
    idle = gate.create_key("idle", "pro")  # no traffic: still pays the monthly price
    clock.now = _ts(2, month=10)
    gone = gate.create_key("gone", "pro")
    gate.revoke_key(gone.record.id)  # revoked in October: not billed for November

    _use(gate, clock, acme, _ts(31, month=10, hour=23), 500)  # October
    for day in (1, 5, 9, 30):
        _use(gate, clock, acme, _ts(day, hour=0 if day == 1 else 23), 25_000)
    _use(gate, clock, acme, _ts(15), 1_234, status=500)  # failed: not billed
    _use(gate, clock, acme, _ts(1, month=12, hour=0), 77)  # December
    _use(gate, clock, beta, _ts(3), 11)
    _use(gate, clock, beta, _ts(4), 1_000)
    _use(gate, clock, trial, _ts(6), 40)
    _use(gate, clock, trial, _ts(7), 2, status=422)  # client errors after admission are billed
    return gate, {"acme": acme, "beta": beta, "tina": trial, "idle": idle}


def test_report_rows_and_integer_money(month):
    gate, keys = month
    report = gate.usage_report("2026-11")
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["acme", "beta", "idle", "tina"]  # sorted, "gone" absent

    acme = rows["acme"]  # starter: $49, 100k included, 50 cents per 1k beyond
    assert acme.key == keys["acme"].prefix and acme.plan == "starter"
    assert (acme.requests, acme.units, acme.included_units, acme.overage_units) == (
        4,
        100_000,
        100_000,
        0,
    )
    assert (acme.price_cents, acme.overage_cents, acme.amount_due_cents) == (4_900, 0, 4_900)

    beta = rows["beta"]
    assert (beta.units, beta.overage_units, beta.overage_cents) == (1_011, 1_001, 8)
    assert beta.amount_due_cents == 999 + 8

    assert (rows["tina"].units, rows["tina"].requests, rows["tina"].amount_due_cents) == (42, 2, 0)
    assert (rows["idle"].units, rows["idle"].amount_due_cents) == (0, 19_900)
    for row in report.rows:
        assert all(type(getattr(row, c)) is int for c in billing.COLUMNS[3:])


def test_totals_equal_the_usage_events(month):
    gate, _ = month
    report = gate.usage_report("2026-11")
    for column, total in report.totals.items():
        assert total == sum(getattr(r, column) for r in report.rows)
    with gate.store.read() as conn:
        units, requests = conn.execute(
            select(func.sum(usage_events.c.units), func.count()).where(
                usage_events.c.period == "2026-11", usage_events.c.status < 500
            )
        ).one()
    assert (report.totals["units"], report.totals["requests"]) == (units, requests)
    assert report.totals["amount_due_cents"] == 4_900 + 1_007 + 0 + 19_900
    october = gate.usage_report("2026-10")
    assert {r.name: r.units for r in october.rows} == {"acme": 500, "gone": 0}


def test_overage_above_included_is_rounded_up_per_period():
    plan = BUILTIN_PLANS["starter"]
    assert billing.charge(plan, 100_000).amount_due_cents == 4_900
    assert billing.charge(plan, 100_001).overage_cents == 1  # 0.05 cents → 1
    assert billing.charge(plan, 102_000).overage_cents == 100
    assert billing.charge(plan, 102_001).overage_cents == 101
    big = billing.charge(BUILTIN_PLANS["pro"], 10**12)  # no float rounding at any size
    assert big.overage_cents == (10**12 - 1_000_000) * 30 // 1000


def test_csv_and_json(month):
    gate, _ = month
    report = gate.usage_report("2026-11")
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["name"] for r in rows] == ["acme", "beta", "idle", "tina", ""]
    assert rows[-1]["key"] == "TOTAL" and rows[-1]["amount_due_cents"] == "25807"
    assert {r["period"] for r in rows} == {"2026-11"}
    assert rows[0]["units"] == "100000"
    data = json.loads(report.to_json())
    assert data["period"] == "2026-11" and data["totals"]["units"] == 101_053
    assert [r["name"] for r in data["rows"]] == ["acme", "beta", "idle", "tina"]
    assert data["rows"][1]["overage_cents"] == 8


def test_rotated_keys_are_billed_as_one_account():
    clock = Clock(_ts(3))
    gate = Gate(PLANS, clock=clock)
    created = gate.create_key("acme", "odd")
    old = gate.authenticate(created.key)
    new = gate.authenticate(gate.rotate_key(created.record.id, grace_hours=48).key)
    _use(gate, clock, old, _ts(4), 10)
    _use(gate, clock, new, _ts(5), 1_000)
    (row,) = gate.usage_report("2026-11").rows
    assert (row.key, row.units, row.overage_units, row.amount_due_cents) == (
        new.prefix,
        1_010,
        1_000,
        999 + 7,
    )


def test_periods():
    assert billing.parse_period("2026-11") == "2026-11"
    for bad in ("2026-13", "2026-1", "26-11", "2026/11", "november", "", "2026-00"):
        with pytest.raises(ApiError, match=r"YYYY-MM \(e.g. 2026-11\)") as exc:
            billing.parse_period(bad)
        assert exc.value.param == "period"
    assert billing.period_of(_ts(30, hour=23)) == "2026-11"
    assert billing.period_of(_ts(1, month=12, hour=0)) == "2026-12"
    start, end = billing.period_bounds("2026-12")
    assert (start, end) == (_ts(1, month=12, hour=0), _ts(1, month=1, year=2027, hour=0))
    assert billing.format_cents(123_456) == "$1,234.56"
    assert billing.format_cents(5) == "$0.05"


def test_a_key_on_an_unconfigured_plan_stops_the_report():
    clock = Clock(_ts(3))
    Gate(PLANS, clock=clock).create_key("acme", "odd")
    with pytest.raises(ApiError, match="plan 'odd', which is not configured"):
        Gate(clock=clock).usage_report("2026-11")
