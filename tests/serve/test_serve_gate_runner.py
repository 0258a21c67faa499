"""GateRunner: admissions from the event loop, grouped on the gate's thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from foundry.config.schema import PlanConfig
from foundry.serve import gate_runner
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate
from foundry.serve.gate_api import Admission, AdmitRequest
from foundry.serve.gate_runner import GateRunner

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)

PLANS = {"q100": PlanConfig(included_units=100, hard_limit=True, requests_per_minute=100_000)}


@pytest.fixture
def gate(foundry_home):
    g = Gate(PLANS)
    g.start()  # as a server does at startup: the lease, so groups can run on the loop
    yield g
    g.close()


@pytest.mark.parametrize("inline", [True, False], ids=["loop", "thread"])
def test_concurrent_admissions_share_transactions_and_hold_the_quota(gate, inline, db_backend):
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"
    gate.authenticate(bearer)  # cached: the loop may admit it

    async def main():
        runner = GateRunner(gate, inline=inline)
        outcomes = await asyncio.gather(
            *(runner.admit(AdmitRequest(bearer, "m", 1, f"r{i}")) for i in range(300)),
            return_exceptions=True,
        )
        await runner.close()
        return runner, outcomes

    runner, outcomes = asyncio.run(main())
    admitted = [o for o in outcomes if isinstance(o, Admission)]
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(admitted) == 100 and len(refused) == 200
    assert {e.code for e in refused} == {"quota_exceeded"}
    assert len({a.event_id for a in admitted}) == 100
    if db_backend == "sqlite":  # 300 requests queued at once: far fewer transactions
        assert 1 <= runner.groups < 300
        assert runner.inline_groups == (runner.groups if inline else 0)
    else:  # PostgreSQL: groups of up to PG_MAX_GROUP, on the threads (see gate_runner)
        assert runner.max_group == gate_runner.PG_MAX_GROUP
        assert -(-300 // runner.max_group) <= runner.groups < 300
        assert runner.inline_groups == 0
    assert gate.usage(admitted[0].key)["reserved_units"] == 100  # admitted, not answered


@pytest.mark.parametrize("inline", [True, False], ids=["loop", "thread"])
def test_a_lone_request_is_admitted_at_once(gate, inline):
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"

    async def main():
        runner = GateRunner(gate, inline=inline)
        first = await runner.admit(AdmitRequest(bearer, "m", 2, "a"))
        with pytest.raises(ApiError) as refused:
            await runner.admit(AdmitRequest("Bearer nope", "m", 1, "b"))
        await runner.close()
        return runner, first, refused.value

    runner, first, refused = asyncio.run(main())
    assert first.event_id is not None and refused.status == 401
    assert runner.groups == 2


def test_other_calls_are_not_starved_by_a_stream_of_admissions(gate):
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"
    slow_admissions = threading.Event()
    real = gate.admit_many

    def slow(requests):
        time.sleep(0.005)  # every group holds the thread a while
        slow_admissions.set()
        return real(requests)

    gate.admit_many = slow  # type: ignore[method-assign]

    async def main():
        runner = GateRunner(gate, inline=False)
        stop = asyncio.Event()

        async def client(i: int) -> None:
            n = 0
            while not stop.is_set():
                await runner.admit(AdmitRequest(bearer, "m", 0, f"c{i}-{n}"))
                n += 1

        clients = [asyncio.create_task(client(i)) for i in range(8)]
        while not slow_admissions.is_set():
            await asyncio.sleep(0.001)
        # Queued behind the next group only; a starved call would never return, as the
        # clients stop only after it did.
        keys = await asyncio.wait_for(runner.call(gate.list_keys), 60)
        stop.set()
        await asyncio.gather(*clients)
        await runner.close()
        return keys

    keys = asyncio.run(main())
    assert len(keys) == 1


def test_after_close_queued_requests_are_refused_with_503(gate):
    async def main():
        runner = GateRunner(gate)
        await runner.close()
        with pytest.raises(ApiError) as refused:
            await runner.admit(AdmitRequest(None, "m", 1, "late"))
        return refused.value

    refused = asyncio.run(main())
    assert refused.status == 503 and refused.code == "shutting_down"


@pytest.mark.sqlite_only  # holds SQLite's write lock from another connection
def test_a_held_write_lock_sends_the_group_to_the_thread_which_waits(gate):
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"
    gate.authenticate(bearer)  # cached: the loop may admit it
    holder = sqlite3.connect(gate.store.url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's admission, say

    async def main():
        runner = GateRunner(gate)
        pending = asyncio.ensure_future(runner.admit(AdmitRequest(bearer, "m", 1, "a")))
        await asyncio.sleep(0.2)
        assert not pending.done() and runner.inline_groups == 0  # waiting on the thread
        holder.execute("COMMIT")
        admission = await asyncio.wait_for(pending, 30)
        second = await runner.admit(AdmitRequest(bearer, "m", 1, "b"))
        await runner.close()
        return runner, admission, second

    try:
        runner, admission, second = asyncio.run(main())
    finally:
        holder.close()
    assert admission.event_id is not None and second.event_id is not None
    assert runner.groups == 2 and runner.inline_groups == 1  # the second: on the loop


@pytest.mark.sqlite_only  # the WAL is SQLite's
def test_the_loop_checkpoints_the_wal_on_the_thread(gate, monkeypatch):
    monkeypatch.setattr(gate_runner, "CHECKPOINT_S", 0.0)
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"
    gate.authenticate(bearer)
    ran = []
    real = gate.checkpoint
    gate.checkpoint = lambda: (ran.append(threading.current_thread().name), real())[1]

    async def main():
        runner = GateRunner(gate)
        for i in range(5):
            await runner.admit(AdmitRequest(bearer, "m", 1, f"r{i}"))
            await asyncio.sleep(0.05)
        await runner.close()

    asyncio.run(main())
    assert ran and all(name.startswith("foundry-gate") for name in ran)
    with sqlite3.connect(gate.store.url.removeprefix("sqlite:///")) as conn:
        busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and copied == wal_frames


@pytest.mark.sqlite_only  # PostgreSQL never admits on the loop
def test_a_request_alone_is_admitted_in_the_same_turn(gate):
    bearer = f"Bearer {gate.create_key('acme', 'q100').key}"
    gate.authenticate(bearer)

    async def main():
        runner = GateRunner(gate)
        turns = []
        asyncio.get_running_loop().call_soon(turns.append, "next turn")
        admission = await runner.admit(AdmitRequest(bearer, "m", 1, "a"), alone=True)
        seen_then = list(turns)  # the request never yielded to the loop
        with pytest.raises(ApiError, match="quota"):
            await runner.admit(AdmitRequest(bearer, "m", 100, "b"), alone=True)
        await runner.close()
        return runner, admission, seen_then

    runner, admission, seen_then = asyncio.run(main())
    assert seen_then == [] and admission.event_id is not None
    assert runner.inline_groups == runner.groups == 2
