"""Two `foundry serve` processes on one PostgreSQL database: the quota holds across them.

This is the scale-out setup (docs: several workers behind a load balancer): the registry
index and the serving tables in PostgreSQL, the model packages in one FOUNDRY_HOME both
processes read. One key on a plan with a small hard quota gets concurrent requests of 1-3
records through both servers; the admitted units never exceed the quota, and the usage
table adds up exactly to what was answered 200.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from tests import pg_support
from tests.serve.serve_app_support import bearer, train_toy

from foundry.serve.store import api_keys, usage_events

QUOTA = 60
"""Units (records) the key's plan includes, hard limit."""
REQUESTS = 90
"""Requests of 1-3 records each: ~180 units asked for, three times the quota."""


def _wait_ready(proc: subprocess.Popen, url: str, log_path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"server not ready after {timeout} s:\n{log_path.read_text()}")


@pytest.mark.slow
def test_two_servers_on_one_postgres_hold_the_quota(postgres_url, tmp_path, monkeypatch):
    from foundry.config.schema import PlanConfig
    from foundry.serve.gate import Gate

    monkeypatch.setenv("FOUNDRY_DATABASE_URL", postgres_url)
    toy = train_toy(tmp_path / "toy")  # its index row in PostgreSQL, its package in home
    plans = {"capped": PlanConfig(included_units=QUOTA, hard_limit=True,
                                  requests_per_minute=100_000, max_records_per_request=3)}
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(
        {"serve": {"plans": {"capped": plans["capped"].model_dump(exclude_unset=True)}}}
    ))
    gate = Gate(plans)
    key = gate.create_key("acme", "capped").key
    gate.close()

    env = {**os.environ, "FOUNDRY_HOME": str(toy.home), "FOUNDRY_DATABASE_URL": postgres_url}
    servers = []
    try:
        for i in range(2):
            port = pg_support.free_port()
            log_path = tmp_path / f"server-{i}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "foundry", "serve", toy.ref, "--config", str(config),
                     "--port", str(port), "--workers", "1"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                )
            servers.append((proc, f"http://127.0.0.1:{port}", log_path))
        for proc, url, log_path in servers:
            _wait_ready(proc, url, log_path)

        rng = random.Random(0)
        sizes = [rng.randint(1, 3) for _ in range(REQUESTS)]
        records = toy.records(3)

        def send(i: int) -> tuple[int, int, str]:
            url = servers[i % 2][1]  # alternate: a round-robin load balancer
            answer = httpx.post(f"{url}/v1/models/{toy.name}/predict", json=records[:sizes[i]],
                                headers=bearer(key), timeout=60)
            code = answer.json().get("error", {}).get("code", "") if answer.is_error else ""
            return answer.status_code, sizes[i], code

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(send, range(REQUESTS)))
    finally:
        for proc, _, _ in servers:
            proc.send_signal(signal.SIGINT)
        for proc, _, _ in servers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    answered = [units for status, units, _ in answers if status == 200]
    refused = [(status, code) for status, _, code in answers if status != 200]
    assert set(refused) <= {(429, "quota_exceeded")}, refused
    assert len(answered) > 0 and refused, "the load must reach the quota"
    assert sum(answered) <= QUOTA
    assert sum(answered) > QUOTA - 3  # refused only when the request did not fit
    # Every answered request is one usage event, billed, with its records as units; the
    # quota counter agrees.
    gate = Gate(plans)
    try:
        with gate.store.read() as conn:
            events = conn.execute(
                select(func.count(), func.sum(usage_events.c.units)).where(
                    usage_events.c.status < 500
                )
            ).one()
            used = conn.scalar(select(api_keys.c.used_units))
            failed = conn.scalar(
                select(func.count()).select_from(usage_events).where(usage_events.c.status >= 500)
            )
    finally:
        gate.close()
    assert (events[0], events[1]) == (len(answered), sum(answered))
    assert used == sum(answered) and failed == 0
