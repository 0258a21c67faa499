"""`foundry cost`'s default measurement: a real `foundry serve` of a temporary copy of the
model under HTTP load (`foundry.economics.throughput.measure_server`). It must leave the
user's registry, keys and usage as they were, remove its temporary home and stop its
server, and fail with a clear error when the server cannot start or answers errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile

import pytest
from sqlalchemy import create_engine, func, inspect, select, table
from tests.serve.serve_app_support import shared_toy

from foundry.cli import main
from foundry.config.schema import CostConfig, ServeConfig
from foundry.economics import estimate
from foundry.errors import ModelError
from foundry.registry import Registry
from foundry.serve import loadtest
from foundry.serve.gate import Gate

QUICK = CostConfig(measure_seconds=0.3)
"""Short cases: these tests check what is measured and cleaned up, not how fast."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)


@pytest.fixture
def home(toy, tmp_path, monkeypatch):
    """The user's FOUNDRY_HOME: a copy of the toy's registry with a key that was used."""
    copy = tmp_path / "home"
    shutil.copytree(toy.home, copy)
    monkeypatch.setenv("FOUNDRY_HOME", str(copy))
    gate = Gate(home=copy)
    gate.create_key("customer", "pro")
    gate.close()
    return copy


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Where the measurement's temporary directories go (so they can be checked)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def servers(monkeypatch):
    """Every loadtest.Server started, to check that none is left running."""
    started: list[loadtest.Server] = []
    original = loadtest.Server.start

    def start(self: loadtest.Server) -> None:
        original(self)
        started.append(self)

    monkeypatch.setattr(loadtest.Server, "start", start)
    return started


def snapshot(home) -> dict:
    """Row counts of every table of the home's database (model versions, keys, usage,
    ...) and the files under it."""
    engine = create_engine(Registry(home).url)
    try:
        with engine.connect() as conn:
            rows = {name: conn.execute(select(func.count()).select_from(table(name))).scalar()
                    for name in inspect(conn).get_table_names()}
    finally:
        engine.dispose()
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                   if not p.name.startswith("foundry.db"))  # the WAL files come and go
    return {"rows": rows, "files": files}


def assert_stopped(servers: list[loadtest.Server]) -> None:
    assert servers, "no server was started"
    for server in servers:
        assert server.proc is not None and server.proc.poll() is not None
        with pytest.raises(ProcessLookupError):  # nothing left in its process group
            os.killpg(server.proc.pid, 0)


def test_server_measurement_prices_the_served_throughput_and_leaves_no_trace(
    toy, home, scratch, servers
):
    before = snapshot(home)
    assert before["rows"]["api_keys"] == 1 and before["rows"]["model_versions"] == 1
    e = estimate(toy.ref, QUICK, registry=Registry(home))
    t = e.throughput
    assert (t.measure, t.basis, t.unit) == ("server", "server", "prediction")
    assert [c.clients for c in t.server_cases] == [1, 8, 32]
    assert all(c.per_second > 0 and c.requests > 0 and c.p50_ms > 0 for c in t.server_cases)
    assert t.server == max(c.per_second for c in t.server_cases) == t.per_machine
    assert t.single is None and t.serving is None  # not measured in process
    assert e.cost_per_1k == 0.10 / (3600 * t.server * 0.5) * 1000
    assert t.rows == 16 and "val split" in t.source and "foundry serve" in t.why
    # the user's registry, keys and usage are as they were; nothing temporary is left
    assert snapshot(home) == before
    assert list(scratch.iterdir()) == []
    assert_stopped(servers)


def test_a_server_that_fails_to_start_is_a_clear_error(toy, home, scratch, servers,
                                                       monkeypatch):
    with socket.socket() as taken:  # bound, not listening: the server cannot bind it
        taken.bind(("127.0.0.1", 0))
        monkeypatch.setattr(loadtest, "free_port", lambda: taken.getsockname()[1])
        with pytest.raises(ModelError, match="the server exited with code") as error:
            estimate(toy.ref, QUICK, registry=Registry(home))
    assert "address already in use" in str(error.value)  # the server's own log says why
    assert list(scratch.iterdir()) == []
    assert_stopped(servers)


def test_error_answers_fail_the_measurement(toy, home, scratch, servers):
    tiny = ServeConfig(max_body_bytes=10)  # every record is larger: 413
    with pytest.raises(ModelError, match=r"answered \d+ of \d+ requests at 1 client\(s\) "
                       r"with errors \{413: \d+\}"):
        estimate(toy.ref, QUICK, serve=tiny, registry=Registry(home))
    assert list(scratch.iterdir()) == []
    assert_stopped(servers)


def test_cost_command_shows_the_server_cases(toy, home, servers, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["foundry", "cost", toy.name, "--seconds", "0.3"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert (exit_.value.code or 0) == 0, out.err
    for text in ("server, 1 client(s)", "server, 8 client(s)", "server, 32 client(s)",
                 "← used", "through foundry serve (1 worker(s))", "the server's best"):
        assert text in out.out, text
    assert "in process" not in out.out  # --measure model was not run
    assert "32 client(s):" in out.err  # progress lines
    version = toy.ref.split(":")[1]
    saved = json.loads((home / "economics" / "toy" / f"{version}.json").read_text())
    assert saved["throughput"]["measure"] == "server"
    assert len(saved["throughput"]["server_cases"]) == 3
    assert_stopped(servers)
