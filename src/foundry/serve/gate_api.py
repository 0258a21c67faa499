"""What the HTTP layer needs from keys, plans, rate limits, quotas and metering.

`foundry.serve.gate.Gate` implements these with the database; the app only sees these
types. Every method is synchronous (SQLAlchemy); the app calls them from a thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foundry.config.schema import PlanConfig


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    """The key's first characters (`fdy_abcd1234`), safe to show and log."""
    plan: str
    plan_config: PlanConfig
    models: list[str] | None
    """Models this key may call (the key's own list, else the plan's; None = all)."""


@dataclass(frozen=True)
class RateState:
    limit: int
    """Requests per minute of the key's plan."""
    remaining: int
    """Whole requests left in the bucket after this one."""
    reset_seconds: float
    """Seconds until the bucket is full again."""
    token_limit: int | None = None
    """Tokens per minute of the plan (language-model requests on plans with one)."""
    token_remaining: int | None = None
    token_reset_seconds: float | None = None

    def headers(self) -> dict[str, str]:
        out = {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_seconds:.3f}s",
        }
        if self.token_limit is not None:
            out["x-ratelimit-limit-tokens"] = str(self.token_limit)
            out["x-ratelimit-remaining-tokens"] = str(self.token_remaining)
            out["x-ratelimit-reset-tokens"] = f"{self.token_reset_seconds or 0.0:.3f}s"
        return out


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


@dataclass(frozen=True)
class Admission:
    key: KeyInfo
    event_id: int | None
    """The usage event written for this request (None for a replay)."""
    rate: RateState
    replay: StoredResponse | None = None
    """Set when an Idempotency-Key matched an earlier request: answer this, charge nothing."""


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    """One predict request as the gate admits it (`Gate.admit_many`)."""

    authorization: str | None
    """The `Authorization` header as sent (None: absent)."""
    model: str
    units: int
    """Records in the request (language models: prompt tokens + max_tokens, reserved
    and settled to what was used by `Gate.complete(..., units=)`)."""
    request_id: str
    idempotency_key: str | None = None
    request_hash: str | None = None
    """Identifies the body, so an Idempotency-Key reused with another body is refused."""
    tokens: int = 0
    """Language models: the tokens this request takes from the plan's tokens-per-minute
    bucket (prompt + max_tokens); such a request is not held to max_records_per_request.
    0: a records request."""
