"""The issue's check: the cost per 1,000 predictions agrees with a throughput measured
independently, against a real `foundry serve` process under concurrent HTTP load.

1. `foundry serve` (one worker) answers CLIENTS concurrent clients, one record per
   request, REQUESTS requests in all; the throughput is predictions answered / seconds.
2. `foundry cost --throughput <that>` gives exactly the formula's cost per 1k.
3. `foundry cost` measuring in process (no HTTP, no keys, no metering): its full-batch
   throughput is at least the HTTP one, and its cost per 1k (one record per forward pass)
   at most 10 times the HTTP cost. No timing is compared more tightly than that.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from tests.serve.serve_app_support import bearer, shared_toy
from tests.serve.test_serve_process import _free_port, _wait_ready

CLIENTS = 8
REQUESTS = 400


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)


async def _load(url: str, path: str, key: str, record: dict) -> tuple[int, float]:
    """(predictions answered, seconds) for REQUESTS requests from CLIENTS clients."""
    sent = 0
    answered = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal sent, answered
        while sent < REQUESTS:
            sent += 1
            response = await client.post(path, json=record, headers=bearer(key))
            assert response.status_code == 200, response.text
            answered += len(response.json()["predictions"])

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client.post(path, json=record, headers=bearer(key))
                               for _ in range(CLIENTS)))  # connections open, model warm
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(CLIENTS)))
        return answered, time.perf_counter() - started


def _cost(env: dict[str, str], *args: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-m", "foundry", "cost", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_cost_per_1k_agrees_with_a_throughput_measured_over_http(toy, tmp_path):
    from foundry.serve.gate import Gate

    home = tmp_path / "home"
    shutil.copytree(toy.home, home)
    gate = Gate(home=home)
    key = gate.create_key("load", "enterprise").key
    gate.close()
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foundry", "serve", toy.ref, "--port", str(port),
             "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    try:
        _wait_ready(proc, url, log_path)
        answered, seconds = asyncio.run(
            _load(url, f"/v1/models/{toy.name}/predict", key, toy.records(1)[0])
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert answered == REQUESTS
    http_throughput = answered / seconds

    supplied = _cost(env, toy.ref, "--throughput", repr(http_throughput))
    assert supplied["throughput"]["per_machine"] == http_throughput
    assert supplied["cost_per_1k"] == 0.10 / (3600 * http_throughput * 0.5) * 1000

    measured = _cost(env, toy.ref, "--seconds", "0.5")
    # Full batches in process are an upper bound of what the server can answer: the same
    # predict_records, without HTTP, JSON, keys or metering, at the largest batch.
    assert measured["throughput"]["serving"] >= http_throughput
    # The default cost (one record per forward pass) is within a loose factor of 10 of
    # the HTTP cost (benchmarks/cost.py: 0.7x with a fast client on 2 cores).
    assert measured["throughput"]["basis"] == "single"
    assert measured["cost_per_1k"] <= 10 * supplied["cost_per_1k"]
