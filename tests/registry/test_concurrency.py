"""Concurrent registrations get distinct, consecutive versions."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
import torch

from foundry.db import database_url
from foundry.registry import Registry

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)


def _register_many(home: str, name: str, count: int, start=None) -> list[int]:
    reg = Registry(home)
    if start is not None:
        start.wait(timeout=120)  # all processes begin registering together
    versions = []
    for i in range(count):
        rec = reg.register(
            name,
            weights={"w": torch.full((4,), float(i))},
            manifest={"writer": i},
            metrics={},
            card="",
        )
        versions.append(rec.version)
    return versions


def _check_store(home, name: str, expected: int) -> None:
    reg = Registry(home)
    records = reg.versions(name)
    assert [r.version for r in records] == list(range(1, expected + 1))
    for rec in records:  # each directory holds the package its row describes
        manifest = json.loads((rec.path / "foundry.json").read_text())
        assert manifest["version"] == rec.version
    assert sorted(p.name for p in (home / "models" / name).iterdir()) == sorted(
        str(v) for v in range(1, expected + 1)
    )


def test_threads_get_distinct_consecutive_versions(foundry_home):
    shared = Registry(foundry_home)
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        # Half the threads share one Registry (one engine), half bring their own.
        reg = shared if i % 2 else Registry(foundry_home)
        try:
            barrier.wait()
            rec = reg.register("t", weights={"w": torch.zeros(2)}, manifest={}, metrics={}, card="")
            results.append(rec.version)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == list(range(1, 7))
    _check_store(foundry_home, "t", 6)


def test_processes_get_distinct_consecutive_versions(foundry_home):
    Registry(foundry_home).list_models()  # nothing created yet: both children race on setup
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_register_many, args=(str(foundry_home), "p", 3, start))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    _check_store(foundry_home, "p", 6)


def test_writers_sharing_the_database_but_not_the_directory(tmp_path, monkeypatch):
    """A stale version guess is caught by the unique (name, version) constraint."""
    url = database_url(tmp_path)  # FOUNDRY_DATABASE_URL, else <tmp_path>/foundry.db
    first, second = Registry(tmp_path / "a", url=url), Registry(tmp_path / "b", url=url)
    first.register("m", weights={"w": torch.ones(1)}, manifest={}, metrics={}, card="")
    real = Registry._max_version
    calls = []

    def stale_once(self, name):
        calls.append(name)
        return 0 if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(Registry, "_max_version", stale_once)
    rec = second.register("m", weights={"w": torch.zeros(1)}, manifest={}, metrics={}, card="")
    assert rec.version == 2 and len(calls) == 2
    assert [p.name for p in (second.home / "models" / "m").iterdir()] == ["2"]
    assert [r.version for r in first.versions("m")] == [1, 2]
