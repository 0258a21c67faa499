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
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from foundry.db import sqlite_file

    try:
        path = sqlite_file(url)
    except ArgumentError:
        raise ConfigError(f"tune.storage: '{safe_url(url)}' is not a database URL") from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=60, grace_period=180
                )
            if path is not None:
                _sqlite_wal(storage.engine)
            return storage
        except (ImportError, ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(f"tune.storage: cannot use '{safe_url(url)}': {exc}") from None
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if attempt == 5:
                raise ConfigError(f"tune.storage: cannot open '{safe_url(url)}': {exc}") from None
            time.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_wal(engine: Any) -> None:
    """Write-ahead log with `synchronous=NORMAL` on the study's SQLite file: a trial makes
    ~20 small commits (params, one value per epoch, attributes, state), and in the default
    rollback-journal mode each waits for an fsync (~10 ms); in WAL mode readers in other
    processes also go on while one writes. Local disks only, as SQLite itself requires."""
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while creating the tables predate the hook
