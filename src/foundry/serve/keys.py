"""API keys: make, hash, find, revoke and rotate them.

A key is `fdy_` + 32 URL-safe characters (192 random bits). It is shown once, when
created or rotated; the database keeps its sha256 hash (looked up through a unique index)
and its first 12 characters (`fdy_abcd1234`, the prefix shown in listings). Rotation makes
a new key for the same account: the old one keeps working until its grace period ends.

Every function takes the `ServeStore` and the time (`now`, epoch seconds) explicitly, so
the gate's injected clock drives expiry and grace in tests. Errors are `ApiError`s: the
admin routes answer them as they are, the CLI prints their message.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Row, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

import foundry.crypto as crypto
from foundry.config.schema import PlanConfig
from foundry.serve.errors import ApiError
from foundry.serve.store import ServeStore, api_keys

KEY_PREFIX = "fdy_"
PREFIX_LENGTH = 12
"""Characters of a key shown in listings: `fdy_` + 8 (48 random bits)."""
_SECRET_BYTES = 24  # 192 bits → exactly 32 URL-safe base64 characters
KEY_LENGTH = len(KEY_PREFIX) + 32
_SECRET_RE = re.compile(r"^fdy_[A-Za-z0-9_-]{32}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$")
_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60}

_BY_HASH = select(api_keys).where(api_keys.c.key_hash == bindparam("key_hash"))


def generate_key() -> str:
    """A new random key: `fdy_` + 32 URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_key(key: str) -> str:
    """The stored form of a key: sha256 of the whole key, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(text: str) -> bool:
    return bool(_SECRET_RE.match(text))


def hashes_match(stored: str, computed: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about the stored hash."""
    return hmac.compare_digest(stored.encode("ascii"), computed.encode("ascii"))


MAX_DURATION_S = 100 * 365 * 86_400
"""Longest expiry or grace period: later times would not fit a datetime (year 9999)."""


def parse_duration(text: str | float | int) -> float:
    """Seconds in `30d`, `12h` or `90m` (a number is taken as seconds). ValueError if not
    a positive duration."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(str(text))
        if not match:
            raise ValueError(
                f"expected a duration like 30d, 12h or 90m (days, hours, minutes), got {text!r}"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be at most 100 years (36500d), got {text!r}")
    return seconds


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC time (`2026-11-03T12:00:00+00:00`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyRecord:
    """A key as listings show it: never the secret."""

    id: int
    name: str
    prefix: str
    plan: str
    models: list[str] | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    """When the key stops (stopped) working: revocation time or the end of a rotation grace."""
    rotated_to: int | None
    grace_until: float | None
    account_id: int
    """The root key of its rotation chain (its own id when never rotated into)."""
    status: str
    """`active`, `grace` (rotated, still working until grace_until), `revoked`, `expired`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "plan": self.plan,
            "models": self.models,
            "status": self.status,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "rotated_to": self.rotated_to,
            "grace_until": iso(self.grace_until),
            "account_id": self.account_id,
        }


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `key` is the plaintext, available this once and never again."""

    key: str = field(repr=False)
    record: KeyRecord

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **self.record.to_dict()}


def key_status(row: Any, now: float) -> str:
    if row.revoked_at is not None and now >= row.revoked_at:
        return "revoked"
    if row.expires_at is not None and now >= row.expires_at:
        return "expired"
    if row.rotated_to is not None:
        return "grace"
    return "active"


def record_of(row: Any, now: float) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=crypto.decrypt_field(row.name, what=f"the name of key {row.prefix}"),
        prefix=row.prefix,
        plan=row.plan,
        models=list(row.models) if row.models is not None else None,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rotated_to=row.rotated_to,
        grace_until=row.grace_until,
        account_id=row.account_id or row.id,
        status=key_status(row, now),
    )


def find_by_hash(conn: Connection, key: str) -> Row[Any] | None:
    """The row of a plaintext key, or None; the hash is compared in constant time."""
    computed = hash_key(key)
    row = conn.execute(_BY_HASH, {"key_hash": computed}).first()
    if row is None or not hashes_match(row.key_hash, computed):
        return None
    return row


def create_key(
    store: ServeStore,
    plans: dict[str, PlanConfig],
    *,
    name: str,
    plan: str,
    now: float,
    models: list[str] | None = None,
    expires: str | float | None = None,
) -> CreatedKey:
    """Make a key on `plan`. `models` narrows what it may call (default: the plan's list);
    `expires` is a duration (`30d`, `12h`, `90m`, or seconds), default the plan's
    `expires_days` (trials), else never."""
    name = _check_name(name)
    plan_config = _plan(plans, plan)
    models = _check_models(models)
    if expires is not None:
        try:
            expires_at: float | None = now + parse_duration(expires)
        except ValueError as exc:
            raise ApiError(400, "invalid_field", f"expires: {exc}", param="expires") from None
    elif plan_config.expires_days is not None:
        expires_at = now + plan_config.expires_days * 86_400
    else:
        expires_at = None
    secret = generate_key()
    with store.write() as conn:
        key_id = _insert(
            conn,
            secret,
            name=name,
            plan=plan,
            models=models,
            now=now,
            expires_at=expires_at,
            account_id=None,
            rate_tokens=float(plan_config.requests_per_minute),
        )
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
    return CreatedKey(secret, record_of(row, now))


def list_keys(store: ServeStore, *, now: float) -> list[KeyRecord]:
    """Every key, oldest first, revoked and expired ones included (see `status`)."""
    with store.read() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.id)).all()
    return [record_of(row, now) for row in rows]


def get_key(store: ServeStore, id_or_prefix: str | int, *, now: float) -> KeyRecord:
    with store.read() as conn:
        return record_of(find_key(conn, id_or_prefix), now)


def revoke_key(store: ServeStore, id_or_prefix: str | int, *, now: float) -> KeyRecord:
    """Stop a key now. Revoking an account's current key also ends the grace of the keys
    rotated into it (they are the same credential's past). Revoking twice is harmless."""
    with store.write() as conn:
        row = find_key(conn, id_or_prefix, lock=True)
        ids = [row.id]
        if row.rotated_to is None:
            account = row.account_id or row.id
            in_grace = select(api_keys.c.id).where(
                or_(api_keys.c.account_id == account, api_keys.c.id == account),
                api_keys.c.rotated_to.is_not(None),
                api_keys.c.revoked_at > now,
            )
            ids += list(conn.scalars(in_grace))
        conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id.in_(ids),
                or_(api_keys.c.revoked_at.is_(None), api_keys.c.revoked_at > now),
            )
            .values(revoked_at=now)
        )
        row = conn.execute(select(api_keys).where(api_keys.c.id == row.id)).one()
    return record_of(row, now)


def rotate_key(
    store: ServeStore,
    plans: dict[str, PlanConfig],
    id_or_prefix: str | int,
    *,
    grace_hours: float,
    now: float,
) -> CreatedKey:
    """Replace a key with a new one on the same account (same name, plan, models, expiry,
    quota and rate bucket). The old key works for `grace_hours` more, then answers 403
    `key_revoked`."""
    if not math.isfinite(grace_hours) or grace_hours < 0 or grace_hours * 3_600 > MAX_DURATION_S:
        raise ApiError(
            400,
            "invalid_field",
            f"grace_hours must be between 0 and 876000 (100 years), got {grace_hours}",
            param="grace_hours",
        )
    secret = generate_key()
    with store.write() as conn:
        old = find_key(conn, id_or_prefix, lock=True)
        status = key_status(old, now)
        if old.rotated_to is not None:
            newer = conn.scalar(select(api_keys.c.prefix).where(api_keys.c.id == old.rotated_to))
            raise ApiError(
                409,
                "key_already_rotated",
                f"key {old.prefix} was already rotated to {newer}; rotate that key instead",
            )
        if status in ("revoked", "expired"):
            raise ApiError(
                409, f"key_{status}", f"key {old.prefix} is {status}; create a new key instead"
            )
        plan_config = _plan(plans, old.plan)
        new_id = _insert(
            conn,
            secret,
            name=crypto.decrypt_field(old.name, what=f"the name of key {old.prefix}"),
            plan=old.plan,
            models=old.models,
            now=now,
            expires_at=old.expires_at,
            account_id=old.account_id or old.id,
            rate_tokens=float(plan_config.requests_per_minute),
        )
        grace_end = now + grace_hours * 3_600
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == old.id)
            .values(rotated_to=new_id, grace_until=grace_end, revoked_at=grace_end)
        )
        row = conn.execute(select(api_keys).where(api_keys.c.id == new_id)).one()
    return CreatedKey(secret, record_of(row, now))


def find_key(conn: Connection, id_or_prefix: str | int, *, lock: bool = False) -> Row[Any]:
    """A key's row by id (`7`), prefix (`fdy_abcd1234`) or the whole key. ApiError 404 if
    none, 409 if a prefix matches several keys."""
    text = str(id_or_prefix).strip()
    # isascii: str.isdigit() also accepts superscripts; 18 digits stay inside a 64-bit id
    if text.isascii() and text.isdigit() and len(text) <= 18:
        query = select(api_keys).where(api_keys.c.id == int(text))
    elif looks_like_key(text):
        query = select(api_keys).where(api_keys.c.key_hash == hash_key(text))
    elif text.startswith(KEY_PREFIX) and len(KEY_PREFIX) < len(text) <= PREFIX_LENGTH:
        # substr, not LIKE: `_` in a key would be a LIKE wildcard.
        query = select(api_keys).where(func.substr(api_keys.c.prefix, 1, len(text)) == text)
    else:
        raise ApiError(
            400,
            "invalid_field",
            f"{text!r} is neither a key id, a key prefix like 'fdy_abcd1234' nor a whole key",
            param="key",
        )
    if lock:
        query = query.with_for_update()
    rows = conn.execute(query).all()
    if not rows:
        raise ApiError(404, "key_not_found", f"no API key {text!r}; see `foundry keys list`")
    if len(rows) > 1:
        ids = ", ".join(str(r.id) for r in rows)
        raise ApiError(409, "ambiguous_key", f"prefix {text!r} matches keys {ids}; use the id")
    return rows[0]


def _insert(
    conn: Connection,
    secret: str,
    *,
    name: str,
    plan: str,
    models: list[str] | None,
    now: float,
    expires_at: float | None,
    account_id: int | None,
    rate_tokens: float,
) -> int:
    result = conn.execute(
        api_keys.insert().values(
            # Who the key is for identifies a customer and is never queried: encrypted
            # when a key is set (docs/SECURITY.md).
            name=crypto.encrypt_field(name),
            prefix=secret[:PREFIX_LENGTH],
            key_hash=hash_key(secret),
            plan=plan,
            models=models,
            created_at=now,
            expires_at=expires_at,
            account_id=account_id,
            rate_tokens=rate_tokens,  # a new bucket starts full
            rate_updated=now,
            used_units=0,
        )
    )
    return int(result.inserted_primary_key[0])


def _plan(plans: dict[str, PlanConfig], plan: str) -> PlanConfig:
    if plan not in plans:
        raise ApiError(
            400, "invalid_field", f"unknown plan {plan!r}; plans: {', '.join(plans)}", param="plan"
        )
    return plans[plan]


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ApiError(
            400,
            "invalid_field",
            f"a key name must have 1 to 200 characters, got {name!r}",
            param="name",
        )
    return name


def _check_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    cleaned = [m.strip() for m in models if isinstance(m, str) and m.strip()]
    if len(cleaned) != len(models) or not cleaned:
        raise ApiError(
            400,
            "invalid_field",
            f"models must be a non-empty list of model names, got {models!r}",
            param="models",
        )
    return cleaned


def rotate_field_encryption(store: ServeStore, new: crypto.MasterKey,
                            ring: crypto.Keyring | None) -> int:
    """Re-encrypt the encrypted columns (key names, stored idempotent answers) under `new`
    (`foundry keys rotate-encryption`); one transaction; how many values changed."""
    from foundry.serve.store import idempotency

    changed = 0
    with store.write() as conn:
        for table, column in ((api_keys, "name"), (idempotency, "response_json")):
            rows = conn.execute(select(table.c.id, table.c[column])).all()
            for row_id, value in rows:
                rotated = crypto.rewrap_field(value, new, ring)
                if rotated is not None:
                    conn.execute(update(table).where(table.c.id == row_id)
                                 .values({column: rotated}))
                    changed += 1
    return changed
