"""`foundry serve`: the command function (cli.py registers it as `app.command("serve")`).

foundry serve adult:3 --port 8000 --workers 2
foundry serve --config serve.yaml            # models, batching, plans from `serve:`
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from foundry.errors import ConfigError


def serve(
    models: list[str] | None = typer.Argument(
        None,
        metavar="MODELS...",
        help="Models to serve: name, name:latest or name:VERSION (added to serve.models).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML file whose `serve:` section sets models, batching, plans and limits.",
    ),
    host: str | None = typer.Option(
        None, help="Interface to bind [default: serve.host, 127.0.0.1]."
    ),
    port: int | None = typer.Option(None, help="TCP port [default: serve.port, 8000]."),
    workers: int | None = typer.Option(
        None, help="Worker processes [default: serve.workers, 1]; they share quotas."
    ),
    # Annotated, so that a direct call of this function (tests) gets None defaults.
    header_timeout: Annotated[float | None, typer.Option(
        help="Seconds a request's headers may take to arrive [default: "
        "serve.header_timeout_s, 10]; then 408 and the connection is closed.")] = None,
    body_timeout: Annotated[float | None, typer.Option(
        help="Seconds a request's body may take to arrive [default: "
        "serve.body_timeout_s, 30].")] = None,
    max_connections: Annotated[int | None, typer.Option(
        help="Open connections per worker [default: serve.max_connections, 1000]; "
        "past them 503 with Retry-After.")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Who may read /metrics: admin (the admin token), public or off "
        "[default: serve.metrics, admin].")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate: serve HTTPS (TLS 1.2+) instead of HTTP [default: "
        "serve.tls.cert].")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        help="PEM private key of --tls-cert [default: serve.tls.key].")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(
        help="PEM CA certificate: /admin routes also need a client certificate it signed "
        "(mutual TLS) [default: serve.tls.client_ca].")] = None,
    https_only: Annotated[bool | None, typer.Option(
        "--https-only", help="Refuse to start without --tls-cert / --tls-key "
        "[default: serve.tls.https_only].")] = None,
) -> None:
    """Serve MODELS over HTTP: prediction API with keys, quotas, metering and batching.

    Admin routes (/admin/keys) need the environment variable FOUNDRY_ADMIN_TOKEN.
    """
    from foundry.config.load import load_serve_config
    from foundry.registry import Registry
    from foundry.serve.server import ENV_ADMIN_TOKEN, run_server

    overrides = {"host": host, "port": port, "workers": workers,
                 "header_timeout_s": header_timeout, "body_timeout_s": body_timeout,
                 "max_connections": max_connections, "metrics": metrics}
    tls = {"cert": tls_cert, "key": tls_key, "client_ca": tls_client_ca,
           "https_only": https_only}
    tls = {k: str(v) if isinstance(v, Path) else v for k, v in tls.items() if v is not None}
    overrides["tls"] = tls or None
    settings = load_serve_config(config, {k: v for k, v in overrides.items() if v is not None})
    from foundry.serve.tls import check_files, is_loopback

    check_files(settings.tls)  # a wrong path or a mismatched key: one line, now
    url = f"{'https' if settings.tls.enabled else 'http'}://{settings.host}:{settings.port}"
    if not settings.tls.enabled and not is_loopback(settings.host):  # once, first
        typer.echo(
            f"warning: serving on {settings.host} without TLS: API keys and records cross "
            "the network in clear; give --tls-cert and --tls-key, or put a TLS proxy in "
            "front (docs/SECURITY.md)",
            err=True,
        )
    requested = list(dict.fromkeys([*settings.model_refs(), *(models or [])]))
    upstreams = settings.upstreams()
    if not requested and not upstreams:
        raise ConfigError(
            "no models to serve: name them (`foundry serve adult:3`) or list them in the "
            "config's serve.models"
        )
    # Pin versions here, so every worker serves the same version even if a new one is
    # registered while they start. Unknown names fail now, as one line.
    registry = Registry()
    records = [registry.resolve(ref) for ref in requested]
    refs = list(dict.fromkeys(r.ref for r in records))
    names = [r.name for r in records]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"serve one version per model; several requested for: {twice}")
    # A package that differs from its checksums fails here, as one line: a worker that
    # failed to start would be restarted by uvicorn's supervisor over and over.
    for record in records:
        registry.verify(record.ref)

    for upstream in upstreams:  # a missing key fails here, as one line, not per request
        if upstream.api_key_env and not os.environ.get(upstream.api_key_env):
            raise ConfigError(
                f"serve.models: upstream '{upstream.name}' takes its API key from the "
                f"environment variable {upstream.api_key_env}, which is not set"
            )
        if upstream.name in names:
            raise ConfigError(f"serve.models: upstream '{upstream.name}' has the name of a "
                              "registry model served here; rename one of them")

    served = [*refs, *(u.name for u in upstreams)]
    typer.echo(f"serving {', '.join(served)} at {url}  ({settings.workers} worker(s))")
    for record in records:
        typer.echo(f"  POST {url}/v1/models/{record.name}/predict   ({record.task or 'model'})")
    for upstream in upstreams:
        typer.echo(f"  POST {url}/v1/chat/completions   ({upstream.name}: relayed to "
                   f"{upstream.upstream})")
    exposure = {"admin": " (admin token)", "public": "", "off": None}[settings.metrics]
    shown = f"   metrics: {url}/metrics{exposure}" if exposure is not None else ""
    typer.echo(f"docs: {url}/docs{shown}")
    if not os.environ.get(ENV_ADMIN_TOKEN):
        typer.echo(f"admin routes disabled: set {ENV_ADMIN_TOKEN} to enable /admin/keys")
    run_server(settings.model_copy(update={"models": upstreams}), refs)
