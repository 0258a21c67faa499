"""The one error shape of the API: `{"error": {"message", "type", "param", "code"}}`,
and the app's handlers that answer every error in it.

A client that goes away mid-request is ApiError 499 (`client_closed_request`): logged as
one line, answered to nobody."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("foundry.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error answered to the client; `status` is the HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        default = "server_error" if self.status >= 500 else "invalid_request_error"
        return _TYPES.get(self.status, default)

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param,
                      "code": self.code}
        }


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, whatever raised it, in the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status == 499:  # the client went away: nobody reads this answer
        client = request.client
        log.info("%s %s: %s (%s)", request.method, request.url.path, exc.message,
                 f"{client.host}:{client.port}" if client else "client")
    return JSONResponse(exc.body(), exc.status, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    code = "missing_field" if first.get("type") == "missing" else "invalid_field"
    where = f"{param}: " if param else ""
    err = ApiError(422, code, f"{where}{first.get('msg', 'invalid value')}", param=param)
    return JSONResponse(err.body(), 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = ApiError(404, "not_found", f"no route {request.method} {request.url.path}; "
                       "see /docs")
    elif exc.status_code == 405:
        err = ApiError(405, "method_not_allowed",
                       f"{request.method} is not allowed on {request.url.path}")
    else:
        err = ApiError(exc.status_code, "invalid_request", str(exc.detail))
    return JSONResponse(err.body(), err.status, dict(exc.headers or {}) or None)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    err = ApiError(500, "internal_error", "internal error; it has been logged")
    return JSONResponse(err.body(), 500)
