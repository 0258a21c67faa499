"""Continuous (iteration-level) batching: many streams share one engine thread.

    batcher = ContinuousBatcher(engine, GPTCacheIO(), max_concurrent=32, name="gpt")
    batcher.start()
    handle = batcher.submit(prompt, params, emit)   # emit(Delta) per token, then emit(None)
    handle.cancel()                                  # leaves the batch at the next step
    batcher.close()

One thread per served model runs steps. Each step:

1. waiting requests take free slots (FIFO; at most `max_concurrent` rows, the rest wait
   in a queue of at most `max_queue`; `submit` raises `QueueFull` past it);
2. rows whose client went away (`cancel`) leave, their slot freed;
3. prompts of new rows are read while the step's tokens stay within `max_batch_tokens`
   (one prompt at least): a prompt that fits in one `prefill_chunk` together with the
   other such prompts of its padded width (one forward pass for 16 prompts arriving at
   once, not 16), a longer one in chunks of `prefill_chunk` tokens, one row per forward
   pass, so it delays the running streams by one chunk per step, not by its whole
   length. A row's last chunk gives its first token;
4. every row that was decoding when the step began advances one token in one batched
   forward pass.

KV cache: one buffer per layer, [max_concurrent rounded up to ROW_QUANTUM, kv_heads,
context + 1, head_dim], allocated once (on the first prompt, when the model's shapes are
known) and never grown; a row owns one slot from its first chunk to its last token, the
lowest free one. A decode step hands the buffers' first slots (a view) to the model as
its own cache type (`CacheIO.build`), runs the step contract of `foundry.lm.generate`
(so our GPT and any transformers causal LM, LoRA merged or not, run here unchanged) and
writes each row's new key/value to its next position.

Same text alone or batched. Every row samples from its own logits with its own
`torch.Generator` (seeded with its `seed`) and its own parameters, so neighbours never
touch its randomness. The logits themselves must not depend on the neighbours either,
and batched float32 kernels do not promise that: MKL's sgemm on this machine gives a
row different low bits when the batch has 1-3 or 5-7 or 9-11 rows than when it is
padded to a multiple of 4 (measured on Linear layers of 64-4096 features: rows in full
blocks of 4 match a 64-row batch bit for bit), and scaled_dot_product_attention over L
keys differs in the last bit from the same keys padded and masked to a longer width.
That is enough to flip a sampled token now and then. So shapes are fixed where they
matter: a decode step pads its rows to a multiple of `ROW_QUANTUM` and always attends
over the whole slot width (context + 1, masked), a short prompt is read at a width set
by its own length in a batch padded to ROW_QUANTUM rows, and a long prompt's chunks run
alone, cut at the same places whatever else is running. A row's arithmetic is then the same alone or
among 31 others (tests/lm/test_lm_continuous.py checks it token for token).
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from foundry.config.schema import GenerationConfig
from foundry.lm.api import Completion, Delta
from foundry.lm.generate import GenerationEngine, Row, advance_row, pick_next_tokens
from foundry.torch_threads import adopt_torch_threads

__all__ = [
    "CacheIO",
    "ContinuousBatcher",
    "ENGINE_SWITCH_INTERVAL_S",
    "QueueFull",
    "RowHandle",
    "ROW_QUANTUM",
]

ROW_QUANTUM = 4
"""Decode batches are padded to a multiple of this many rows (see the module doc)."""

ENGINE_SWITCH_INTERVAL_S = 0.0005
"""Python's GIL switch interval in a process that runs a continuous-batching engine
thread beside another that must answer quickly (default 0.005): a server worker's event
loop (`serve.lm.engine: thread`) or an engine process's request reader. Between its
PyTorch calls the engine thread holds the GIL, and the other thread, back from a socket
read or write, waited up to the whole default interval for it, on every request (and,
for the event loop, every streamed chunk). Measured effect (docs/BENCHMARKS.md,
"Language-model serving under load", follow-up): more tokens/s on average, inconclusive
on a machine at load 11-15; 0.005 here reverts it."""

UNIFORMS_AHEAD = 64
"""A row's random draws are made this many at a time (`_Request.next_uniform`)."""

Emit = Callable[[Delta | BaseException | None], None]
"""Called on the engine thread: a Delta per token, an exception if the step failed,
then None once the row has left the batch (finished, cancelled or failed)."""


class CacheIO(Protocol):
    """How the engine moves keys and values between its slots and a model's cache."""

    def build(self, layers: list[tuple[Tensor, Tensor]], filled: int) -> Any:
        """A cache holding `layers[i] = (keys, values)` [B, H, W, Dh], of which the first
        `filled` positions are the tokens seen (W may be larger: spare room to append)."""
        ...

    def empty(self) -> Any:
        """A cache with nothing in it yet, whose attention does not depend on the batch
        size (a prompt pass fills it)."""
        ...

    def read(self, cache: Any) -> list[tuple[Tensor, Tensor]]:
        """The cache's keys and values per layer, [B, H, T, Dh] for the T tokens seen."""
        ...


class QueueFull(Exception):
    """Every slot is taken and `max_queue` requests already wait."""


@dataclass
class _Request:
    row: Row
    params: GenerationConfig
    generator: torch.Generator
    emit: Emit
    enqueued: float
    slot: int = -1
    cached: int = 0
    """Tokens of this row in its slot's cache."""
    pending: int | None = None
    """The last sampled token, fed at the next decode step."""
    cancelled: bool = False
    seen: set[int] = field(default_factory=set)
    """Tokens so far, for the repetition penalty."""
    uniforms: list[float] = field(default_factory=list)
    """Draws of `generator` not used yet (`next_uniform`)."""

    def next_uniform(self) -> float:
        """The row's next uniform draw from its own generator, the number
        `torch.rand((), generator=...)` gives at this point (pick_next_tokens' `uniforms`).
        Drawn UNIFORMS_AHEAD at a time, in the same order: a CPU generator's draws of n
        numbers at once are its n draws one by one (tests/lm/test_lm_continuous.py checks
        it), and 16 one-number draws cost ~70 µs a step, two fifths of the sampling."""
        if not self.uniforms:
            self.uniforms = torch.rand(UNIFORMS_AHEAD, generator=self.generator).tolist()[::-1]
        return self.uniforms.pop()


class RowHandle:
    """The caller's side of one submitted row."""

    def __init__(
        self, request: _Request, wake: Callable[[], None], engine: GenerationEngine
    ) -> None:
        self._request = request
        self._wake = wake
        self._engine = engine

    @property
    def row(self) -> Row:
        """The row's progress (its tokens, finish reason and text once it has left)."""
        return self._request.row

    def cancel(self) -> None:
        """Leave the batch at the next step (the tokens computed until then stand)."""
        self._request.cancelled = True
        self._wake()

    def completion(self) -> Completion:
        """The whole completion, once the row has finished."""
        return self._engine.completion_of(self._request.row)


class ContinuousBatcher:
    """Continuous batching over a `GenerationEngine`'s step, tokenizer and stop ids."""

    def __init__(
        self,
        engine: GenerationEngine,
        cache_io: CacheIO,
        *,
        max_concurrent: int = 32,
        max_queue: int = 64,
        max_batch_tokens: int = 256,
        prefill_chunk: int = 64,
        name: str = "lm",
        adjust: Callable[[GenerationConfig], GenerationConfig] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_admit: Callable[[float], None] | None = None,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.io = cache_io
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.prefill_chunk = prefill_chunk
        self.name = name
        self.adjust = adjust
        """The model's own request adjustments (e.g. an end-of-turn stop string)."""
        self.on_step = on_step
        """on_step(decode rows, tokens generated) after each step (metrics)."""
        self.on_admit = on_admit
        """on_admit(seconds waited in the queue) when a request takes a slot."""
        self.flush = flush
        """Called on the engine thread when the emits so far should reach their callers
        (`foundry.lm.engine_process` sends them then): after a step's prompts, whose
        first tokens should not wait for the decode pass, after each round of the loop,
        and once when it ends."""
        self._lock = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._free = list(range(max_concurrent))
        """Free slots, a heap: the lowest is taken first, so running rows stay at the front
        of the slot buffers, which a decode step uses as its batch (`_decode`)."""
        self._slots: list[tuple[Tensor, Tensor]] = []
        self._width = engine.context_length + 1  # + the token a decode step appends
        self._sampled = 0
        """Tokens generated in the current step."""
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"foundry-lm-{self.name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._active)

    def full(self) -> bool:
        """No slot free and the queue at its bound: a new request would be refused."""
        with self._lock:
            return self._is_full()

    def submit(
        self,
        prompt: str | list[int],
        params: GenerationConfig,
        emit: Emit,
        *,
        text: bool | None = None,
    ) -> RowHandle:
        """Queue one completion; `emit` gets its deltas on the engine thread. Raises
        `QueueFull` when every slot is taken and `max_queue` requests wait already,
        `foundry.errors.ModelError` when the prompt leaves no room to generate.
        `text`: the deltas carry text (default: when the prompt is text; token ids
        encoded elsewhere say True)."""
        if self.adjust is not None:
            params = self.adjust(params)
        ids = self.engine.encode_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        text = isinstance(prompt, str) if text is None else text
        [row] = self.engine.new_rows([ids], params, text=text)
        request = _Request(row, params, _generator(params.seed), emit, time.perf_counter())
        if params.repetition_penalty != 1.0:
            request.seen.update(ids)
        with self._lock:
            if self._is_full():
                raise QueueFull(
                    f"model '{self.name}' has {self.max_concurrent} streams running and "
                    f"{self.max_queue} waiting"
                )
            self._waiting.append(request)
            self._lock.notify_all()
        return RowHandle(request, self._wake, self.engine)

    def generate(self, prompts: list[str], params: GenerationConfig) -> list[Completion]:
        """Blocking: one completion per prompt, each prompt its own row."""
        done = threading.Semaphore(0)
        failures: list[BaseException] = []

        def emit(item: Delta | BaseException | None) -> None:
            if isinstance(item, BaseException):
                failures.append(item)
            elif item is None:
                done.release()

        handles = [self.submit(p, params, emit) for p in prompts]
        for _ in handles:
            done.acquire()
        if failures:
            raise failures[0]
        return [h.completion() for h in handles]

    def stream(self, prompt: str, params: GenerationConfig) -> Iterator[Delta]:
        """Blocking: the deltas of one completion (closing the iterator cancels it)."""
        items: deque[Delta | BaseException | None] = deque()
        ready = threading.Semaphore(0)

        def emit(item: Delta | BaseException | None) -> None:
            items.append(item)
            ready.release()

        handle = self.submit(prompt, params, emit)
        try:
            while True:
                ready.acquire()
                item = items.popleft()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            handle.cancel()

    # ------------------------------------------------------------------ the loop

    def _is_full(self) -> bool:
        # requests that arrived during a step wait even when slots are free: they count
        # against those slots first, then against the queue
        return len(self._waiting) >= len(self._free) + self.max_queue

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def _run(self) -> None:
        adopt_torch_threads()  # this thread's matrix products on the process's count
        while True:
            with self._lock:
                while not self._closed and not self._waiting and not self._active:
                    self._lock.wait()
                if self._closed:
                    break
                self._admit()
            try:
                self._step()
            except BaseException as exc:  # every row in the batch fails; the engine goes on
                for request in self._active:
                    request.emit(exc)
                    self._leave(request)
                self._active = []
            if self.flush is not None:
                self.flush()
        for request in [*self._active, *self._waiting]:  # closed: nothing more will come
            request.emit(RuntimeError(f"model '{self.name}' is shutting down"))
            request.emit(None)
        if self.flush is not None:
            self.flush()

    def _admit(self) -> None:
        """Waiting requests take free slots (the lock is held)."""
        now = time.perf_counter()
        while self._waiting and self._free:
            request = self._waiting.popleft()
            if request.cancelled:  # gone before it started: nothing computed
                request.emit(None)
                continue
            request.slot = heapq.heappop(self._free)
            self._active.append(request)
            if self.on_admit is not None:
                self.on_admit(now - request.enqueued)

    def _leave(self, request: _Request) -> None:
        with self._lock:
            heapq.heappush(self._free, request.slot)
        request.emit(None)

    def _step(self) -> None:
        for request in [r for r in self._active if r.cancelled]:
            self._active.remove(request)
            self._leave(request)
        decoding = [r for r in self._active if r.pending is not None]
        # prompt chunks within the step's token budget, one chunk at least. A prompt that
        # fits in one chunk is read together with the other short ones of its width
        # (`_prefill_short`); a longer one chunk by chunk, alone (`_prefill`). Read before
        # the decode pass, so a new row's first token does not wait for it (time to first
        # token); the running rows wait for the prompts either way.
        budget = self.max_batch_tokens - len(decoding)
        reading = [r for r in self._active if r.pending is None and r.row.finish is None]
        short: dict[int, list[_Request]] = {}
        for i, request in enumerate(reading):
            if i and budget <= 0:
                break
            if request.cached == 0 and len(request.row.prompt) <= self.prefill_chunk:
                width = _short_width(len(request.row.prompt))
                short.setdefault(width, []).append(request)
                budget -= width
            else:
                budget -= self._prefill(request)
        for width, requests in short.items():
            self._prefill_short(requests, width)
        if decoding and self.flush is not None and len(decoding) < len(self._active):
            self.flush()  # new rows' first tokens go out before the decode pass
        if decoding:
            self._decode(decoding)
        finished = [r for r in self._active if r.row.finish is not None]
        for request in finished:
            self._active.remove(request)
            self._leave(request)
        if self.on_step is not None:
            self.on_step(len(decoding), self._sampled)
        self._sampled = 0

    def _prefill(self, request: _Request) -> int:
        """One chunk of a row's prompt, alone; the last chunk samples its first token."""
        start, prompt = request.cached, request.row.prompt
        chunk = prompt[start : start + self.prefill_chunk]
        t, device = len(chunk), self.engine.device
        cache = None
        if start:
            cache = self.io.build(
                [
                    (
                        k[request.slot : request.slot + 1, :, :start],
                        v[request.slot : request.slot + 1, :, :start],
                    )
                    for k, v in self._slots
                ],
                start,
            )
        with torch.inference_mode():
            logits, cache = self.engine.step(
                torch.tensor([chunk], dtype=torch.int64, device=device),
                cache=cache,
                attention_mask=None,
                position_ids=torch.arange(start, start + t, device=device)[None],
                use_cache=True,
            )
            layers = self.io.read(cache)
            if not self._slots:
                self._allocate(layers)
            for (slot_k, slot_v), (k, v) in zip(self._slots, layers, strict=True):
                slot_k[request.slot, :, start : start + t] = k[0, :, start : start + t]
                slot_v[request.slot, :, start : start + t] = v[0, :, start : start + t]
        request.cached += t
        if request.cached == len(prompt):
            self._sample([request], logits[:, -1])
        return t

    def _prefill_short(self, rows: list[_Request], width: int) -> None:
        """Whole prompts of at most `width` tokens in one forward pass, each left-padded
        to `width` (masked, positions from 0 at its first token), and each row's first
        token. The batch is padded to a multiple of ROW_QUANTUM rows (as a decode step's
        is: measured, 5 rows of width 8 give a row other low bits than 1 row does, 8 rows
        the same as 4) and attention runs through the model's batch-invariant path, so a
        row's arithmetic depends on its own prompt and `width` only."""
        device, pad = self.engine.device, self.engine.pad_id
        ids, mask, positions = [], [], []
        for request in rows:
            prompt, gap = request.row.prompt, width - len(request.row.prompt)
            ids.append([pad] * gap + prompt)
            mask.append([0] * gap + [1] * len(prompt))
            positions.append([0] * gap + list(range(len(prompt))))
        for _ in range(-len(rows) % ROW_QUANTUM):  # padding rows, as in a decode step
            ids.append([pad] * width)
            mask.append([1] * width)
            positions.append(list(range(width)))
        with torch.inference_mode():
            logits, cache = self.engine.step(
                torch.tensor(ids, dtype=torch.int64, device=device),
                cache=self.io.empty(),
                attention_mask=torch.tensor(mask, device=device),
                position_ids=torch.tensor(positions, device=device),
                use_cache=True,
            )
            layers = self.io.read(cache)
            if not self._slots:
                self._allocate(layers)
            for i, request in enumerate(rows):
                t = len(request.row.prompt)
                for (slot_k, slot_v), (k, v) in zip(self._slots, layers, strict=True):
                    slot_k[request.slot, :, :t] = k[i, :, width - t :]
                    slot_v[request.slot, :, :t] = v[i, :, width - t :]
                request.cached = t
        self._sample(rows, logits[: len(rows), -1])

    def _decode(self, rows: list[_Request]) -> None:
        """One token for every decoding row, in one forward pass of a fixed shape.

        The batch is the slot buffers' first `padded` slots themselves (a view, nothing
        gathered): slots are handed out lowest first, so the running rows sit at the
        front, and slot i is batch row i. Slots in that range that are not decoding (free,
        or still reading their prompt) ride along as padding: their input is the pad
        token and they see only the column appended now, which is never read back.

        A step of a small model costs mostly the calls that launch its operations (a
        16-row step of the example GPT multiplies matrices of 16 x 128), so this makes
        few: the step's inputs come from one list, and the new keys and values of every
        layer go to their rows' positions in one copy (`_write_back`)."""
        device, width = self.engine.device, self._width
        context = width - 1
        slots = [r.slot for r in rows]
        padded = -(-(max(slots) + 1) // ROW_QUANTUM) * ROW_QUANTUM  # _allocate made room
        # per batch row: the token fed, its position (= tokens cached) and where its new
        # key/value goes: its next position, or (padding) column `context` itself
        table = [[self.engine.pad_id] * padded, [0] * padded, [context] * padded]
        for r in rows:
            table[0][r.slot], table[1][r.slot], table[2][r.slot] = r.pending, r.cached, r.cached
        ids, lengths, at = torch.tensor(table, device=device).unbind(0)
        # mask [padded, context + 1]: each row's own tokens, and the one appended now
        # (column `context`); padding rows see only that one
        mask = (torch.arange(width, device=device)[None] < lengths[:, None]).long()
        mask[:, context] = 1
        with torch.inference_mode():
            cache = self.io.build([(k[:padded], v[:padded]) for k, v in self._slots], context)
            logits, cache = self.engine.step(
                ids[:, None],
                cache=cache,
                attention_mask=mask,
                position_ids=lengths[:, None],
                use_cache=True,
            )
            self._write_back(self.io.read(cache), padded, context, at)
        for request in rows:
            request.cached += 1
        if slots == list(range(len(rows))):  # the usual order: a view, nothing gathered
            self._sample(rows, logits[: len(rows), -1])
        else:
            self._sample(rows, logits[torch.tensor(slots, device=device), -1])

    def _write_back(
        self, layers: list[tuple[Tensor, Tensor]], padded: int, context: int, at: Tensor
    ) -> None:
        """Each batch row's new key/value (column `context` of `layers`, per layer [padded,
        H, W, Dh]) to its own position `at[b]`. When the model wrote them into the slot
        buffers themselves (both CacheIOs here do) and those are one tensor (`_allocate`),
        every layer's in one index_copy_; else per layer (`_write_column`)."""
        stack = self._stack
        in_place = stack is not None and all(
            k.data_ptr() == slot_k.data_ptr() and v.data_ptr() == slot_v.data_ptr()
            for (slot_k, slot_v), (k, v) in zip(self._slots, layers, strict=True)
        )
        if not in_place:
            for (slot_k, slot_v), (k, v) in zip(self._slots, layers, strict=True):
                _write_column(slot_k, k[:, :, context], at)
                _write_column(slot_v, v[:, :, context], at)
            return
        assert stack is not None and self._stack_rows is not None
        dim = stack.shape[-1]
        # stack [2 x layers, slots, H, W, Dh] as rows of Dh values; _stack_rows [2 x layers,
        # slots, H] is the row of each (layer, slot, head)'s position 0
        rows = (self._stack_rows[:, :padded] + at[None, :, None]).flatten()
        stack.view(-1, dim).index_copy_(0, rows, stack[:, :padded, :, context].reshape(-1, dim))

    def _sample(self, rows: list[_Request], logits: Tensor) -> None:
        """Each row's next token from its own logits (`logits[i]` [V] is row i's) and its
        own generator, then its delta. Rows with the same sampling parameters are picked
        in one call (one softmax, sort and cumsum over their rows: row-wise operations,
        so a row's token is the one it gets alone); a row with a repetition penalty
        alone, with its own tokens seen."""
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(rows):
            p = request.params
            key = (p.temperature, p.top_k, p.top_p) if p.repetition_penalty == 1.0 else (i,)
            groups.setdefault(key, []).append(i)
        tokens = [0] * len(rows)
        logits = logits.float()
        for members in groups.values():
            first = rows[members[0]]
            mine = logits if len(members) == len(rows) else logits[members]
            seen = None
            if first.params.repetition_penalty != 1.0:
                seen = torch.zeros((1, max(first.seen) + 1), dtype=torch.bool)
                seen[0, list(first.seen)] = True
                seen = seen.to(logits.device)
            uniforms = None
            if first.params.temperature != 0:  # sampled: one draw per row (greedy: none)
                uniforms = torch.tensor(
                    [rows[i].next_uniform() for i in members], dtype=torch.float32
                )
            picked = pick_next_tokens(
                mine, first.params, [rows[i].generator for i in members], seen, uniforms
            )
            for i, token in zip(members, picked.tolist(), strict=True):
                tokens[i] = token
        self._sampled += len(rows)
        for request, token in zip(rows, tokens, strict=True):
            row = request.row
            advance_row(row, token, self.engine.stop_ids)
            request.seen.add(token)
            request.pending = token if row.finish is None else None
            text = row.text
            if row.finish is not None:
                request.emit(Delta(text.take_rest() if text else "", row.computed, row.finish))
            else:
                request.emit(Delta(text.take_ready() if text else "", row.computed))

    _stack: Tensor | None = None
    """Every layer's slot buffers as one tensor [2 x layers, slots, H, W, Dh] (keys of
    layer i at 2i, values at 2i + 1), when their shapes agree: a decode step then writes
    its new keys and values back in one copy (`_write_back`)."""
    _stack_rows: Tensor | None = None
    """[2 x layers, slots, H]: the row of `_stack` (as rows of Dh values) holding each
    (layer, slot, head)'s position 0."""

    def _allocate(self, layers: list[tuple[Tensor, Tensor]]) -> None:
        """The slot buffers, shaped after the model's first cache (zeros: a masked slot
        position must hold a finite number, as 0 x NaN is NaN)."""
        rows = -(-self.max_concurrent // ROW_QUANTUM) * ROW_QUANTUM  # + padding rows
        first = layers[0][0]
        if all(
            t.shape[1:] == first.shape[1:] and t.dtype == first.dtype for kv in layers for t in kv
        ):
            _, heads, _, dim = first.shape
            stack = first.new_zeros((2 * len(layers), rows, heads, self._width, dim))
            self._stack = stack
            self._stack_rows = (
                torch.arange(stack.shape[0] * rows * heads, device=stack.device).view(
                    stack.shape[0], rows, heads
                )
                * self._width
            )
            self._slots = [(stack[2 * i], stack[2 * i + 1]) for i in range(len(layers))]
            return
        for k, v in layers:
            _, heads, _, dim = k.shape
            self._slots.append(
                (
                    k.new_zeros((rows, heads, self._width, dim)),
                    v.new_zeros((rows, v.shape[1], self._width, v.shape[3])),
                )
            )


def _write_column(slots: Tensor, column: Tensor, at: Tensor) -> None:
    """slots[b, :, at[b]] = column[b] for b < len(at), in one index_copy_ over the
    (contiguous) buffer's rows of head_dim values: slots [S, H, W, Dh], column [B, H, Dh].
    Indexing the buffer with two index tensors instead (index_put) costs several times
    as much, and this runs twice per layer per step."""
    b, heads, width, dim = column.shape[0], slots.shape[1], slots.shape[2], slots.shape[3]
    rows = torch.arange(b * heads, device=at.device).view(b, heads) * width
    slots.view(-1, dim).index_copy_(0, (rows + at[:, None]).flatten(), column.reshape(-1, dim))


def _short_width(tokens: int) -> int:
    """The padded width a short prompt is read at: a multiple of 8, so that prompts of
    similar length share a forward pass (a row's width is its own, whatever else runs)."""
    return -(-tokens // 8) * 8


def _generator(seed: int | None) -> torch.Generator:
    """The row's own CPU generator: its seed, or fresh entropy."""
    if seed is None:
        return torch.Generator().manual_seed(random.SystemRandom().randrange(2**63))
    return torch.Generator().manual_seed(seed)
