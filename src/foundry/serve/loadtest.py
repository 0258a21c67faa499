"""Load-test a running `foundry serve`: a server subprocess on a free loopback port, and
concurrent keep-alive HTTP/1.1 clients that send prepared requests as fast as it answers.

    port = free_port()
    server = Server(serve_command("adult:3", port, workers=1), env=env, log=tmp / "log")
    with server:                                           # start, wait for /readyz, stop
        requests = [predict_request(port, "adult", body, key) for body in bodies]
        result = run_load(port, requests, clients=8, seconds=2.0)
    result.per_second, result.p50_ms, result.p99_ms, result.errors

The clients are raw HTTP/1.1 on asyncio streams (`RawConnection`, ~0.05-0.2 ms of CPU per
request), all in this process: httpx's AsyncClient costs 2-4 ms of CPU per request and
tops out near 180 requests/s, so with it a load test measures the client, not the
server. Each client sends its next request when the last is answered (a closed loop: the
server's throughput at that concurrency). Used by `foundry cost` (`foundry.economics`)
and benchmarks/serve_load.py, benchmarks/cost.py. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from foundry.errors import ModelError

__all__ = [
    "LoadResult",
    "RawConnection",
    "Server",
    "drive",
    "free_port",
    "predict_request",
    "run_load",
    "serve_command",
]

READY_TIMEOUT_S = 300.0
"""How long a server may take to load its models (a large model on a busy machine)."""
STOP_TIMEOUT_S = 30.0
"""How long a graceful stop (SIGINT: uvicorn drains requests) may take before SIGKILL."""
LOG_TAIL_CHARS = 2000
"""Characters of the server's log quoted in an error."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before the server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(ref: str, port: int, *, workers: int = 1,
                  config: Path | None = None) -> list[str]:
    """`python -m foundry serve REF` on 127.0.0.1:`port` with `workers` workers."""
    command = [sys.executable, "-m", "foundry", "serve", ref, "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    return command + (["--config", str(config)] if config is not None else [])


# ----------------------------------------------------------------------------- server


@dataclass
class Server:
    """A server subprocess (`command` binds 127.0.0.1:`port`), its output in `log`.

    It runs in its own process group, so `stop` reaches the uvicorn workers too. As a
    context manager: `start` + `wait_ready` on entry, `stop` on exit (also on errors)."""

    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = 0
    """0: taken from the command's `--port`."""
    workers: int = 1
    cwd: Path | None = None
    tls_ca: Path | None = None
    """The CA that signed the server's certificate when it serves HTTPS (`--tls-cert`)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.port and "--port" in self.command:
            self.port = int(self.command[self.command.index("--port") + 1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.cwd,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until /readyz answers 200 and every worker logged its startup; ModelError
        (with the log's end) if the process exits or `timeout` passes first."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModelError(f"the server exited with code {self.proc.returncode} "
                                  f"before it was ready:\n{self.log_tail()}")
            # /readyz is answered by whichever worker accepts; each logs its startup.
            started = self.log.read_text(errors="replace").count("Application startup complete.")
            if started >= self.workers and self._ready():
                return
            time.sleep(0.2)
        raise ModelError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            context = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5,
                                        context=context) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):  # refused, 503 while loading, timeout
            return False

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return text[-LOG_TAIL_CHARS:].strip() or "(no output)"

    def stop(self) -> None:
        """SIGINT to the process group (graceful), SIGKILL after STOP_TIMEOUT_S."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            self.proc.wait()

    def __enter__(self) -> Server:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# ------------------------------------------------------------------------------- load


def predict_request(
    port: int, model: str, body: bytes, key: str | None, *, route: str = "predict"
) -> bytes:
    """The bytes of one POST /v1/models/{model}/{route} (predict, or recommend) with a
    JSON `body` (`key`: the bearer key; None for a server without keys)."""
    head = [f"POST /v1/models/{model}/{route} HTTP/1.1", f"host: 127.0.0.1:{port}",
            "content-type: application/json", f"content-length: {len(body)}"]
    if key is not None:
        head.append(f"authorization: Bearer {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawConnection:
    """One keep-alive HTTP/1.1 connection: sends a prepared request and reads the answer
    by its content-length (the cheapest client asyncio allows)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to `request`."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise ModelError(f"an answer without content-length: {head[:200]!r}")
        return int(head[9:12]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class LoadResult:
    """What `clients` concurrent clients got in `seconds`."""

    clients: int
    errors: dict[int, int] = field(default_factory=dict)
    """Other answers, by status."""
    first_error: str = ""
    """The body of the first non-200 answer (what went wrong)."""
    seconds: float = 0.0
    client_cpu: float = 0.0
    """CPU seconds the clients (this process) used meanwhile."""
    latencies: list[float] = field(default_factory=list, repr=False)
    """Seconds per 200 answer."""

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        """200 answers per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def client_cpu_share(self) -> float:
        """Share of one core the clients used: near 1, they may cap the throughput."""
        return self.client_cpu / self.seconds if self.seconds else 0.0


async def drive(port: int, requests: Sequence[bytes], *, clients: int, seconds: float,
                max_requests: int | None = None) -> LoadResult:
    """`clients` connections, each sending the next of `requests` (in turn, repeated)
    when its last one is answered, for `seconds` or until `max_requests` were sent. Each
    connection first sends one untimed request (connect, warm up)."""
    if not requests:
        raise ValueError("no requests to send")
    result = LoadResult(clients)
    connections = [await RawConnection.open(port) for _ in range(clients)]
    try:
        sent = 0

        async def one(connection: RawConnection, timed: bool) -> None:
            nonlocal sent
            request = requests[sent % len(requests)]
            sent += 1
            started = time.perf_counter()
            status, body = await connection.send(request)
            if not timed:
                return
            if status == 200:
                result.latencies.append(time.perf_counter() - started)
            else:
                result.errors[status] = result.errors.get(status, 0) + 1
                result.first_error = result.first_error or body[:500].decode(errors="replace")

        async def client(connection: RawConnection) -> None:
            while time.perf_counter() < deadline and (max_requests is None
                                                      or sent < max_requests):
                await one(connection, timed=True)

        await asyncio.gather(*(one(c, timed=False) for c in connections))
        sent = 0
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.wait_for(asyncio.gather(*(client(c) for c in connections)),
                               seconds + 120)
        result.seconds = time.perf_counter() - started
        result.client_cpu = time.process_time() - cpu
    finally:
        for connection in connections:
            await connection.close()
    return result


def run_load(port: int, requests: Sequence[bytes], *, clients: int, seconds: float,
             max_requests: int | None = None) -> LoadResult:
    """`drive` from synchronous code, also where an event loop already runs (a notebook):
    then on a thread of its own."""
    work = lambda: asyncio.run(drive(port, requests, clients=clients,  # noqa: E731
                                     seconds=seconds, max_requests=max_requests))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()
