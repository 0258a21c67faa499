"""Usage and what it costs, per period (a UTC calendar month, `YYYY-MM`).

For one account (a key and the keys rotated from it) in one period:

    units        = sum of `units` over its settled usage events with status < 500
                   (an admitted request is a reservation, status RESERVED = 600, until its
                   answer is written; one whose process died is VOIDED = 601: neither is
                   billed)
    overage      = max(0, units - plan.included_units)
    overage cost = ceil(overage × plan.overage_cents_per_1k / 1000)     integer cents
    amount due   = plan.price_cents + overage cost

Every account that could be used during the period is billed its monthly price, used or
not (no proration). Money is integer cents throughout: no float ever touches it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, select

import foundry.crypto as crypto
from foundry.config.schema import PlanConfig
from foundry.serve.errors import ApiError
from foundry.serve.store import RESERVED, VOIDED, ServeStore, api_keys, usage_events

_PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def period_of(ts: float) -> str:
    """The period (`YYYY-MM`, UTC) of an epoch time."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m")


def parse_period(text: str) -> str:
    """`text` if it is a period like `2026-11`; ApiError 400 naming the format if not."""
    text = (text or "").strip()
    if not _PERIOD_RE.match(text):
        raise ApiError(
            400,
            "invalid_field",
            f"period must be a month as YYYY-MM (e.g. 2026-11), got {text!r}",
            param="period",
        )
    return text


def period_bounds(period: str) -> tuple[float, float]:
    """Epoch seconds of the period's first instant and of the next period's first."""
    year, month = (int(p) for p in parse_period(period).split("-"))
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
    return start.timestamp(), end.timestamp()


def overage_cents(overage_units: int, plan: PlanConfig) -> int:
    """ceil(overage_units × overage_cents_per_1k / 1000), in integers."""
    return -(-overage_units * plan.overage_cents_per_1k // 1000)


@dataclass(frozen=True)
class Charge:
    """One account's bill for one period; every amount in integer cents."""

    units: int
    included_units: int
    overage_units: int
    price_cents: int
    overage_cents: int
    amount_due_cents: int


def charge(plan: PlanConfig, units: int) -> Charge:
    over = max(0, units - plan.included_units)
    cost = overage_cents(over, plan)
    return Charge(
        units=units,
        included_units=plan.included_units,
        overage_units=over,
        price_cents=plan.price_cents,
        overage_cents=cost,
        amount_due_cents=plan.price_cents + cost,
    )


@dataclass(frozen=True)
class ReportRow:
    """One account in a period: `key` is the prefix of its current key."""

    key: str
    name: str
    plan: str
    requests: int
    units: int
    included_units: int
    overage_units: int
    price_cents: int
    overage_cents: int
    amount_due_cents: int


COLUMNS = [f.name for f in fields(ReportRow)]
_SUMMED = COLUMNS[3:]  # requests ... amount_due_cents


@dataclass(frozen=True)
class UsageReport:
    period: str
    rows: list[ReportRow]
    totals: dict[str, int]
    """Sums of the rows' integer columns (`requests`, `units`, ..., `amount_due_cents`)."""
    voided: dict[str, int] = field(default_factory=lambda: {"requests": 0, "units": 0})
    """Requests admitted in the period whose process died before settling them (never
    billed; some may have been answered): `requests` and `units`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "rows": [asdict(r) for r in self.rows],
            "totals": dict(self.totals),
            "voided": dict(self.voided),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One line per account then a `TOTAL` line; amounts in cents."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["period", *COLUMNS])
        for row in self.rows:
            writer.writerow([self.period, *(getattr(row, c) for c in COLUMNS)])
        writer.writerow([self.period, "TOTAL", "", "", *(self.totals[c] for c in _SUMMED)])
        return out.getvalue()


def account_usage(store: ServeStore, account_id: int, period: str) -> tuple[int, int, int]:
    """(requests, billable units, units reserved by requests in flight) of one account in
    a period. Billable: settled (answered) with status < 500; the reservations count
    against a hard quota but are not billed until their answer is written."""
    account = func.coalesce(api_keys.c.account_id, api_keys.c.id)
    billed = usage_events.c.status < 500
    query = (
        select(
            func.count(usage_events.c.id).filter(billed),
            func.coalesce(func.sum(usage_events.c.units).filter(billed), 0),
            func.coalesce(func.sum(usage_events.c.units).filter(
                usage_events.c.status == RESERVED), 0),
        )
        .select_from(usage_events.join(api_keys, api_keys.c.id == usage_events.c.key_id))
        .where(usage_events.c.period == period, account == account_id)
    )
    with store.read() as conn:
        requests, units, reserved = conn.execute(query).one()
    return int(requests), int(units), int(reserved)


def usage_report(store: ServeStore, plans: dict[str, PlanConfig], period: str) -> UsageReport:
    """Per account: requests, units, included, overage and amount due in `period`.

    The `units` total equals the sum of the period's billable usage events exactly.
    ApiError 400 for a malformed period, 500 `unknown_plan` if a billed key's plan is not
    in `plans` (pass the serving config's plans).
    """
    start, end = period_bounds(period)
    account = func.coalesce(api_keys.c.account_id, api_keys.c.id).label("account")
    used = (
        select(
            account,
            func.count(usage_events.c.id).label("requests"),
            func.sum(usage_events.c.units).label("units"),
        )
        .select_from(usage_events.join(api_keys, api_keys.c.id == usage_events.c.key_id))
        .where(and_(usage_events.c.period == period, usage_events.c.status < 500))
        .group_by(account)
    )
    with store.read() as conn:
        usage = {r.account: (int(r.requests), int(r.units)) for r in conn.execute(used)}
        keys = conn.execute(select(api_keys).order_by(api_keys.c.id)).all()
        voided = conn.execute(
            select(func.count(usage_events.c.id), func.coalesce(func.sum(usage_events.c.units), 0))
            .where(usage_events.c.period == period, usage_events.c.status == VOIDED)
        ).one()
    chains: dict[int, list[Any]] = {}
    for key in keys:
        chains.setdefault(key.account_id or key.id, []).append(key)
    rows = []
    for account_id, chain in chains.items():
        if account_id not in usage and not any(_active(k, start, end) for k in chain):
            continue
        current = chain[-1]  # the newest key of the chain
        name = crypto.decrypt_field(current.name, what=f"the name of key {current.prefix}")
        plan = plans.get(current.plan)
        if plan is None:
            raise ApiError(
                500,
                "unknown_plan",
                f"key {current.prefix} ({name}) is on plan {current.plan!r}, which is "
                f"not configured (plans: {', '.join(plans)}); pass the serving config",
            )
        requests, units = usage.get(account_id, (0, 0))
        bill = charge(plan, units)
        rows.append(
            ReportRow(
                key=current.prefix,
                name=name,
                plan=current.plan,
                requests=requests,
                units=units,
                included_units=bill.included_units,
                overage_units=bill.overage_units,
                price_cents=bill.price_cents,
                overage_cents=bill.overage_cents,
                amount_due_cents=bill.amount_due_cents,
            )
        )
    rows.sort(key=lambda r: (r.name, r.key))
    totals = {c: sum(getattr(r, c) for r in rows) for c in _SUMMED}
    return UsageReport(period=period, rows=rows, totals=totals,
                       voided={"requests": int(voided[0]), "units": int(voided[1])})


def _active(key: Any, start: float, end: float) -> bool:
    """Could the key be used at some instant of [start, end)?"""
    return (
        key.created_at < end
        and (key.revoked_at is None or key.revoked_at > start)
        and (key.expires_at is None or key.expires_at > start)
    )


def format_cents(cents: int) -> str:
    """`4950` → `$49.50` (integer arithmetic)."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"
