"""Running the API under uvicorn, with one or several worker processes.

uvicorn starts several workers only from an import string, so the app is built by a
module-level factory, `app_from_env`, in each worker process. `run_server` hands it the
settings through environment variables, which worker processes inherit:

    FOUNDRY_SERVE_CONFIG   the ServeConfig as JSON
    FOUNDRY_SERVE_MODELS   the model references as a JSON list (pinned: `adult:3`)
    FOUNDRY_ADMIN_TOKEN    enables the /admin routes (read, never written, here)
    FOUNDRY_SERVE_BARE     "1": the benchmark-only variant without keys and metering
    FOUNDRY_HOME / FOUNDRY_DATABASE_URL   the registry (and the keys' database), as usual

Each worker loads its models once, at startup, and has its own batchers and share of
the cores for PyTorch (`app.inference_threads`); they share the database, so rate limits
and quotas hold across workers, and with several workers they share their metrics through
a directory of this server's (`metrics_directory`; foundry.serve.metrics), so `/metrics`
sums them whichever worker answers.

    uvicorn --factory foundry.serve.server:app_from_env \
        --http foundry.serve.http_limits:GuardedHttpToolsProtocol   # the same, by hand
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

from fastapi import FastAPI

from foundry.config.schema import ServeConfig

ENV_CONFIG = "FOUNDRY_SERVE_CONFIG"
ENV_MODELS = "FOUNDRY_SERVE_MODELS"
ENV_ADMIN_TOKEN = "FOUNDRY_ADMIN_TOKEN"
ENV_BARE = "FOUNDRY_SERVE_BARE"
FACTORY = "foundry.serve.server:app_from_env"


def app_from_env() -> FastAPI:
    """The app of one worker process, from the environment `run_server` set."""
    from foundry.serve.app import create_app

    config = ServeConfig.model_validate_json(os.environ.get(ENV_CONFIG) or "{}")
    models = json.loads(os.environ.get(ENV_MODELS) or "[]")
    app = create_app(
        config,
        models,
        admin_token=os.environ.get(ENV_ADMIN_TOKEN) or None,
        bare=os.environ.get(ENV_BARE) == "1",
    )
    if config.tls.enabled:  # HSTS, and mutual TLS on /admin (foundry.serve.tls)
        from foundry.serve.tls import TLSHeaders

        app.add_middleware(
            TLSHeaders,
            hsts_max_age_s=config.tls.hsts_max_age_s,
            require_client_cert=bool(config.tls.client_ca),
        )
    return app


def run_server(
    config: ServeConfig,
    models: list[str],
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    *,
    access_log: bool = False,
    log_level: str = "info",
    bare: bool = False,
) -> None:
    """Serve `config.models` + `models` until interrupted (Ctrl-C / SIGTERM: graceful).

    host / port / workers override the config's. Access logs are off by default: they
    cost more per request than the metrics, which count every request anyway.
    """
    import uvicorn

    from foundry.serve.http_limits import PROTOCOL
    from foundry.serve.tls import uvicorn_options

    refs = list(dict.fromkeys([*config.model_refs(), *models]))
    config = ServeConfig.model_validate(
        {
            **config.model_dump(),
            "host": host if host is not None else config.host,
            "port": port if port is not None else config.port,
            "workers": workers if workers is not None else config.workers,
            # registry models travel in FOUNDRY_SERVE_MODELS; upstreams stay here
            "models": [u.model_dump() for u in config.upstreams()],
        }
    )
    os.environ[ENV_CONFIG] = config.model_dump_json()
    os.environ[ENV_MODELS] = json.dumps(refs)
    if bare:
        os.environ[ENV_BARE] = "1"
    else:
        os.environ.pop(ENV_BARE, None)
    with metrics_directory(config.workers):
        uvicorn.run(
            FACTORY,
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            access_log=access_log,
            log_level=log_level,
            log_config=log_config(),
            timeout_graceful_shutdown=10,
            # Header / body deadlines and the connection cap (serve.header_timeout_s,
            # body_timeout_s, max_connections), read from FOUNDRY_SERVE_CONFIG per worker.
            http=PROTOCOL,
            ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP
            # serve.tls: HTTPS on this same socket, TLS 1.2+ (no plain listener besides).
            **uvicorn_options(config.tls),
        )


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """With several workers: PROMETHEUS_MULTIPROC_DIR for them to share their metrics,
    set before they start (prometheus_client reads it at import), empty at start (files
    of a former server would be counted again) and removed at the end. A directory the
    user set is kept, and its `*.db` files are cleared; a fresh temporary one otherwise."""
    from foundry.serve.metrics import MULTIPROC_ENV

    if workers <= 1:
        yield
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        yield
        return
    path = tempfile.mkdtemp(prefix="foundry-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def log_config() -> dict:
    """uvicorn's logging, plus foundry's serving logger (`foundry.serve`: failures, slow
    clients closed, clients gone) at INFO through the same handler and format; without
    it Python prints only its warnings, bare."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["foundry"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
