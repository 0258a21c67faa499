"""API keys: format, one-time display, hashed storage, lookup, revocation, expiry, rotation."""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

import pytest

from foundry.config.schema import BUILTIN_PLANS, PlanConfig
from foundry.serve import keys
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc).timestamp()
HOUR = 3600.0


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
    g = Gate(clock=clock)
    yield g
    g.close()


def _code(excinfo) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.code


def test_key_format_and_prefix(gate):
    created = gate.create_key("acme", "starter")
    assert created.key.startswith("fdy_") and len(created.key) == 36
    assert keys.looks_like_key(created.key)
    assert created.record.prefix == created.key[:12]
    assert created.record.plan == "starter" and created.record.status == "active"
    assert gate.create_key("acme", "starter").key != created.key  # random


def test_the_key_is_shown_once(gate):
    created = gate.create_key("acme", "starter")
    assert created.key not in repr(created)  # logs of the object do not leak it
    assert created.to_dict()["key"] == created.key  # the one-time display
    listed = gate.list_keys()
    assert [r.prefix for r in listed] == [created.record.prefix]
    assert created.key not in repr(listed) and created.key not in str(listed[0].to_dict())
    assert "key" not in listed[0].to_dict() and "key_hash" not in listed[0].to_dict()


@pytest.mark.sqlite_only  # reads the database file
def test_only_the_hash_is_stored(gate, foundry_home):
    created = gate.create_key("acme", "starter")
    info = gate.authenticate(f"Bearer {created.key}")
    gate.complete(gate.admit(info, model="m", units=1, request_id="r1"), status=200, latency_ms=1.0)
    stored = b"".join(p.read_bytes() for p in foundry_home.glob("foundry.db*"))
    assert created.key.encode() not in stored
    assert created.key[12:].encode() not in stored  # nor the secret part alone
    assert keys.hash_key(created.key).encode() in stored


def test_authentication_compares_hashes_in_constant_time(gate, clock, monkeypatch):
    created = gate.create_key("acme", "starter")
    calls = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    fresh = Gate(clock=clock)  # no cached lookup
    assert fresh.authenticate(f"Bearer {created.key}").id == created.record.id
    expected = keys.hash_key(created.key).encode()
    assert calls == [(expected, expected)]


def test_authorization_header_forms(gate):
    created = gate.create_key("acme", "pro", models=["iris"])
    for header in (f"Bearer {created.key}", f"bearer  {created.key} ", created.key):
        info = gate.authenticate(header)
        assert (info.name, info.plan, info.models) == ("acme", "pro", ["iris"])
        assert info.plan_config == BUILTIN_PLANS["pro"]
    for header in (None, "", "Bearer ", "   "):
        with pytest.raises(ApiError) as exc:
            gate.authenticate(header)
        assert _code(exc) == (401, "missing_api_key")
    wrong = "fdy_" + "A" * 32
    for header in (f"Bearer {wrong}", "Bearer sk-123", f"Bearer {created.key}x"):
        with pytest.raises(ApiError) as exc:
            gate.authenticate(header)
        assert _code(exc) == (401, "invalid_api_key")
        assert exc.value.type == "authentication_error"


def test_revoked_key_is_refused(gate):
    created = gate.create_key("acme", "starter")
    info = gate.authenticate(f"Bearer {created.key}")
    record = gate.revoke_key(created.record.prefix)
    assert record.status == "revoked"
    with pytest.raises(ApiError) as exc:
        gate.authenticate(f"Bearer {created.key}")
    assert _code(exc) == (403, "key_revoked") and exc.value.type == "permission_error"
    with pytest.raises(ApiError) as exc:  # an admission re-checks the row, whatever was cached
        gate.admit(info, model="m", units=1, request_id="r")
    assert _code(exc) == (403, "key_revoked")
    assert gate.revoke_key(record.id).status == "revoked"  # twice is harmless


def test_revocation_by_another_process_stops_admission_at_once(gate, clock):
    created = gate.create_key("acme", "starter")
    info = gate.authenticate(f"Bearer {created.key}")  # now cached in this gate
    Gate(clock=clock).revoke_key(created.key)  # e.g. `foundry keys revoke`, the whole key
    with pytest.raises(ApiError) as exc:
        gate.admit(info, model="m", units=1, request_id="r")
    assert _code(exc) == (403, "key_revoked")


def test_expiry_with_the_clock(gate, clock):
    created = gate.create_key("acme", "starter", expires="12h")
    assert created.record.expires_at == T0 + 12 * HOUR
    clock.now = T0 + 12 * HOUR - 1
    info = gate.authenticate(created.key)
    clock.now = T0 + 12 * HOUR
    with pytest.raises(ApiError) as exc:
        gate.authenticate(created.key)
    assert _code(exc) == (403, "key_expired")
    with pytest.raises(ApiError) as exc:
        gate.admit(info, model="m", units=1, request_id="r")
    assert _code(exc) == (403, "key_expired")
    assert gate.list_keys()[0].status == "expired"


def test_trial_keys_expire_after_the_plan_days(gate, clock):
    trial = gate.create_key("t", "trial")
    assert trial.record.expires_at == T0 + 14 * 86_400
    assert gate.create_key("s", "starter").record.expires_at is None
    assert gate.create_key("t2", "trial", expires="30d").record.expires_at == T0 + 30 * 86_400
    clock.now = T0 + 14 * 86_400
    with pytest.raises(ApiError, match="expired"):
        gate.authenticate(trial.key)


def test_rotation_keeps_the_old_key_for_the_grace_period(gate, clock):
    old = gate.create_key("acme", "starter", models=["iris"])
    clock.now = T0 + HOUR
    new = gate.rotate_key(old.record.prefix, grace_hours=2)
    assert new.key != old.key and new.record.name == "acme" and new.record.models == ["iris"]
    assert new.record.account_id == old.record.id
    listed = {r.id: r for r in gate.list_keys()}
    assert listed[old.record.id].status == "grace"
    assert listed[old.record.id].grace_until == T0 + 3 * HOUR
    assert listed[old.record.id].rotated_to == new.record.id

    clock.now = T0 + 3 * HOUR - 1
    assert gate.authenticate(old.key).id == old.record.id
    assert gate.authenticate(new.key).id == new.record.id
    clock.now = T0 + 3 * HOUR
    with pytest.raises(ApiError) as exc:
        gate.authenticate(old.key)
    assert _code(exc) == (403, "key_revoked") and "rotated" in exc.value.message
    assert gate.authenticate(new.key).id == new.record.id

    with pytest.raises(ApiError) as exc:
        gate.rotate_key(old.record.id)
    assert _code(exc) == (409, "key_already_rotated")


def test_revoking_the_current_key_ends_the_grace_of_older_ones(gate):
    old = gate.create_key("acme", "starter")
    new = gate.rotate_key(old.record.id, grace_hours=24)
    gate.revoke_key(new.record.id)
    for key in (old.key, new.key):
        with pytest.raises(ApiError, match="revoked"):
            gate.authenticate(key)
    with pytest.raises(ApiError) as exc:
        gate.rotate_key(new.record.id)
    assert _code(exc) == (409, "key_revoked")


def test_finding_keys(gate):
    a = gate.create_key("a", "starter")
    gate.create_key("b", "starter")
    assert gate.get_key(a.record.id).name == "a"
    assert gate.get_key(str(a.record.id)).name == "a"
    assert gate.get_key(a.record.prefix).name == "a"
    assert gate.get_key(a.key).name == "a"
    for ref, status, code in (
        ("999", 404, "key_not_found"),
        ("fdy_zzzzzzzz", 404, "key_not_found"),
        ("fdy_", 400, "invalid_field"),
        ("acme", 400, "invalid_field"),
        (a.key + "x", 400, "invalid_field"),
    ):
        with pytest.raises(ApiError) as exc:
            gate.get_key(ref)
        assert _code(exc) == (status, code)


def test_an_ambiguous_short_prefix_asks_for_the_id(gate):
    created = [gate.create_key(str(i), "starter") for i in range(80)]
    # 80 keys share 64 possible first characters: some pair collides.
    firsts = [c.record.prefix[:5] for c in created]
    dup = next(p for p in firsts if firsts.count(p) > 1)
    with pytest.raises(ApiError) as exc:
        gate.get_key(dup)
    assert _code(exc) == (409, "ambiguous_key") and "use the id" in exc.value.message


def test_create_validates_its_input(gate):
    with pytest.raises(ApiError) as exc:
        gate.create_key("acme", "gold")
    assert exc.value.param == "plan"
    assert exc.value.message == "unknown plan 'gold'; plans: trial, starter, pro, enterprise"
    with pytest.raises(ApiError, match="duration like 30d"):
        gate.create_key("acme", "starter", expires="30 days")
    with pytest.raises(ApiError, match="name"):
        gate.create_key("  ", "starter")
    with pytest.raises(ApiError, match="models"):
        gate.create_key("acme", "starter", models=[])
    assert gate.list_keys() == []


def test_a_key_on_a_plan_the_server_does_not_offer(gate, clock):
    plans = {**BUILTIN_PLANS, "gold": PlanConfig(price_cents=1)}
    created = Gate(plans, clock=clock).create_key("acme", "gold")
    with pytest.raises(ApiError) as exc:
        gate.authenticate(created.key)  # built-in plans only
    assert _code(exc) == (403, "unknown_plan") and "'gold'" in exc.value.message


def test_parse_duration():
    assert keys.parse_duration("30d") == 30 * 86_400
    assert keys.parse_duration("12h") == 12 * 3_600
    assert keys.parse_duration(" 90m ") == 90 * 60
    assert keys.parse_duration("1.5h") == 5_400
    assert keys.parse_duration(60) == 60
    for bad in ("30", "30s", "d", "-1d", "0h", "", "30 days"):
        with pytest.raises(ValueError, match="duration|positive"):
            keys.parse_duration(bad)
