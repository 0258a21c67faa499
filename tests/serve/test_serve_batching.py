"""Dynamic batching: coalescing, limits, isolation of failures, and a free event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from tests.serve.serve_app_support import assert_matches, bearer, make_app, serving

from foundry.config.schema import BatchingConfig
from foundry.serve.batching import Batcher

pytestmark = pytest.mark.anyio


class Recorder:
    """A forward pass that doubles numbers and remembers each batch it was given."""

    def __init__(self, delay: float = 0.0, fail_on: object = None) -> None:
        self.batches: list[list] = []
        self.delay = delay
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, records: list) -> list:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(records))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in records:
            raise ValueError(f"cannot take {self.fail_on}")
        return [r * 2 for r in records]


async def _run(batcher: Batcher, requests: list[list]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.close()


async def test_concurrent_requests_share_forward_passes():
    forward = Recorder(delay=0.01)
    sizes: list[int] = []
    batcher = Batcher(
        "m", forward, BatchingConfig(max_batch_size=64, max_wait_ms=20), on_batch=sizes.append
    )
    requests = [[i, i + 100] for i in range(32)]
    results = await _run(batcher, requests)
    assert results == [[2 * i, 2 * (i + 100)] for i in range(32)]  # each its own slice
    assert batcher.forward_passes == len(forward.batches) < 32
    assert sum(sizes) == 64 and max(sizes) <= 64
    assert batcher.requests_served == 32
    assert all(name.startswith("foundry-m") for name in forward.threads)


async def test_batches_stop_at_max_batch_size_and_big_requests_run_alone():
    forward = Recorder()
    batcher = Batcher("m", forward, BatchingConfig(max_batch_size=4, max_wait_ms=50))
    results = await _run(batcher, [[1, 2], [3, 4], [5, 6], list(range(10)), [7]])
    assert results[3] == [2 * i for i in range(10)]
    assert all(len(b) <= 4 for b in forward.batches if b != list(range(10)))
    assert list(range(10)) in forward.batches  # larger than the limit: alone


async def test_disabled_batching_runs_each_request_alone():
    forward = Recorder()
    batcher = Batcher("m", forward, BatchingConfig(enabled=False))
    results = await _run(batcher, [[1], [2], [3]])
    assert results == [[2], [4], [6]]
    assert sorted(forward.batches) == [[1], [2], [3]]


async def test_a_failing_request_does_not_fail_its_batch_mates():
    forward = Recorder(fail_on=13)
    batcher = Batcher("m", forward, BatchingConfig(max_batch_size=64, max_wait_ms=20))
    results = await _run(batcher, [[1], [13], [2]])
    assert results[0] == [2] and results[2] == [4]
    assert isinstance(results[1], ValueError)


async def test_a_lone_request_does_not_wait_for_company():
    """No other request announced (no ticket): the batch runs at once, not after max_wait."""
    batcher = Batcher("m", Recorder(), BatchingConfig(max_wait_ms=5_000))
    batcher.start()
    started = time.perf_counter()
    with batcher.ticket() as ticket:
        assert await ticket.submit([1]) == [2]
    await batcher.close()
    assert time.perf_counter() - started < 1.0


async def test_announced_requests_are_waited_for_up_to_max_wait():
    forward = Recorder()
    batcher = Batcher("m", forward, BatchingConfig(max_wait_ms=5_000))
    batcher.start()

    async def late(ticket, value, delay):
        with ticket:
            await asyncio.sleep(delay)
            return await ticket.submit([value])

    first, second = batcher.ticket(), batcher.ticket()
    results = await asyncio.gather(late(first, 1, 0), late(second, 2, 0.05))
    abandoned = batcher.ticket()
    abandoned.__exit__(None, None, None)  # a request that failed auth stops being awaited
    await batcher.close()
    assert results == [[2], [4]]
    assert forward.batches == [[1, 2]]  # the first waited for the announced second


async def test_inference_never_blocks_the_event_loop():
    batcher = Batcher("m", Recorder(delay=0.3), BatchingConfig())
    batcher.start()
    pending = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await asyncio.sleep(0.01)  # the loop runs while the forward pass sleeps on its thread
    assert time.perf_counter() - started < 0.2
    assert await pending == [2]
    await batcher.close()


# ---------------------------------------------------------------- with the real model


async def test_32_concurrent_requests_are_batched_and_each_gets_its_answer(toy, tmp_path):
    app, gate = make_app(
        toy,
        tmp_path / "gate",
        metrics="public",
        batching=BatchingConfig(max_batch_size=64, max_wait_ms=50),
    )
    key = gate.create_key("acme", "test").key
    records = toy.records(32)
    async with serving(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/models/{toy.name}/predict", json=r, headers=bearer(key))
                for r in records
            )
        )
        metrics = (await client.get("/metrics")).text
        batcher = app.state.service.batchers[toy.name]
    assert {r.status_code for r in responses} == {200}
    predictions = [r.json()["predictions"][0] for r in responses]
    assert_matches(predictions, toy.expected(records), "tier")
    assert batcher.forward_passes < 32
    count = next(
        line
        for line in metrics.splitlines()
        if line.startswith('foundry_batch_size_count{model="toy"}')
    )
    assert float(count.split()[-1]) == batcher.forward_passes
    assert 'foundry_batch_size_sum{model="toy"} 32.0' in metrics


async def test_per_model_batching_settings_apply(toy, tmp_path):
    app, _ = make_app(
        toy, tmp_path / "gate", model_batching={toy.name: BatchingConfig(enabled=False)}
    )
    async with serving(app):
        batcher = app.state.service.batchers[toy.name]
        assert batcher.config.enabled is False


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_large_request_runs_in_pieces_that_let_small_ones_through(enabled):
    """A request of 2.5 pieces and a one-record request sent just after it: the small one
    is answered between two pieces, before the large one ends; the large one's results
    are whole and in order (issue 14: one request must not hold a model's thread for
    seconds)."""
    from foundry.serve.batching import PIECE_RECORDS

    forward = Recorder(delay=0.02)
    batcher = Batcher(
        "m", forward, BatchingConfig(enabled=enabled, max_batch_size=8, max_wait_ms=1)
    )
    large = list(range(PIECE_RECORDS * 5 // 2))
    finished: list[str] = []
    batcher.start()
    try:

        async def run(name: str, records: list) -> list:
            out = await batcher.submit(records)
            finished.append(name)
            return out

        big = asyncio.create_task(run("large", large))
        while not forward.batches:  # the first piece is running
            await asyncio.sleep(0.001)
        small = await run("small", [-1])
        assert await big == [2 * r for r in large]
    finally:
        await batcher.close()
    assert small == [-2]
    assert finished == ["small", "large"]
    assert [len(b) for b in forward.batches if b != [-1]] == [
        PIECE_RECORDS,
        PIECE_RECORDS,
        PIECE_RECORDS // 2,
    ]
