"""Key administration over HTTP, behind the admin token (`FOUNDRY_ADMIN_TOKEN`).

    POST   /admin/keys                {name, plan, models?, expires?} → the key, shown once
    GET    /admin/keys                every key (never the secret)
    DELETE /admin/keys/{ref}          revoke (ref: id, prefix `fdy_abcd1234` or the key)
    POST   /admin/keys/{ref}/rotate   {grace_hours?} → the new key; the old one works
                                      for grace_hours more (default serve.rotate_grace_hours)
    /admin/models/...                 tag, alias, delete, export, import (routes_models)

Requests carry `Authorization: Bearer <admin token>`, compared in constant time. Without
a configured token every admin route answers 403 and says how to set one.
"""

from __future__ import annotations

import hmac
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from foundry.serve.errors import ApiError
from foundry.serve.schemas import ErrorResponse

if TYPE_CHECKING:
    from foundry.serve.app import Service


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=200)
    """Who the key is for (a customer, an app)."""
    plan: str = "trial"
    """A plan name: trial, starter, pro, enterprise or one from serve.plans."""
    models: list[str] | None = None
    """Models the key may call (default: the plan's list; null = every served model)."""
    expires: str | float | None = None
    """Lifetime: `30d`, `12h`, `90m` or seconds (default: the plan's expires_days, else
    never)."""


class RotateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    grace_hours: float | None = Field(None, ge=0)
    """How long the old key keeps working (default: serve.rotate_grace_hours)."""


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 422)
}


def admin_router(service: Service) -> APIRouter:
    """The /admin routes of one app; `service.gate` does the work."""

    def require_admin(request: Request) -> None:
        check_admin_token(request.headers.get("authorization"), service.admin_token)

    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        responses=_ERRORS,
    )
    security = {"security": [{"bearerAuth": []}]}

    def gate() -> Any:
        assert service.gate is not None
        return service.gate

    @router.post("/keys", status_code=201, openapi_extra=security)
    async def create_key(body: CreateKeyRequest) -> Response:
        """Create a key. The response holds the key itself: it is never shown again."""
        create = partial(gate().create_key, models=body.models, expires=body.expires)
        created = await service.gate_call(create, body.name, body.plan)
        return JSONResponse(created.to_dict(), 201)

    @router.get("/keys", openapi_extra=security)
    async def list_keys() -> Response:
        """Every key with its status (active, grace, revoked, expired); never the secret."""
        records = await service.gate_call(gate().list_keys)
        return JSONResponse({"keys": [r.to_dict() for r in records]})

    @router.delete("/keys/{ref}", openapi_extra=security)
    async def revoke_key(ref: str) -> Response:
        """Revoke a key now (by id, prefix or the whole key)."""
        record = await service.gate_call(gate().revoke_key, ref)
        return JSONResponse(record.to_dict())

    @router.post("/keys/{ref}/rotate", status_code=201, openapi_extra=security)
    async def rotate_key(ref: str, body: RotateKeyRequest | None = None) -> Response:
        """Replace a key with a new one; the old one keeps working for grace_hours."""
        hours = body.grace_hours if body and body.grace_hours is not None else None
        if hours is None:
            hours = service.config.rotate_grace_hours
        created = await service.gate_call(gate().rotate_key, ref, hours)
        return JSONResponse(created.to_dict(), 201)

    from foundry.serve.routes_models import add_model_routes

    add_model_routes(router, service)
    return router


def check_admin_token(authorization: str | None, token: str | None) -> None:
    """ApiError unless `authorization` is `Bearer <token>` (constant-time comparison)."""
    if not token:
        raise ApiError(
            403,
            "admin_disabled",
            "admin routes are disabled: start the server with the environment variable "
            "FOUNDRY_ADMIN_TOKEN set to a long random secret (e.g. `export "
            "FOUNDRY_ADMIN_TOKEN=$(openssl rand -hex 32)`) and send it as "
            "`Authorization: Bearer <token>`",
        )
    given = (authorization or "").strip()
    if given[:7].lower() == "bearer ":
        given = given[7:].strip()
    if not given:
        raise ApiError(
            401, "missing_api_key", "admin routes need `Authorization: Bearer <admin token>`"
        )
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "invalid_api_key", "wrong admin token (FOUNDRY_ADMIN_TOKEN)")
