"""A real MLflow tracking server for the tracking tests: FOUNDRY_TEST_MLFLOW_URL when set
(.ci/run starts one at the beginning of the suite), else one started here for the session
on a free port, with a SQLite backend and an artifact folder in a temporary directory.
A server that cannot start fails the tests, never skips them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from foundry.serve.loadtest import free_port

_START_TIMEOUT_S = 180  # a cold start (imports, its database migrations) takes ~30 s on 2 cores


def wait_for_mlflow(url: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.5)
    output = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(
        f"no MLflow server at {url} (install the tracking extra: pip install "
        f"'foundry[tracking]', or set FOUNDRY_TEST_MLFLOW_URL)\n{output}"
    )


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory):
    url = os.environ.get("FOUNDRY_TEST_MLFLOW_URL")
    if url:
        wait_for_mlflow(url.rstrip("/"))
        yield url.rstrip("/")
        return
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = root / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--default-artifact-root",
                str(root / "artifacts"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_mlflow(url, process, log)
        yield url
    finally:  # the group: uvicorn's workers and MLflow's job runner are its children
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
