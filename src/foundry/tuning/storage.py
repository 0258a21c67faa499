"""The study's storage: Optuna's RDB storage on SQLite (one machine) or PostgreSQL."""

from __future__ import annotations

import time
import warnings
from typing import Any

from foundry.db import safe_url
from foundry.errors import ConfigError

__all__ = ["open_storage"]


def open_storage(url: str) -> Any:
    """Optuna's RDB storage at `url`: a SQLite file waits up to a minute for another
    process's write lock; a fresh database whose tables two processes create at the same
    moment is retried. A worker that dies leaves a RUNNING trial, which the heartbeat
    turns into FAIL after `grace_period` seconds."""
    import optuna
    from sqlalchemy import event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from foundry.db import normalize_url, sqlite_file, sqlite_on_connect

    try:
        path = sqlite_file(url)
    except ArgumentError:
        raise ConfigError(f"tune.storage: '{safe_url(url)}' is not a database URL") from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    # postgresql:// means psycopg 3 here too, the driver foundry installs
    target = normalize_url(url).render_as_string(hide_password=False)
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    target, engine_kwargs=engine_kwargs, heartbeat_interval=60, grace_period=180
                )
            if path is not None:
                # A trial makes ~20 small commits: WAL spares each an fsync and lets
                # other processes read meanwhile; the switch is retried while the
                # `--jobs` processes open the file together.
                event.listen(storage.engine, "connect", sqlite_on_connect)
                storage.engine.dispose()  # connections made for the tables predate it
            return storage
        except (ImportError, ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(f"tune.storage: cannot use '{safe_url(url)}': {exc}") from None
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if attempt == 5:
                raise ConfigError(f"tune.storage: cannot open '{safe_url(url)}': {exc}") from None
            time.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")

