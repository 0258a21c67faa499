"""HTTPS for `foundry serve`: TLS 1.2+, HSTS, and client certificates for /admin.

    foundry serve adult --tls-cert server.pem --tls-key server.key         # HTTPS
    foundry serve adult ... --tls-client-ca admins-ca.pem                  # + mTLS on /admin
    foundry serve adult ... --https-only       # refuse to start without a certificate

TLS terminates in uvicorn itself, in every worker process, on the one socket foundry
listens on: with a certificate there is no plain-HTTP listener at all (a plain request to
the port fails its handshake and is closed), so nothing is ever answered in clear.
`ssl_context` is uvicorn's `ssl_context_factory`: uvicorn's own context, with TLS 1.0 and
1.1 refused (minimum_version TLS 1.2) whatever the system's OpenSSL defaults are.

With `serve.tls.client_ca`, a client may present a certificate during the handshake
(CERT_OPTIONAL: prediction clients need none); one that does not verify against that CA
fails the handshake. `admin_guard` then refuses /admin/* requests whose connection did
not present a verified certificate (403 `client_certificate_required`), on top of the
admin token. The protocol (`foundry.serve.http_limits`) hands the peer certificate to
the app in the ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`).
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

from foundry.config.schema import TLSConfig
from foundry.serve.errors import ApiError

ADMIN_PREFIX = "/admin"


def ssl_context(config: Any, default: Any) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: its context (certificate, key, client CA) with TLS
    1.2 as the oldest protocol accepted."""
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def uvicorn_options(tls: TLSConfig) -> dict[str, Any]:
    """The `uvicorn.run` keyword arguments for `tls` ({} when TLS is off)."""
    if not tls.enabled:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": tls.cert,
        "ssl_keyfile": tls.key,
        "ssl_context_factory": ssl_context,
    }
    if tls.client_ca:
        options["ssl_ca_certs"] = tls.client_ca
        options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    return options


def check_files(tls: TLSConfig) -> None:
    """Load the certificate, key and client CA once in the parent process, so a wrong path
    or a key that does not match fails as one line instead of in every worker."""
    from foundry.errors import ConfigError

    if not tls.enabled:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"serve.tls: cannot load the certificate {tls.cert} with the key {tls.key}: {exc}",
            hint="pass a PEM certificate (chain) and its PEM private key",
        ) from None
    if tls.client_ca:
        try:
            context.load_verify_locations(tls.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"serve.tls.client_ca: cannot load {tls.client_ca}: {exc}",
                hint="pass the PEM certificate of the CA that signs admin client certificates",
            ) from None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def tls_extension(transport: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (None when it is plain TCP): the verified
    peer certificate (DER, as PEM text) if the client presented one."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


class TLSHeaders:
    """ASGI middleware: `Strict-Transport-Security` on every answer, and /admin refused
    without a verified client certificate when `require_client_cert` (see the module
    docstring). Added only when TLS is on."""

    def __init__(self, app: Any, *, hsts_max_age_s: int, require_client_cert: bool) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_max_age_s}".encode()
        self.require_client_cert = require_client_cert

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.require_client_cert and _is_admin(scope["path"]):
            tls = (scope.get("extensions") or {}).get("tls") or {}
            if not tls.get("client_cert_chain"):
                error = ApiError(
                    403,
                    "client_certificate_required",
                    "admin routes need a client certificate signed by the server's "
                    "serve.tls.client_ca; present one in the TLS handshake",
                )
                await _send_error(error, send, self.hsts)
                return

        async def send_with_hsts(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers.append((b"strict-transport-security", self.hsts))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


async def _send_error(error: ApiError, send: Any, hsts: bytes) -> None:
    import json

    body = json.dumps(error.body(), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"strict-transport-security", hsts),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
