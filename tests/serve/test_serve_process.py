"""`foundry serve` as a real process: uvicorn, two workers, HTTP over loopback; `/metrics`
sums both workers (prometheus_client's multiprocess mode, foundry.serve.metrics)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
from tests.serve.serve_app_support import assert_matches, bearer

from foundry.serve.loadtest import free_port


def _serve_command(model: str, port: int) -> list[str]:
    """`python -m foundry serve ...` once cli.py registers the command; until then the
    same command function, called from `python -c`."""
    from foundry.cli import app

    args = [model, "--port", str(port), "--workers", "2"]
    if any((c.name or c.callback.__name__) == "serve" for c in app.registered_commands):
        return [sys.executable, "-m", "foundry", "serve", *args]
    code = (
        "from foundry.serve.cli_serve import serve; "
        f"serve([{model!r}], None, '127.0.0.1', {port}, 2)"
    )
    return [sys.executable, "-c", code]


def _wait_ready(proc: subprocess.Popen, url: str, log_path, timeout: float = 120.0) -> None:
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


def test_serve_process_answers_over_http(toy, tmp_path):
    from foundry.serve.gate import Gate

    # A copy: the toy's home is shared by the session's tests, and a key left in it
    # changes what tests/economics counts.
    home = tmp_path / "home"
    shutil.copytree(toy.home, home)
    gate = Gate(home=home)
    key = gate.create_key("acme", "pro").key
    gate.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # TMPDIR: the server's metrics directory (foundry-metrics-*) lands where the test sees it
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "FOUNDRY_HOME": str(home),
        "FOUNDRY_ADMIN_TOKEN": "admin-secret",
        "TMPDIR": str(scratch),
    }
    env.pop("FOUNDRY_DATABASE_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _serve_command(toy.name, port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait_ready(proc, url, log_path)
        records = toy.records(8)
        with httpx.Client(base_url=url, timeout=30) as client:
            answers = [
                client.post(f"/v1/models/{toy.name}/predict", json=records, headers=bearer(key))
                for _ in range(4)
            ]
            missing_key = client.post(f"/v1/models/{toy.name}/predict", json=records)
            usage = client.get("/v1/usage", headers=bearer(key)).json()
            keys = client.get("/admin/keys", headers=bearer("admin-secret"))
            metrics = client.get("/metrics", headers=bearer("admin-secret")).text
            models = client.get("/v1/models").json()
        # One connection per request, until both workers have answered some (the kernel
        # hands each new connection to either); then every scrape, whichever worker
        # answers it, shows the requests of both.
        (metrics_dir,) = scratch.glob("foundry-metrics-*")
        answered = len(answers)
        while len(_requests_by_worker(metrics_dir)) < 2 and answered < 200:
            one = httpx.post(
                f"{url}/v1/models/{toy.name}/predict",
                json=records[:1],
                headers=bearer(key),
                timeout=30,
            )
            assert one.status_code == 200, one.text
            answered += 1
        by_worker = _requests_by_worker(metrics_dir)
        assert len(by_worker) == 2, by_worker
        assert sum(by_worker.values()) == answered
        scrapes = [
            httpx.get(f"{url}/metrics", headers=bearer("admin-secret")).text for _ in range(6)
        ]
        assert {_requests_ok(scrape) for scrape in scrapes} == {answered}
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert_matches(answer.json()["predictions"], toy.expected(records), "tier")
        assert missing_key.status_code == 401
        assert missing_key.json()["error"]["code"] == "missing_api_key"
        assert usage["units_used"] == 32  # counted in the shared database, whichever worker
        assert keys.status_code == 200
        assert "foundry_requests_total" in metrics
        assert [m["ref"] for m in models["models"]] == [toy.ref]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert f"{url}/docs" in output  # the start banner names the docs
    assert toy.ref in output


def _requests_ok(exposition: str) -> float:
    """foundry_requests_total{status="200"} summed over models, from /metrics' text."""
    pattern = r'^foundry_requests_total\{[^}]*status="200"[^}]*\} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, exposition, flags=re.MULTILINE))


def _requests_by_worker(metrics_dir) -> dict[str, float]:
    """Answered predict requests per worker pid, each worker's counter file read alone
    (prometheus_client's collector on a directory holding only that file)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        alone = metrics_dir.parent / f"alone-{path.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        n = _requests_ok(generate_latest(registry).decode())
        if n:
            counts[path.stem] = n
    return counts
