"""The gate every billable request passes (docs/SERVING.md, "Admission is one transaction").

    gate.start()                                                       once per process
    key = gate.authenticate(request.headers.get("authorization"))    401 / 403
    adm = gate.admit(key, model=..., units=..., request_id=...,        403 / 409 / 422 / 429
                     idempotency_key=..., request_hash=...)
    if adm.replay: answer adm.replay (nothing charged, do not call complete)
    ... run the model ...
    gate.store_response(adm, 200, body)          with an Idempotency-Key, before answering
    ... write the answer ...
    gate.complete(adm, status=200, latency_ms=...)                    after answering

`admit` is one database transaction, committed before it returns: it *reserves* the
request's units (a usage event with status RESERVED, held by this process's lease), so a
hard quota holds whatever the concurrency and `kill -9` never loses a reservation. It
reads and writes the account's key row inside that transaction (SQLite: `BEGIN
IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE`, all of a group's rows at its start, in
id order), so rate limits and quotas hold across threads, uvicorn workers and machines
sharing the database. `complete`, called once the answer is written, *settles* the
reservation (status 200: billed); a process that dies first leaves its reservations open,
and the next process to sweep voids them (foundry.serve.leases): never billed for an
answer that was not written.

Quota: hard-limit plans refuse a request whose units would take the period's billable
units past `included_units`. The count is a counter on the account row (`used_units` for
`used_period`), changed in the same transactions that write usage events: +units on
admit (the reservation), -units when `complete` reports a 5xx or a sweep voids the
reservation. Billing itself sums the settled events.

Rate limit: a token bucket per account with capacity `requests_per_minute`, refilled at
rpm/60 tokens per second; each admitted request takes one token.

Cost: a plain admission is BEGIN IMMEDIATE, three statements (read the key row, update
its bucket and counter, insert the event) and COMMIT, run on a raw DBAPI connection kept
between requests with SQL compiled once per dialect (`ServeStore.fast_write` / `.sql`);
a plain success's `complete` only buffers its settlement, which the next admission's
transaction writes. About 0.04 ms per request in all on SQLite, against 0.2 ms through
SQLAlchemy's execution layer with a second commit.
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Integer, Row, any_, bindparam, delete, insert, select, union, update
from sqlalchemy.types import ARRAY

import foundry.crypto as crypto
from foundry.config.schema import BUILTIN_PLANS, PlanConfig
from foundry.serve import billing, keys
from foundry.serve.errors import ApiError
from foundry.serve.gate_api import Admission, AdmitRequest, KeyInfo, RateState, StoredResponse
from foundry.serve.leases import Lease
from foundry.serve.settlements import PendingSettlements, flush_at_exit
from foundry.serve.store import (
    RESERVED,
    ServeStore,
    StoreBusy,
    api_keys,
    idempotency,
    usage_events,
)

AUTH_CACHE_S = 2.0
"""Seconds (monotonic) `authenticate` reuses a key's row. `admit` re-reads the row in its
transaction, so a key revoked by another process is refused by the next admission at
once; only routes that authenticate without admitting may lag this long."""
_AUTH_CACHE_MAX = 10_000
_MAX_IDEMPOTENCY_KEY = 255

log = logging.getLogger(__name__)


# The per-request statements, built once. `ServeStore.sql` compiles each for the database
# once (`?` params on SQLite, `%(name)s` and FOR UPDATE on PostgreSQL) and `admit` /
# `complete` run them on a raw DBAPI cursor: no per-statement SQLAlchemy machinery.
class _KeyRow(NamedTuple):
    """What admission reads of a key row (and of its account's row)."""

    id: int
    account_id: int | None
    prefix: str
    revoked_at: float | None
    rotated_to: int | None
    grace_until: float | None
    expires_at: float | None
    rate_tokens: float
    rate_updated: float
    used_period: str | None
    used_units: int
    tpm_tokens: float | None
    """Tokens-per-minute bucket (language models); NULL: full."""
    tpm_updated: float | None


class _IdempotentRow(NamedTuple):
    id: int
    request_hash: str | None
    event_id: int | None
    status: int | None
    response_json: str | None
    created_at: float


_LOCK_KEY = (
    select(*(api_keys.c[name] for name in _KeyRow._fields))
    .where(api_keys.c.id == bindparam("b_id"))
    .with_for_update()
)
_GROUP_IDS = bindparam("b_ids", type_=ARRAY(Integer))
_ASKED = api_keys.alias("asked")
_LOCK_GROUP = (
    select(*(api_keys.c[name] for name in _KeyRow._fields))
    .where(
        api_keys.c.id.in_(
            union(
                select(_ASKED.c.id).where(_ASKED.c.id == any_(_GROUP_IDS)),
                select(_ASKED.c.account_id).where(_ASKED.c.id == any_(_GROUP_IDS)),
            )
        )
    )
    .order_by(api_keys.c.id)
    .with_for_update(of=api_keys)
)
"""PostgreSQL, first in a group's transaction: lock the rows of the group's keys and of
their accounts in one statement, in id order. Every admitting transaction takes its row
locks in that one order, so two workers' groups wait for each other but never deadlock
(a rotated key's account row has a lower id than the key: `_LOCK_KEY` alone would lock
the key first). `account_id` never changes once a key exists, so the subquery's
unlocked read of it is safe."""
_ACCOUNT_OF = select(api_keys.c.id, api_keys.c.account_id).where(api_keys.c.id == bindparam("b_id"))
_FIND_IDEMPOTENT = select(*(idempotency.c[name] for name in _IdempotentRow._fields)).where(
    idempotency.c.key_id == bindparam("b_account"),
    idempotency.c.idempotency_key == bindparam("b_ikey"),
)
_TAKE = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("b_account"))
    .values(
        rate_tokens=bindparam("b_tokens"),
        rate_updated=bindparam("b_now"),
        used_period=bindparam("b_period"),
        used_units=bindparam("b_used"),
        tpm_tokens=bindparam("b_tpm"),
        tpm_updated=bindparam("b_tpm_now"),
    )
)
_REFUND = (
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("b_account"),
        api_keys.c.used_period == bindparam("b_period"),
    )
    .values(used_units=api_keys.c.used_units - bindparam("b_units"))
)
# latency_ms starts NULL; status RESERVED until `complete` settles it.
_INSERT_EVENT = insert(usage_events).values(
    key_id=bindparam("b_key"),
    model=bindparam("b_model"),
    units=bindparam("b_units"),
    status=RESERVED,
    request_id=bindparam("b_request"),
    created_at=bindparam("b_now"),
    period=bindparam("b_period"),
    idempotency_key=bindparam("b_ikey"),
    lease_id=bindparam("b_lease"),
)
_INSERT_EVENT_RETURNING = _INSERT_EVENT.returning(usage_events.c.id)
_SETTLE = (
    update(usage_events)
    .where(usage_events.c.id == bindparam("b_id"), usage_events.c.status == RESERVED)
    .values(status=bindparam("b_status"), latency_ms=bindparam("b_latency"))
)
"""Settle a reservation (or fail it, status >= 500). Only an open reservation: a voided
one stays voided (its units went back to the quota), and nothing is settled twice."""
_SETTLE_UNITS = (
    update(usage_events)
    .where(usage_events.c.id == bindparam("b_id"), usage_events.c.status == RESERVED)
    .values(
        status=bindparam("b_status"),
        latency_ms=bindparam("b_latency"),
        units=bindparam("b_units"),
    )
)
"""A request whose admission reserved more than it used (a language model's prompt +
max_tokens) is settled to what it used."""
_ABANDON = (
    update(usage_events)
    .where(usage_events.c.id == bindparam("b_id"), usage_events.c.status < 500)
    .values(status=500)
)
"""An in-flight Idempotency-Key's event written before reservations existed (status 200
at admission, no lease): its request died unanswered, so it is not billed."""
_EVENT_UNITS = select(usage_events.c.units, usage_events.c.period, usage_events.c.status).where(
    usage_events.c.id == bindparam("b_id")
)
_EVENT = select(usage_events).where(usage_events.c.id == bindparam("b_id"))
_INSERT_IDEMPOTENT = insert(idempotency).values(
    key_id=bindparam("b_account"),
    idempotency_key=bindparam("b_ikey"),
    request_hash=bindparam("b_hash"),
    event_id=bindparam("b_event"),
    created_at=bindparam("b_now"),
)
_TAKE_OVER = (
    update(idempotency)
    .where(idempotency.c.id == bindparam("b_id"))
    .values(
        event_id=bindparam("b_event"),
        created_at=bindparam("b_now"),
        request_hash=bindparam("b_hash"),
    )
)
_STORE_RESPONSE = (
    update(idempotency)
    .where(
        idempotency.c.key_id == bindparam("b_account"),
        idempotency.c.idempotency_key == bindparam("b_ikey"),
        idempotency.c.event_id == bindparam("b_event"),
    )
    .values(status=bindparam("b_status"), response_json=bindparam("b_body"))
)
_FORGET = delete(idempotency).where(
    idempotency.c.key_id == bindparam("b_account"),
    idempotency.c.idempotency_key == bindparam("b_ikey"),
    idempotency.c.event_id == bindparam("b_event"),
)
HOT_STATEMENTS = (
    _LOCK_KEY,
    _FIND_IDEMPOTENT,
    _TAKE,
    _REFUND,
    _INSERT_EVENT,
    _INSERT_EVENT_RETURNING,
    _SETTLE,
    _SETTLE_UNITS,
    _ABANDON,
    _EVENT_UNITS,
    _INSERT_IDEMPOTENT,
    _TAKE_OVER,
    _STORE_RESPONSE,
    _FORGET,
)
"""Every statement `admit` / `complete` / `flush` run raw on both databases (the tests
compile them all); `_LOCK_GROUP`, PostgreSQL's only, is compiled by its own test."""


@dataclass(frozen=True)
class GateAdmission(Admission):
    """An Admission plus what `complete` needs without another query."""

    account_id: int = 0
    units: int = 0
    period: str = ""
    idempotency_key: str | None = None


@dataclass(frozen=True)
class _CachedKey:
    info: KeyInfo
    row: Row[Any]
    fresh_until: float


class Gate:
    """Keys, plans, rate limits, quotas and metering over the database.

    plans: plans by name (default the built-ins; pass `ServeConfig.all_plans()`).
    home / url: the database, as for the registry (FOUNDRY_DATABASE_URL or
    `<home>/foundry.db`). clock: epoch seconds; tests inject a fake one. Thread-safe;
    every process (uvicorn worker) makes its own Gate.
    """

    def __init__(
        self,
        plans: dict[str, PlanConfig] | None = None,
        *,
        home: Path | str | None = None,
        url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plans: dict[str, PlanConfig] = dict(BUILTIN_PLANS if plans is None else plans)
        self.store = ServeStore(home=home, url=url)
        self.clock = clock
        self._auth_cache: dict[str, _CachedKey] = {}
        """By Authorization header."""
        self._period: tuple[float, float, str] = (0.0, 0.0, "")
        """(start, end, `YYYY-MM`) of the billing period of the last admission."""
        self._pending = PendingSettlements()
        self.lease = Lease(self.store)
        """This process's lease: held by every reservation it makes (foundry.serve.leases)."""
        # Settlements still buffered when the Gate is dropped or the interpreter exits are
        # written then, and the lease released (a kill -9 leaves both to the next sweep:
        # the unsettled reservations are voided, never billed).
        self._finalizer = weakref.finalize(
            self, flush_at_exit, self.store, self._pending, self.lease, _write_settlements
        )

    def __repr__(self) -> str:
        return f"Gate(plans={list(self.plans)}, store={self.store!r})"

    def start(self) -> None:
        """Register this process's lease and void what dead processes left reserved (then
        again every second, on the lease's thread). Admissions call it when needed; a
        server calls it at startup, so a crash's reservations are voided (and their quota
        given back) as soon as the next process starts."""
        self.lease.start()

    # -- per request ------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> KeyInfo:
        """The key of an `Authorization: Bearer fdy_...` header (a bare key works too).

        ApiError 401 `missing_api_key` / `invalid_api_key`, 403 `key_revoked` (also a
        rotated key after its grace period), `key_expired`, `unknown_plan`.
        """
        info = self.authenticate_cached(authorization)
        if info is not None:
            return info
        token = _token_of(authorization)
        with self.store.read() as conn:
            row = keys.find_by_hash(conn, token)
        if row is None:
            raise _invalid_key()
        cached = _CachedKey(self._key_info(row), row, time.monotonic() + AUTH_CACHE_S)
        if len(self._auth_cache) >= _AUTH_CACHE_MAX:
            self._auth_cache.clear()
        self._auth_cache[authorization or ""] = cached
        _check_usable(cached.row, self.clock())
        return cached.info

    def authenticate_cached(self, authorization: str | None) -> KeyInfo | None:
        """`authenticate` without the database: None when the key's row is not cached (or
        is older than AUTH_CACHE_S). Refusals that need no row (401) are raised."""
        # Keyed by the header as sent: a hit costs one dict lookup, no parsing or hashing
        # (a key sent two ways, `Bearer k` and `k`, is simply cached twice).
        cached = self._auth_cache.get(authorization or "")
        if cached is None or time.monotonic() >= cached.fresh_until:
            _token_of(authorization)  # the 401s that need no row
            return None
        _check_usable(cached.row, self.clock())
        return cached.info

    def admit(
        self,
        key: KeyInfo,
        *,
        model: str,
        units: int,
        request_id: str,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Admission:
        """Let one request of `units` records to `model` in, or refuse it; one transaction.

        In order: the key is still usable (revocation seen at once, whatever caches say),
        idempotency replay, token bucket, quota, then the usage event (status 200 until
        `complete`). `request_hash` identifies the body, so an Idempotency-Key reused with
        another body is refused; a replay takes no rate token and charges nothing.
        Errors: 400 `invalid_field` (units, Idempotency-Key), 403 `model_not_allowed` /
        `key_revoked` / `key_expired`, 409 `idempotency_in_progress`, 422
        `idempotency_key_reused`, 429 `rate_limit_exceeded` / `quota_exceeded` (with
        Retry-After and x-ratelimit-*).
        """
        request = AdmitRequest(None, model, units, request_id, idempotency_key, request_hash)
        _check_request(key, request)
        outcome = self._admit_group([(0, key, request)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def admit_many(self, requests: list[AdmitRequest]) -> list[Admission | Exception]:
        """`authenticate` + the plan's records limit + `admit` for each request, every
        admission in one transaction: one commit for the group instead of one each (group
        commit). The outcome of request i is at i: its Admission, or the ApiError that
        refuses it. The requests are admitted in order, each seeing the writes of those
        before it, exactly as one `admit` call after another would. On PostgreSQL the
        transaction first locks every row it will write, in id order (`_LOCK_GROUP`), so
        groups of several threads or workers that share keys never deadlock.

        A database error fails only the transaction: the group is then admitted one by
        one, so each request gets its own outcome (an exception that is not an ApiError
        when the database itself fails it)."""
        outcomes, group = self._prepare(requests, self.authenticate)
        if len(group) > 1:
            try:
                admitted = self._admit_group(group)
            except Exception:
                log.warning("admitting %d requests in one transaction failed; admitting "
                            "them one by one", len(group), exc_info=True)
                admitted = [self._admit_alone(member) for member in group]
        else:
            admitted = [self._admit_alone(member) for member in group]
        for (i, _, _), outcome in zip(group, admitted, strict=True):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]  # every slot is set

    def try_admit_many(self, requests: list[AdmitRequest]) -> list[Admission | Exception] | None:
        """`admit_many` for a caller that must not block (the event loop): None, having
        done nothing, when that would mean waiting: a key not in the authentication cache
        (a database read) or the write lock held by another connection (SQLite only; a
        server database always answers None). The commit does not checkpoint the WAL: call
        `checkpoint()` from a thread now and then."""
        if not self.store.is_sqlite:
            return None
        outcomes, group = self._prepare(requests, self.authenticate_cached)
        if group is None:
            return None
        if group:
            try:
                admitted = self._admit_group(group, wait=False)
            except StoreBusy:
                return None
            for (i, _, _), outcome in zip(group, admitted, strict=True):
                outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]  # every slot is set

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (see `try_admit_many`); never waits."""
        self.store.checkpoint()

    def _prepare(
        self,
        requests: list[AdmitRequest],
        authenticate: Callable[[str | None], KeyInfo | None],
    ) -> tuple[list[Any], Any]:
        """Authenticate each request and run the checks that need no transaction:
        (outcomes with the refusals filled in, [(index, key, request)] to admit), or
        (_, None) when `authenticate` could not tell (a cache miss)."""
        outcomes: list[Any] = [None] * len(requests)
        group: list[tuple[int, KeyInfo, AdmitRequest]] = []
        for i, request in enumerate(requests):
            try:
                key = authenticate(request.authorization)
                if key is None:
                    return outcomes, None
                if not request.tokens:  # language-model requests count tokens, not records
                    _check_records(key, request.units)
                _check_request(key, request)
            except ApiError as exc:
                outcomes[i] = exc
            else:
                group.append((i, key, request))
        return outcomes, group

    def _admit_alone(
        self, member: tuple[int, KeyInfo, AdmitRequest]
    ) -> Admission | Exception:
        try:
            return self._admit_group([member])[0]
        except Exception as exc:
            return exc

    def _admit_group(
        self, group: list[tuple[int, KeyInfo, AdmitRequest]], *, wait: bool = True
    ) -> list[GateAdmission | ApiError]:
        """One write transaction admitting `group` in order: each member's Admission or
        the ApiError refusing it. Raises (rolling everything back) on a database error;
        wait=False: StoreBusy when the write lock is taken (see `ServeStore.fast_write`)."""
        lease = self.lease.current()
        if lease is None:
            if not wait:  # registering is a transaction of its own: not on the loop
                raise StoreBusy("no lease yet")
            lease = self.lease.start()
        now = self.clock()
        period = self._period_of(now)
        store, pending = self.store, self._pending
        flushed: list[dict[str, Any]] | None = None
        outcomes: list[GateAdmission | ApiError] = []
        try:
            with store.fast_write(wait=wait) as cur:
                # SQLite: BEGIN IMMEDIATE took the database's one write lock already.
                locked = None if store.is_sqlite else self._lock_group(cur, group)
                for _, key, request in group:
                    try:
                        outcomes.append(
                            self._admit_in(cur, key, request, now, period, lease,
                                           locked=locked)
                        )
                    except ApiError as exc:
                        # Every refusal comes before the request's first write, so the
                        # transaction holds nothing of it: the others go on.
                        outcomes.append(exc)
                if pending.rows:  # buffered settlements ride along in this transaction
                    flushed = pending.take()
                    if flushed:
                        store.sql(_SETTLE).executemany(cur, flushed)
        except BaseException:
            if flushed:
                pending.put_back(flushed)
            raise
        return outcomes

    def _lock_group(
        self, cur: Any, group: list[tuple[int, KeyInfo, AdmitRequest]]
    ) -> dict[int, tuple[Any, ...]]:
        """PostgreSQL: lock the rows of the group's keys and accounts in id order
        (`_LOCK_GROUP`, one round trip); the rows as read, by id, for `_admit_in`."""
        ids = sorted({key.id for _, key, _ in group})
        rows = self.store.sql(_LOCK_GROUP).execute(cur, {"b_ids": ids}).fetchall()
        return {row[0]: row for row in rows}

    def _admit_in(
        self,
        cur: Any,
        key: KeyInfo,
        request: AdmitRequest,
        now: float,
        period: str,
        lease: int,
        *,
        locked: dict[int, tuple[Any, ...]] | None = None,
    ) -> GateAdmission:
        """`admit` inside an open write transaction. Every check (and so every ApiError)
        comes before the first write.

        locked: rows `_lock_group` read at the start of the transaction, by id. A row is
        taken out when a request first uses it (as its key or its account); only such a
        request writes it (the account's bucket and counter), so a row still in `locked`
        is as the transaction sees it, and a row taken out is read again, with the
        group's writes."""
        store = self.store
        plan = key.plan_config
        bucket = _Bucket(plan.requests_per_minute)
        units, idempotency_key = request.units, request.idempotency_key
        found = locked.pop(key.id, None) if locked else None
        if found is None:
            found = store.sql(_LOCK_KEY).execute(cur, {"b_id": key.id}).fetchone()
        if found is None:
            raise _invalid_key()
        row = _KeyRow._make(found)
        _check_usable(row, now)
        account_id = row.account_id or row.id
        account = row
        if account_id != row.id:
            found = locked.pop(account_id, None) if locked else None
            if found is None:
                found = store.sql(_LOCK_KEY).execute(cur, {"b_id": account_id}).fetchone()
            if found is None:
                raise _invalid_key()
            account = _KeyRow._make(found)
        tokens = bucket.refill(account.rate_tokens, account.rate_updated, now)
        used = account.used_units if account.used_period == period else 0

        stale: _IdempotentRow | None = None
        refund = 0
        if idempotency_key is not None:
            found = (
                store.sql(_FIND_IDEMPOTENT)
                .execute(cur, {"b_account": account_id, "b_ikey": idempotency_key})
                .fetchone()
            )
            if found is not None:
                stored = _IdempotentRow._make(found)
                if (
                    request.request_hash
                    and stored.request_hash
                    and stored.request_hash != request.request_hash
                ):
                    raise ApiError(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was already used with a different "
                        "request body; use a new key for a new request",
                        param="Idempotency-Key",
                    )
                if stored.status is not None:
                    return GateAdmission(
                        key=key,
                        event_id=None,
                        rate=bucket.state(tokens),
                        replay=StoredResponse(
                            stored.status,
                            json.loads(crypto.decrypt_field(stored.response_json) or "null"),
                        ),
                        account_id=account_id,
                    )
                refund = self._units_to_abandon(cur, stored, period)
                if refund is None:
                    raise ApiError(
                        409,
                        "idempotency_in_progress",
                        "a request with this Idempotency-Key is still being "
                        "processed; retry shortly to get its result",
                        param="Idempotency-Key",
                        headers={"Retry-After": "1"},
                    )
                stale = stored

        if tokens < 1:
            wait = max(1, math.ceil((1 - tokens) / bucket.rate))
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"rate limit of {plan.requests_per_minute} requests per minute "
                f"reached for key {key.prefix}; retry in {wait} s",
                headers={"Retry-After": str(wait), **bucket.state(tokens).headers()},
            )
        tpm_tokens, tpm_updated = account.tpm_tokens, account.tpm_updated
        rate = bucket.state(tokens - 1)
        if plan.tokens_per_minute is not None and request.tokens:
            tpm_tokens, rate = self._take_tokens(key, account, request.tokens, now, rate)
            tpm_updated = now
        used -= refund
        if plan.hard_limit and used + units > plan.included_units:
            _, next_period = billing.period_bounds(period)
            wait = max(1, math.ceil(next_period - now))
            raise ApiError(
                429,
                "quota_exceeded",
                f"quota exceeded: {used} of the {plan.included_units} units of plan "
                f"{key.plan!r} used in {period} and this request needs {units}; it "
                f"resets at {keys.iso(next_period)}. Upgrade the plan for more.",
                headers={
                    "Retry-After": str(wait),
                    "x-should-retry": "false",
                    **bucket.state(tokens).headers(),
                },
            )

        # -- writes: nothing below refuses the request --
        if refund:
            store.sql(_ABANDON).execute(cur, {"b_id": stale.event_id})
        store.sql(_TAKE).execute(
            cur,
            {
                "b_account": account_id,
                "b_tokens": tokens - 1,
                "b_now": now,
                "b_period": period,
                "b_used": used + units,
                "b_tpm": tpm_tokens,
                "b_tpm_now": tpm_updated,
            },
        )
        event = {
            "b_key": key.id,
            "b_model": request.model,
            "b_units": units,
            "b_request": request.request_id[:100],
            "b_now": now,
            "b_period": period,
            "b_ikey": idempotency_key,
            "b_lease": lease,
        }
        if store.returning_ids:
            event_id = store.sql(_INSERT_EVENT_RETURNING).execute(cur, event).fetchone()[0]
        else:
            event_id = store.sql(_INSERT_EVENT).execute(cur, event).lastrowid
        if stale is not None:
            store.sql(_TAKE_OVER).execute(
                cur,
                {
                    "b_id": stale.id,
                    "b_event": event_id,
                    "b_now": now,
                    "b_hash": request.request_hash,
                },
            )
        elif idempotency_key is not None:
            store.sql(_INSERT_IDEMPOTENT).execute(
                cur,
                {
                    "b_account": account_id,
                    "b_ikey": idempotency_key,
                    "b_hash": request.request_hash,
                    "b_event": event_id,
                    "b_now": now,
                },
            )
        return GateAdmission(
            key=key,
            event_id=int(event_id),
            rate=rate,
            account_id=account_id,
            units=units,
            period=period,
            idempotency_key=idempotency_key,
        )

    def complete(
        self,
        admission: Admission,
        *,
        status: int,
        latency_ms: float,
        response: Any | None = None,
        units: int | None = None,
    ) -> None:
        """Settle an admitted request: call it once the answer is written (a request is
        billed only when it was answered). `units`: what it used, when its admission
        reserved more (a language model reserves prompt + max_tokens and uses prompt +
        the tokens it generated): the event and the quota counter are set to it.
        `status >= 500`: not billed, its units go back to the quota and its
        Idempotency-Key is freed so a retry runs again; committed before this returns (so
        before the error is answered). `response` (JSON-able), with an Idempotency-Key
        whose answer `store_response` did not store: stored now, in the same transaction.
        A replay admission (event_id None) needs no completion: this does nothing.

        A success that changes no units and stores nothing (the usual case) only needs
        its status written, and that is buffered: written in one batch with others inside
        the next admission's transaction, by a background thread within 2 x
        `settlements.SETTLE_FLUSH_S` when no admission comes along, and by `flush` / `close`. So it
        never waits on the database (the app calls it on its event loop). A crash before
        that write leaves the reservation open, and the next sweep voids it: an answer
        given but not billed, counted (status VOIDED), never the reverse."""
        if admission.event_id is None:
            return
        event = admission.event_id
        if isinstance(admission, GateAdmission) and admission.period:
            account_id, reserved = admission.account_id, admission.units
            period, ikey = admission.period, admission.idempotency_key
        else:
            account_id, reserved, period, ikey = self._event_facts(event)
        if units is not None and not 0 <= units <= reserved:
            raise ValueError(f"units must be between 0 and the {reserved} reserved, got {units}")
        settle_units = units is not None and units != reserved and status < 500
        store_body = ikey is not None and response is not None and status < 500
        if status < 500 and not settle_units and not store_body:
            if self._pending.add({"b_id": event, "b_status": status, "b_latency": latency_ms}):
                self._pending.start_flusher(weakref.ref(self))
            return
        store = self.store
        with store.fast_write() as cur:
            values = {"b_id": event, "b_status": status, "b_latency": latency_ms}
            if settle_units:
                values["b_units"] = units
                settled = store.sql(_SETTLE_UNITS).execute(cur, values).rowcount
                give_back = reserved - (units or 0)
            else:
                settled = store.sql(_SETTLE).execute(cur, values).rowcount
                give_back = reserved if status >= 500 else 0
            if not settled:
                log.warning("usage event %s was voided before it was settled (its lease "
                            "was taken for dead): answered, not billed", event)
            if give_back and settled:
                store.sql(_REFUND).execute(
                    cur, {"b_account": account_id, "b_period": period, "b_units": give_back}
                )
            if ikey is None:
                return
            params = {"b_account": account_id, "b_ikey": ikey, "b_event": event}
            if status >= 500:
                store.sql(_FORGET).execute(cur, params)
            elif store_body:
                # The answer holds customer data: encrypted when a key is set.
                body = crypto.encrypt_field(
                    json.dumps(response, separators=(",", ":"), default=str))
                store.sql(_STORE_RESPONSE).execute(
                    cur, {**params, "b_status": status, "b_body": body}
                )

    def store_response(self, admission: Admission, status: int, response: Any) -> None:
        """With an Idempotency-Key: store the answer before it is written, so a retry
        after it is a replay; one transaction. The reservation stays open until
        `complete` (after the answer is written) settles it. Nothing to do without a key."""
        if admission.event_id is None:
            return
        if isinstance(admission, GateAdmission) and admission.period:
            account_id, ikey = admission.account_id, admission.idempotency_key
        else:
            account_id, _, _, ikey = self._event_facts(admission.event_id)
        if ikey is None:
            return
        # The answer holds customer data: encrypted when a key is set.
        body = crypto.encrypt_field(json.dumps(response, separators=(",", ":"), default=str))
        with self.store.fast_write() as cur:
            self.store.sql(_STORE_RESPONSE).execute(
                cur,
                {"b_account": account_id, "b_ikey": ikey, "b_event": admission.event_id,
                 "b_status": status, "b_body": body},
            )

    def flush(self) -> int:
        """Write the buffered settlements now (one transaction); how many. They are put
        back (and written later) if the transaction fails."""
        rows = self._pending.take()
        if not rows:
            return 0
        try:
            _write_settlements(self.store, rows)
        except BaseException:
            self._pending.put_back(rows)
            raise
        return len(rows)

    def usage(self, key: KeyInfo) -> dict[str, Any]:
        """This period's usage of the key's account: units, quota left, what is due."""
        period = billing.period_of(self.clock())
        with self.store.read() as conn:
            row = conn.execute(_ACCOUNT_OF, {"b_id": key.id}).one_or_none()
        if row is None:
            raise _invalid_key()
        self.flush()  # this process's answers settled, so the caller sees them billed
        requests, units, reserved = billing.account_usage(
            self.store, row.account_id or row.id, period
        )
        bill = billing.charge(key.plan_config, units)
        return {
            "key": key.prefix,
            "name": key.name,
            "plan": key.plan,
            "period": period,
            "requests": requests,
            "units_used": units,
            "reserved_units": reserved,
            "included_units": bill.included_units,
            "remaining_units": max(0, bill.included_units - units - reserved),
            "hard_limit": key.plan_config.hard_limit,
            "overage_units": bill.overage_units,
            "amount_due_cents": bill.amount_due_cents,
        }

    # -- administration (the admin routes and `foundry keys` call these) ---------------

    def create_key(
        self,
        name: str,
        plan: str,
        *,
        models: list[str] | None = None,
        expires: str | float | None = None,
    ) -> keys.CreatedKey:
        """A new key; `.key` holds the plaintext, shown this once. See `keys.create_key`."""
        return keys.create_key(
            self.store,
            self.plans,
            name=name,
            plan=plan,
            models=models,
            expires=expires,
            now=self.clock(),
        )

    def list_keys(self) -> list[keys.KeyRecord]:
        return keys.list_keys(self.store, now=self.clock())

    def get_key(self, id_or_prefix: str | int) -> keys.KeyRecord:
        return keys.get_key(self.store, id_or_prefix, now=self.clock())

    def revoke_key(self, id_or_prefix: str | int) -> keys.KeyRecord:
        record = keys.revoke_key(self.store, id_or_prefix, now=self.clock())
        self._auth_cache.clear()
        return record

    def rotate_key(self, id_or_prefix: str | int, grace_hours: float = 24.0) -> keys.CreatedKey:
        created = keys.rotate_key(
            self.store, self.plans, id_or_prefix, grace_hours=grace_hours, now=self.clock()
        )
        self._auth_cache.clear()
        return created

    def usage_report(self, period: str | None = None) -> billing.UsageReport:
        """Billing for `period` (`YYYY-MM`, default this month)."""
        period = billing.parse_period(period) if period else billing.period_of(self.clock())
        self.flush()  # this process's answered requests settled first
        return billing.usage_report(self.store, self.plans, period)

    def close(self) -> None:
        """Write the buffered settlements, stop the threads, release the lease (voiding
        what it still reserves: requests that will not be answered) and connections."""
        self._pending.stop_flusher()
        try:
            self.flush()
            self.lease.release()
        finally:
            self.store.close()

    # -- internals --------------------------------------------------------------------

    def _key_info(self, row: Row[Any]) -> KeyInfo:
        plan = self.plans.get(row.plan)
        if plan is None:
            raise ApiError(
                403,
                "unknown_plan",
                f"key {row.prefix} is on plan {row.plan!r}, which this server does not "
                f"offer (plans: {', '.join(self.plans)}); ask the operator",
            )
        models = list(row.models) if row.models is not None else plan.models
        return KeyInfo(
            id=row.id,
            name=crypto.decrypt_field(row.name, what=f"the name of key {row.prefix}"),
            prefix=row.prefix,
            plan=row.plan,
            plan_config=plan,
            models=list(models) if models is not None else None,
        )

    def _take_tokens(
        self, key: KeyInfo, account: _KeyRow, needed: int, now: float, rate: RateState
    ) -> tuple[float, RateState]:
        """Take `needed` tokens from the account's tokens-per-minute bucket: (tokens left,
        the rate state with the token fields), or the 400 / 429 that refuses it."""
        limit = key.plan_config.tokens_per_minute
        assert limit is not None
        bucket = _Bucket(limit)
        have = bucket.refill(
            bucket.capacity if account.tpm_tokens is None else account.tpm_tokens,
            now if account.tpm_updated is None else account.tpm_updated,
            now,
        )
        if needed > bucket.capacity:
            raise ApiError(
                400,
                "invalid_field",
                f"this request needs {needed} tokens (prompt + max_tokens), more than plan "
                f"{key.plan!r} allows per minute ({limit}); lower max_tokens or shorten the "
                "prompt",
                param="max_tokens",
            )
        state = bucket.state(have)
        if have < needed:
            wait = max(1, math.ceil((needed - have) / bucket.rate))
            limited = RateState(rate.limit, rate.remaining + 1, rate.reset_seconds, limit,
                                state.remaining, state.reset_seconds)
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"token rate limit of {limit} tokens per minute reached for key "
                f"{key.prefix} (this request needs {needed}); retry in {wait} s",
                headers={"Retry-After": str(wait), **limited.headers()},
            )
        left = bucket.state(have - needed)
        return have - needed, RateState(rate.limit, rate.remaining, rate.reset_seconds, limit,
                                        left.remaining, left.reset_seconds)

    def _period_of(self, now: float) -> str:
        """`billing.period_of(now)`, remembered until the period ends."""
        start, end, period = self._period
        if not start <= now < end:
            period = billing.period_of(now)
            start, end = billing.period_bounds(period)
            self._period = (start, end, period)
        return period

    def _units_to_abandon(self, cur: Any, stored: _IdempotentRow, period: str) -> int | None:
        """An Idempotency-Key row whose request has no stored answer: None while that
        request's reservation is open (it is in flight: 409), else the units a takeover
        gives back to this period's counter (read only; `_admit_in` writes).

        A reservation whose process died is voided by the next sweep (every second in
        every serving process, foundry.serve.leases), which frees the key too; an event
        that is not a reservation any more (voided, failed) lets the retry take over at
        once. One written before reservations existed (status 200 at admission) is the
        only case with units to give back."""
        if stored.event_id is None:
            return 0
        old = self.store.sql(_EVENT_UNITS).execute(cur, {"b_id": stored.event_id}).fetchone()
        if old is not None and old[2] == RESERVED:
            return None
        if old is None or old[2] >= 500 or old[1] != period:
            return 0
        return int(old[0])

    def _event_facts(self, event_id: int) -> tuple[int, int, str, str | None]:
        with self.store.read() as conn:
            event = conn.execute(_EVENT, {"b_id": event_id}).one()
            owner = conn.execute(_ACCOUNT_OF, {"b_id": event.key_id}).one()
        return owner.account_id or owner.id, event.units, event.period, event.idempotency_key


def _write_settlements(store: ServeStore, rows: list[dict[str, Any]]) -> None:
    """Buffered settlements, in one transaction (`Gate.flush`, and at exit)."""
    with store.fast_write() as cur:
        store.sql(_SETTLE).executemany(cur, rows)


class _Bucket:
    """Token-bucket arithmetic for one plan: capacity rpm, refill rpm/60 per second."""

    def __init__(self, requests_per_minute: int) -> None:
        self.limit = requests_per_minute
        self.capacity = float(requests_per_minute)
        self.rate = requests_per_minute / 60.0

    def refill(self, tokens: float, updated: float, now: float) -> float:
        # max(0, ...): another worker's clock may be slightly behind ours.
        return min(self.capacity, tokens + max(0.0, now - updated) * self.rate)

    def state(self, tokens: float) -> RateState:
        return RateState(
            limit=self.limit,
            remaining=max(0, math.floor(tokens)),
            reset_seconds=max(0.0, (self.capacity - tokens) / self.rate),
        )


def _check_usable(row: Any, now: float) -> None:
    if row.revoked_at is not None and now >= row.revoked_at:
        if row.rotated_to is not None and row.grace_until == row.revoked_at:
            message = (
                f"API key {row.prefix} was rotated and its grace period ended at "
                f"{keys.iso(row.grace_until)}; use the new key"
            )
        else:
            message = f"API key {row.prefix} was revoked at {keys.iso(row.revoked_at)}"
        raise ApiError(403, "key_revoked", message)
    if row.expires_at is not None and now >= row.expires_at:
        raise ApiError(
            403, "key_expired", f"API key {row.prefix} expired at {keys.iso(row.expires_at)}"
        )


def _check_request(key: KeyInfo, request: AdmitRequest) -> None:
    """What `admit` checks without the database: model, units, Idempotency-Key."""
    _check_model(key, request.model)
    units = request.units
    if not isinstance(units, int) or isinstance(units, bool) or units < 0:
        raise ApiError(400, "invalid_field", f"units must be an integer >= 0, got {units!r}")
    ikey = request.idempotency_key
    if ikey is not None and not 0 < len(ikey) <= _MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400,
            "invalid_field",
            f"an Idempotency-Key has 1 to {_MAX_IDEMPOTENCY_KEY} characters",
            param="Idempotency-Key",
        )


def _check_records(key: KeyInfo, units: int) -> None:
    limit = key.plan_config.max_records_per_request
    if units > limit:
        raise ApiError(
            413,
            "too_many_records",
            f"{units} records in one request; plan '{key.plan}' allows up to {limit} "
            "(split the list into several requests)",
            param="records",
        )


def _check_model(key: KeyInfo, model: str) -> None:
    if key.models is None or model in key.models or model.split(":", 1)[0] in key.models:
        return
    raise ApiError(
        403,
        "model_not_allowed",
        f"key {key.prefix} may not call model {model!r}; it may call: {', '.join(key.models)}",
        param="model",
    )


def _token_of(authorization: str | None) -> str:
    """The key in an `Authorization` header (`Bearer fdy_...` or the bare key); ApiError
    401 when there is none or it cannot be one of ours."""
    scheme, _, rest = (authorization or "").strip().partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else scheme
    if not token:
        raise ApiError(
            401,
            "missing_api_key",
            "no API key provided: send it as the header `Authorization: Bearer fdy_...`",
        )
    if not keys.looks_like_key(token):
        raise _invalid_key()
    return token


def _invalid_key() -> ApiError:
    return ApiError(
        401,
        "invalid_api_key",
        "invalid API key: check the `Authorization: Bearer fdy_...` header; keys are made "
        "with `foundry keys create`",
    )
