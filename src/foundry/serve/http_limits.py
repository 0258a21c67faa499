"""Slow and greedy clients, held off where uvicorn reads the bytes: header and body read
deadlines, and a per-worker connection cap.

uvicorn has no read timeout: `timeout_keep_alive` runs only between two requests and
every byte received cancels it, so a client that trickles one header byte every few
seconds (slowloris), or declares a body and never finishes it, holds its connection and
socket for as long as it likes (measured: 1,000 such connections held for 90 s, never
closed). ASGI middleware cannot help with headers: the app is called only once they are
complete. So this is uvicorn's httptools protocol with three additions:

- header deadline: a request's line and headers must be complete within
  `serve.header_timeout_s` of its first byte (of the connection, for the first request);
  past it the client gets a 408 in the API's error shape and the connection is closed.
- body deadline: the whole body must arrive within `serve.body_timeout_s` of the end of
  the headers; past it the same 408 (when no answer has started) and the connection is
  closed, and the app sees the client go away. Time while uvicorn itself stopped
  reading (the app has not consumed what arrived: the server is slow, not the client)
  does not count against the client: the deadline is pushed back.
- connection cap: past `serve.max_connections` open connections in this worker, a
  request is answered 503 `server_busy` with `Retry-After` and its connection closed.
  uvicorn's own `limit_concurrency` answers a plain-text 503 without Retry-After.

`run_server` selects it (`http=PROTOCOL`); by hand: `uvicorn --http
foundry.serve.http_limits:GuardedHttpToolsProtocol --factory
foundry.serve.server:app_from_env`. It reads the limits from the same environment as
the app (`FOUNDRY_SERVE_CONFIG`), once per worker process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from foundry.config.schema import ServeConfig
from foundry.serve.errors import ApiError
from foundry.serve.server import ENV_CONFIG
from foundry.serve.tls import tls_extension

PROTOCOL = "foundry.serve.http_limits:GuardedHttpToolsProtocol"
RETRY_AFTER_S = 1
"""Retry-After of the connection cap's 503: connections turn over in well under a second
when the server is healthy, so a client that waits one second usually gets in."""

log = logging.getLogger("foundry.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int | None

    @classmethod
    def of(cls, config: ServeConfig) -> ConnectionLimits:
        return cls(config.header_timeout_s, config.body_timeout_s, config.max_connections)


@cache
def _limits_from_env() -> ConnectionLimits:
    """This worker's limits (the config `run_server` put in the environment)."""
    return ConnectionLimits.of(ServeConfig.model_validate_json(os.environ.get(ENV_CONFIG) or "{}"))


def error_response(error: ApiError) -> bytes:
    """A complete HTTP/1.1 response carrying `error` in the API's JSON shape and closing
    the connection: written straight to the socket, where no app is running."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
            "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in error.headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _timeout_error(what: str, seconds: float, setting: str) -> ApiError:
    return ApiError(408, "request_timeout",
                    f"the request's {what} did not arrive within {seconds:g} s "
                    f"(serve.{setting}); send the whole request at once")


def _busy_error(cap: int) -> ApiError:
    return ApiError(503, "server_busy",
                    f"this server worker holds its maximum of {cap} connections "
                    f"(serve.max_connections); retry after {RETRY_AFTER_S} s",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header / body deadlines and a connection cap
    (see the module docstring). One per connection.

    A request only notes the time at its phase changes (a clock read each); one sweep
    per worker (`_Sweeper`) checks every connection's deadline a few times per timeout.
    Arming and cancelling a timer per request instead cost ~3-12 µs per request."""

    limits: ConnectionLimits | None = None
    """Class-level override (tests); None: `_limits_from_env()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.limits or _limits_from_env()
        self._phase: str | None = None
        """`headers` (waiting for a request's line and headers), `body`, or None
        (between requests: uvicorn's keep-alive timeout applies)."""
        self._deadline = 0.0
        """loop.time() by which the current phase must end."""
        self._tls: dict[str, Any] | None = None
        """The ASGI TLS extension of this connection (HTTPS), set once connected."""

    # -- connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = tls_extension(transport)  # once per connection: the handshake is done
        _Sweeper.watch(self)
        # A connection that never sends a byte is held to the header deadline too.
        self._enter("headers", self._limits.header_timeout_s)

    # -- parser callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:  # HTTPS: the peer certificate, for mutual TLS on /admin
            self.scope.setdefault("extensions", {})["tls"] = self._tls  # type: ignore[typeddict-item]
        if self._phase is None:  # the next request on a keep-alive connection
            self._enter("headers", self._limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        self._enter(None if upgrade else "body", self._limits.body_timeout_s)
        cap = self._limits.max_connections
        if cap is None or len(self.connections) <= cap:
            super().on_headers_complete()
            return
        # uvicorn runs `self.app` for the request: answer this one with the refusal.
        app, self.app = self.app, _refusal_app(_busy_error(cap))
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._phase = None
        super().on_message_complete()

    # -- deadlines -------------------------------------------------------------

    def _enter(self, phase: str | None, seconds: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + seconds

    def check_deadline(self, now: float) -> None:
        """The sweep: close the connection if its phase is past its deadline."""
        if self._phase is None or now < self._deadline or self.transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == "headers":
            if cycle is not None and not cycle.response_complete:
                # The previous request on this connection is still being answered (the
                # next one is pipelined behind it): its answer must not be cut off.
                self._enter("headers", self._limits.header_timeout_s)
                return
            self._close_late(_timeout_error("headers", self._limits.header_timeout_s,
                                            "header_timeout_s"), body=False)
            return
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # uvicorn stopped reading because the app has not taken what arrived (or a
            # pipelined request waits), or the client waits for the app to ask for the
            # body (Expect: 100-continue): the server is behind, not the client.
            self._enter("body", self._limits.body_timeout_s)
            return
        self._close_late(_timeout_error("body", self._limits.body_timeout_s, "body_timeout_s"),
                         body=True)

    def _close_late(self, error: ApiError, *, body: bool) -> None:
        """Answer 408 where no answer has started and close. For a late body the app has
        the request: it sees the client go away (and what it sends is dropped); if it has
        answered already (a 401 needs no body), the connection is simply closed."""
        self._phase = None
        cycle = self.cycle if body else None  # headers: the request has no cycle yet
        if cycle is None or not cycle.response_started:
            self.transport.write(error_response(error))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed the connection of %s: %s", client, error.message)
        self.transport.close()


class _Sweeper:
    """One per worker (per uvicorn server state): every `period` seconds, each guarded
    connection checks its deadline. A connection is closed at most `period` after it:
    a quarter of the shorter timeout, at most a second."""

    _by_state: weakref.WeakKeyDictionary[Any, _Sweeper] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any],
                 period: float) -> None:
        self.loop = loop
        self.connections = connections
        self.period = period

    @classmethod
    def watch(cls, protocol: GuardedHttpToolsProtocol) -> None:
        """Start the sweep of `protocol`'s server, once."""
        state = protocol.server_state
        if state not in cls._by_state:
            limits = protocol._limits
            period = min(1.0, max(0.05, min(limits.header_timeout_s, limits.body_timeout_s) / 4))
            sweeper = cls._by_state[state] = cls(protocol.loop, state.connections, period)
            sweeper.loop.call_later(period, sweeper.tick)

    def tick(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            check = getattr(connection, "check_deadline", None)
            if check is not None:
                try:
                    check(now)
                except Exception:  # one broken connection must not stop the sweep
                    log.exception("checking a connection's deadline failed")
        self.loop.call_later(self.period, self.tick)


def _refusal_app(error: ApiError) -> Any:
    """An ASGI app answering every request with `error` and closing the connection."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
               *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return refuse
