"""A real S3-compatible server for the tests: moto in server mode, and buckets on it.

    FOUNDRY_TEST_S3_URL   a server to use (CI sets it: `.ci/run` starts `moto.server`)
    otherwise             `python -m moto.server` on a free 127.0.0.1 port for the session

No server (moto not installed: `pip install -e '.[dev]'`) fails the tests that need one;
they never skip. moto takes any credentials; `CREDENTIALS` are what the tests send.
Imported by tests/conftest.py and by benchmarks/artifact_load.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from foundry.serve.loadtest import free_port

URL_ENV = "FOUNDRY_TEST_S3_URL"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "foundry-test",
    "AWS_SECRET_ACCESS_KEY": "foundry-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 60.0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:  # an S3 error document is an answer too
        return True
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def s3_endpoint() -> Iterator[str]:
    """FOUNDRY_TEST_S3_URL, else a moto server of our own for as long as the block runs;
    yields its http:// URL. RuntimeError (with the server's output) if it cannot start."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="foundry-moto-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"no S3 server for the tests: {URL_ENV} is unset and `python -m "
                    f"moto.server` did not start (install the dev extra: pip install -e "
                    f"'.[dev]'):\n{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def environment(endpoint: str) -> dict[str, str]:
    """The variables that point foundry (and botocore) at the test server."""
    return {**CREDENTIALS, "FOUNDRY_S3_ENDPOINT_URL": endpoint}


def create_bucket() -> str:
    """A new, empty bucket on the server the environment names; its s3:// URL."""
    from foundry.errors import ModelError
    from foundry.objectstore import filesystem

    name = f"foundry-test-{uuid.uuid4().hex[:12]}"
    filesystem(error=ModelError).mkdir(name)
    return f"s3://{name}"
