"""Slow, greedy and careless clients against a real `foundry serve` on 127.0.0.1 (issue
14): headers and bodies trickled a byte at a time, more connections than the cap, a
large body beside small requests, a client that hangs up mid-body.

One server for the module, with deadlines of 1 s (headers) and 3 s (bodies) and a cap of
24 connections, so each test stays short; every wait is bounded (BOUND_S) and nothing
asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time

import pytest
import yaml
from tests.serve.serve_app_support import shared_toy

from foundry.serve.loadtest import Server, free_port, serve_command

pytestmark = pytest.mark.slow

CAP = 24
BOUND_S = 20.0
"""Longest any test waits for the server to act; the deadlines under test are 1-3 s."""
TRICKLE_S = 0.2
"""A slow client sends one byte this often (five bytes per deadline)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    toy = shared_toy(tmp_path_factory)
    root = tmp_path_factory.mktemp("hostile")
    serve = {
        "header_timeout_s": 1, "body_timeout_s": 3, "max_connections": CAP,
        "max_body_bytes": 64_000_000, "metrics": "public",
        "plans": {"big": {"included_units": 10**9, "requests_per_minute": 100_000,
                          "max_records_per_request": 1_000_000}},
    }
    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({"serve": serve}))
    from foundry.config.schema import ServeConfig
    from foundry.serve.gate import Gate

    home = root / "home"  # a copy: the toy's home is shared by the session's tests
    shutil.copytree(toy.home, home)
    gate = Gate(ServeConfig.model_validate(serve).all_plans(), home=home)
    key = gate.create_key("hostile", "big").key
    gate.close()
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    port = free_port()
    with Server(serve_command(toy.ref, port, config=config), env=env,
                log=root / "server.log", cwd=root) as running:
        yield running, toy, key


def _run(coro):
    return asyncio.run(coro)


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _trickle(port: int, head: bytes, byte: bytes) -> tuple[bool, bytes]:
    """Send `head`, then `byte` every TRICKLE_S until the server closes the connection
    (or BOUND_S passes): (closed, everything the server sent)."""
    reader, writer = await _open(port)
    received = b""
    deadline = time.monotonic() + BOUND_S
    try:
        writer.write(head)
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), TRICKLE_S)
            except asyncio.TimeoutError:
                writer.write(byte)
                continue
            if not chunk:
                return True, received
            received += chunk
        return False, received
    except (ConnectionResetError, BrokenPipeError):
        return True, received
    finally:
        writer.close()


async def _request(reader, writer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()


def _post(path: str, body: bytes, key: str | None, length: int | None = None) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json",
            f"content-length: {len(body) if length is None else length}"]
    if key is not None:
        head.append(f"authorization: Bearer {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _status_of(received: bytes) -> int | None:
    return int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None


def test_slowloris_headers_are_answered_408_and_closed(server):
    """20 clients trickling one header byte every 0.2 s: each is closed after the 1 s
    header deadline, with a 408 in the error shape; then the server answers as usual."""
    running, _, _ = server
    head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "

    async def attack():
        return await asyncio.gather(*(_trickle(running.port, head, b"a") for _ in range(20)))

    outcomes = _run(attack())
    assert all(closed for closed, _ in outcomes), [r[:80] for _, r in outcomes]
    for _, received in outcomes:
        assert _status_of(received) == 408, received[:200]
        body = json.loads(received.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "request_timeout"
        assert "serve.header_timeout_s" in body["error"]["message"]

    async def after():
        reader, writer = await _open(running.port)
        try:
            return await _request(reader, writer, _get("/healthz"))
        finally:
            writer.close()

    assert _run(after())[0] == 200


def test_a_connection_that_sends_nothing_is_closed(server):
    running, _, _ = server
    closed, received = _run(_trickle(running.port, b"", b""))
    assert closed and _status_of(received) == 408


def test_slowloris_bodies_are_closed_after_the_body_deadline(server):
    """A body trickled a byte every 0.2 s: 408 and closed at the 3 s deadline; without a
    key the 401 comes at once (the body is never read) and the connection is closed at
    the deadline."""
    running, toy, key = server
    path = f"/v1/models/{toy.name}/predict"

    async def attack():
        keyed = [_trickle(running.port, _post(path, b"[", key, length=100_000), b" ")
                 for _ in range(10)]
        anonymous = [_trickle(running.port, _post(path, b"[", None, length=100_000), b" ")
                     for _ in range(5)]
        return await asyncio.gather(*keyed), await asyncio.gather(*anonymous)

    keyed, anonymous = _run(attack())
    assert all(closed for closed, _ in keyed + anonymous)
    assert [_status_of(r) for _, r in keyed] == [408] * 10
    for _, received in anonymous:
        assert _status_of(received) == 401
        assert received.count(b"HTTP/1.1 ") == 1  # no 408 after the answer


def test_past_the_connection_cap_a_request_gets_503_with_retry_after(server):
    running, _, _ = server

    async def crowd():
        held = [await _open(running.port) for _ in range(CAP)]
        try:
            for reader, writer in held:  # each answered: each connection is accepted
                assert (await _request(reader, writer, _get("/healthz")))[0] == 200
            reader, writer = await _open(running.port)
            refused = await _request(reader, writer, _get("/healthz"))
            writer.close()
        finally:
            for _, writer in held:
                writer.close()
        # Once they are gone, requests get in again.
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            reader, writer = await _open(running.port)
            status = (await _request(reader, writer, _get("/healthz")))[0]
            writer.close()
            if status == 200:
                return refused, status
            await asyncio.sleep(0.1)
        return refused, None

    (status, headers, body), later = _run(crowd())
    assert status == 503
    assert headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["code"] == "server_busy" and error["type"] == "server_error"
    assert "serve.max_connections" in error["message"]
    assert later == 200


def test_a_large_body_does_not_stop_other_clients(server):
    """While a 100,000-record body is parsed and checked, another client's one-record
    requests keep being answered. The big body's last byte is held back until the server
    has read the rest, so what follows it is the parse and the check alone (its last
    record is invalid: a 422 right after them). Before the fix they ran on the event
    loop and the small requests waited for the 422: at most one got in first."""
    running, toy, key = server
    path = f"/v1/models/{toy.name}/predict"
    records = toy.records(100) * 1000
    body = json.dumps([*records[:-1], {**records[-1], "colour": "red"}]).encode()
    small = _post(path, json.dumps(records[0]).encode(), key)

    async def race():
        big_reader, big_writer = await _open(running.port)
        reader, writer = await _open(running.port)
        assert (await _request(reader, writer, small))[0] == 200  # warm: the key cached
        request = _post(path, body, key)
        big_writer.write(request[:-1])
        await big_writer.drain()
        await asyncio.sleep(0.5)  # the server reads what was sent (not a measurement)
        big_task = asyncio.create_task(_request(big_reader, big_writer, request[-1:]))
        answered = []
        while not big_task.done() and len(answered) < 10_000:
            answered.append((await _request(reader, writer, small))[0])
        status, _, answer = await big_task
        writer.close()
        big_writer.close()
        return status, json.loads(answer), answered

    status, answer, answered = _run(race())
    assert status == 422 and answer["error"]["param"] == "[99999].colour", answer
    assert len(answered) >= 3 and set(answered) == {200}, answered


def test_a_large_body_is_answered_in_full(server):
    running, toy, key = server
    path = f"/v1/models/{toy.name}/predict"
    records = toy.records(100) * 1000

    async def big():
        reader, writer = await _open(running.port)
        try:
            return await _request(reader, writer, _post(path, json.dumps(records).encode(), key))
        finally:
            writer.close()

    status, _, answer = _run(big())
    predictions = json.loads(answer)["predictions"]
    assert status == 200 and len(predictions) == 100_000
    assert predictions[:100] == predictions[100:200]  # the same records, the same answers


def test_a_client_that_hangs_up_mid_body_is_one_log_line(server):
    running, toy, key = server
    path = f"/v1/models/{toy.name}/predict"
    before = running.log.read_text(errors="replace")

    async def hang_up():
        reader, writer = await _open(running.port)
        writer.write(_post(path, b'[{"age": 1', key, length=1_000))
        await writer.drain()
        await asyncio.sleep(0.2)  # the server is reading the body now
        writer.close()

    _run(hang_up())
    deadline = time.monotonic() + BOUND_S
    new = ""
    while time.monotonic() < deadline and "connection closed" not in new:
        time.sleep(0.1)
        new = running.log.read_text(errors="replace")[len(before):]
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 1, new
    assert "connection closed after 10 bytes of the body" in lines[0]
    assert "Traceback" not in new
