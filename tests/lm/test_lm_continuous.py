"""The continuous-batching engine (foundry.lm.continuous) on a real tiny GPT: rows join
and leave at step boundaries, keep their own parameters, give the same tokens alone or
among 16 others, leave when cancelled, and the queue is bounded."""

from __future__ import annotations

import threading

import pytest
import torch
from tests.lm.lm_helpers import ByteTokenizer, tiny_gpt

from foundry.config.schema import GenerationConfig
from foundry.lm.continuous import UNIFORMS_AHEAD, ContinuousBatcher, QueueFull, _Request
from foundry.lm.generate import GenerationEngine
from foundry.lm.gpt_model import GPTCacheIO


# Tensors this small run fastest on one thread, and on a machine whose cores are shared
# a second OpenMP thread that is descheduled makes every op wait (measured: 10-30x).
@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = [f"row {i}: " + "the cat sat " * (i % 4) for i in range(17)]


def _batcher(steps: list[tuple[int, int]] | None = None, **settings) -> ContinuousBatcher:
    # d_model 128, 4 layers: the widths where batched kernels differ in low bits
    model = tiny_gpt(vocab_size=259, context_length=96, d_model=128, n_layers=4)
    engine = GenerationEngine(model.step, ByteTokenizer(), context_length=96)
    on_step = None if steps is None else (lambda rows, tokens: steps.append((rows, tokens)))
    settings = {"max_concurrent": 20, "prefill_chunk": 8, "max_batch_tokens": 32, **settings}
    batcher = ContinuousBatcher(engine, GPTCacheIO(), on_step=on_step, **settings)
    batcher.start()
    return batcher


@pytest.fixture
def batcher():
    b = _batcher()
    yield b
    b.close()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_row_gives_the_same_tokens_alone_and_among_16_others(batcher, temperature):
    params = GenerationConfig(max_tokens=24, temperature=temperature, seed=11)
    alone = [batcher.generate([p], params)[0] for p in PROMPTS]
    together = batcher.generate(PROMPTS, params)
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    if temperature:  # sampled rows differ from each other (the test could tell a mix-up)
        assert len({c.text for c in together}) > 1


def test_short_prompts_read_in_one_pass_give_the_same_tokens_as_alone():
    # prefill_chunk 64: every prompt fits one chunk, so the 17 arriving together are read
    # in shared left-padded passes (one per padded width) rather than one by one
    steps: list[tuple[int, int]] = []
    b = _batcher(steps, prefill_chunk=64, max_batch_tokens=1024)
    try:
        params = GenerationConfig(max_tokens=12, temperature=1.0, seed=7)
        alone = [b.generate([p], params)[0].text for p in PROMPTS]
        steps.clear()
        together = [c.text for c in b.generate(PROMPTS, params)]
    finally:
        b.close()
    assert together == alone
    assert steps[0] == (0, len(PROMPTS))  # one step read every prompt: a first token each


def test_rows_that_join_while_others_run_still_give_their_own_tokens(batcher):
    params = GenerationConfig(max_tokens=30, temperature=1.0, seed=5)
    alone = {p: batcher.generate([p], params)[0].text for p in PROMPTS[:6]}
    results: dict[str, str] = {}
    threads = []
    for p in PROMPTS[:6]:  # staggered: each joins a batch already under way
        t = threading.Thread(target=lambda p=p: results.update({p: _text(batcher, p, params)}))
        t.start()
        threads.append(t)
        threading.Event().wait(0.005)
    for t in threads:
        t.join()
    assert results == alone


def _text(batcher: ContinuousBatcher, prompt: str, params: GenerationConfig) -> str:
    return "".join(delta.text for delta in batcher.stream(prompt, params))


def test_draws_made_ahead_are_the_generators_draws_one_by_one():
    """A row draws its uniforms UNIFORMS_AHEAD at a time (`_Request.next_uniform`); a
    seeded row must still get the numbers that one draw per token gives."""
    request = _Request(
        row=None,  # type: ignore[arg-type]  # not read here
        params=GenerationConfig(seed=5),
        generator=torch.Generator().manual_seed(5),
        emit=print,
        enqueued=0.0,
    )
    one_by_one = torch.Generator().manual_seed(5)
    drawn = [request.next_uniform() for _ in range(2 * UNIFORMS_AHEAD + 3)]
    assert drawn == [torch.rand((), generator=one_by_one).item() for _ in drawn]


def test_each_row_keeps_its_own_parameters(batcher):
    greedy = GenerationConfig(max_tokens=30, temperature=0.0)
    [reference] = batcher.generate([PROMPTS[1]], greedy)
    stop = reference.text[6:9]  # a stop string the greedy text is known to contain
    wanted = [
        greedy,
        GenerationConfig(max_tokens=5, temperature=1.0, seed=1),
        GenerationConfig(max_tokens=30, temperature=0.0, stop=[stop]),
        GenerationConfig(max_tokens=20, temperature=0.7, top_k=5, seed=2),
        GenerationConfig(max_tokens=20, temperature=1.0, repetition_penalty=1.3, seed=3),
    ]
    alone = [batcher.generate([PROMPTS[1]], p)[0] for p in wanted]
    done: list = [None] * len(wanted)

    def run(i: int) -> None:
        done[i] = batcher.generate([PROMPTS[1]], wanted[i])[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(wanted))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == alone
    assert done[0] == reference
    assert (done[1].completion_tokens, done[1].finish_reason) == (5, "length")
    assert done[2].finish_reason == "stop"
    assert done[2].text == reference.text[: reference.text.index(stop)]
    assert done[3].text != done[4].text != done[0].text


def test_rows_join_at_the_next_step_and_leave_when_they_finish():
    steps: list[tuple[int, int]] = []
    b = _batcher(steps, prefill_chunk=64)  # each prompt in one chunk
    try:
        second: list = []

        def emit_first(delta) -> None:  # on the engine thread, after the first's 3rd token
            if delta is not None and getattr(delta, "completion_tokens", 0) == 3:
                second.append(b.submit(PROMPTS[2], GenerationConfig(max_tokens=3), lambda d: None))

        ended = threading.Event()
        b.submit(
            PROMPTS[1],
            GenerationConfig(max_tokens=12, temperature=0),
            lambda d: (emit_first(d), d is None and ended.set()),
        )
        assert ended.wait(30)
    finally:
        b.close()
    # rows per decode step: the first row's prompt (no decode), 3 steps alone; the second
    # joins at the next step (its prompt read there, the first still decoding), decodes
    # with it for 2 steps until its 3rd token, then leaves: the first goes on alone.
    assert [rows for rows, _ in steps] == [0, 1, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1]
    assert sum(tokens for _, tokens in steps) == 12 + 3


def test_a_cancelled_row_leaves_at_the_next_step_with_its_tokens_counted():
    steps: list[tuple[int, int]] = []
    b = _batcher(steps)
    try:
        stream = b.stream(PROMPTS[3], GenerationConfig(max_tokens=80, temperature=1.0, seed=0))
        deltas = [next(stream) for _ in range(4)]
        stream.close()  # the client is gone
        deadline = threading.Event()
        while b.running and not deadline.wait(0.01):
            pass
        assert b.running == 0
        computed = sum(tokens for _, tokens in steps)
        assert deltas[-1].completion_tokens == 4
        assert 4 <= computed < 80  # what was computed until it left; far from its limit
    finally:
        b.close()


def test_the_queue_is_bounded():
    gate = threading.Event()

    def slow_step(*args, **kwargs):  # holds the engine thread so the slot stays taken
        gate.wait(30)
        return model.step(*args, **kwargs)

    model = tiny_gpt(vocab_size=259, context_length=96)
    engine = GenerationEngine(slow_step, ByteTokenizer(), context_length=96)
    b = ContinuousBatcher(engine, GPTCacheIO(), max_concurrent=1, max_queue=1)
    b.start()
    try:
        params = GenerationConfig(max_tokens=2, temperature=0)
        ended = threading.Semaphore(0)
        b.submit("a", params, lambda d: d is None and ended.release())  # takes the slot
        while not b.running:
            threading.Event().wait(0.001)
        b.submit("b", params, lambda d: d is None and ended.release())  # waits
        assert b.full()
        with pytest.raises(QueueFull, match="1 streams running and 1 waiting"):
            b.submit("c", params, lambda d: None)
        gate.set()
        assert ended.acquire(timeout=30) and ended.acquire(timeout=30)
        assert not b.full()
    finally:
        gate.set()
        b.close()


# prefill_chunk 8: most prompts read chunk by chunk, alone; 64: all read in shared passes
@pytest.mark.parametrize("prefill_chunk", [8, 64])
def test_decode_logits_are_bit_identical_alone_and_batched(prefill_chunk):
    """The property the token-level tests rest on, checked on the logits themselves:
    every row's logits, step by step (its first token's included), alone == among 16
    others."""
    import foundry.lm.continuous as continuous

    b = _batcher(prefill_chunk=prefill_chunk, max_batch_tokens=1024)
    logits: dict[int, list[torch.Tensor]] = {}
    real = continuous.pick_next_tokens

    def keep(row_logits, params, generators, seen=None, uniforms=None):  # records, then real
        for one, generator in zip(row_logits, generators, strict=True):  # rows by generator
            logits.setdefault(id(generator), []).append(one[None].clone())
        return real(row_logits, params, generators, seen, uniforms)

    continuous.pick_next_tokens = keep
    try:
        params = GenerationConfig(max_tokens=20, temperature=1.0, seed=3)

        def run(prompts: list[str]) -> list[torch.Tensor]:
            logits.clear()
            ended = threading.Semaphore(0)
            handles = [
                b.submit(p, params, lambda d: d is None and ended.release()) for p in prompts
            ]
            for _ in handles:
                ended.acquire()
            return [torch.cat(logits[id(h._request.generator)]) for h in handles]

        alone = [run([p])[0] for p in PROMPTS]
        together = run(PROMPTS)
    finally:
        continuous.pick_next_tokens = real
        b.close()
    assert all(torch.equal(a, t) for a, t in zip(alone, together, strict=True))
