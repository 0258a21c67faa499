"""Language models behind the API: generation and embeddings off the event loop.

    served = ServedLanguageModel.load("tiny-gpt:2", registry, settings=config.lm)
    completion = await served.generate(prompt, params)            # on the model's engine
    deltas = served.open_stream(prompt, params, progress)          # 503 here when full
    async for delta in deltas:                                     # deltas as they come
        ...

Two engines, by `serve.lm.max_concurrent`:

- above 1 (the default, 32), continuous batching (`foundry.lm.continuous`): one engine
  per model runs steps, in a process of its own (`serve.lm.engine: process`, the
  default: `foundry.lm.engine_process`) or in a thread of this one (`thread`, and for a
  model served from memory, `from_model`); a request joins the running batch at the next
  step and leaves when it ends. At most `max_queue` requests wait for a slot; past that a request
  is refused with 503 `server_busy` and Retry-After, before anything is reserved.
- 1, the one-at-a-time engine: each model has one thread, and a request (a whole
  stream) holds it until it ends or its client goes away; nothing is refused.

Either way a stream's deltas are handed to the event loop as they are produced; when
the client disconnects, its row leaves the batch at the next step (or its generator is
closed on the model's thread) and `progress.completion_tokens` says how many tokens were
computed, which is what the request is charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio

from foundry.config.schema import GenerationConfig, LMServeConfig
from foundry.lm.api import Completion, Delta, Embedder, LanguageModel
from foundry.lm.continuous import ContinuousBatcher, QueueFull
from foundry.lm.engine_process import EngineGone, EngineProcess, release_weights
from foundry.lm.load import place
from foundry.serve.errors import ApiError
from foundry.serve.metrics import LMMetrics, ServeMetrics
from foundry.torch_threads import adopt_torch_threads

_DONE = object()


@dataclass
class StreamProgress:
    """What a stream has computed so far (read after it ends or is cut off)."""

    completion_tokens: int = 0
    finish_reason: str | None = None


@dataclass
class ServedLanguageModel:
    """A loaded LanguageModel or Embedder, its thread, and its generation defaults."""

    name: str
    ref: str
    model: Any
    """A `foundry.lm.api.LanguageModel` or `Embedder`."""
    defaults: GenerationConfig = field(default_factory=GenerationConfig)
    """The model's `lm.generation` section: what a request leaves unset."""
    settings: LMServeConfig = field(default_factory=LMServeConfig)
    """`serve.lm`: continuous batching and its bounds."""
    metrics: ServeMetrics | None = None
    batcher: ContinuousBatcher | EngineProcess | None = field(init=False, default=None)
    """The continuous-batching engine, in this process or its own; None: the
    one-at-a-time engine."""
    _lm_metrics: LMMetrics | None = field(init=False, default=None, repr=False)
    home: str | None = None
    """The registry the model was loaded from: the engine process loads it from there
    (`serve.lm.engine: process`); None: the engine runs in a thread of this process."""
    _deliveries: _Handoff | None = field(init=False, default=None, repr=False)
    _executor: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"foundry-lm-{self.name}", initializer=adopt_torch_threads
        )

    def start(self) -> None:
        """Start the model's continuous-batching engine (none for max_concurrent 1)."""
        if self.settings.max_concurrent > 1 and hasattr(self.model, "continuous_batcher"):
            hooks: dict[str, Any] = {}
            if self.metrics is not None:
                batcher_ref: list[Any] = []
                self._lm_metrics = self.metrics.language_model(
                    self.name,
                    running=lambda: batcher_ref[0].running if batcher_ref else 0,
                    queued=lambda: batcher_ref[0].queued if batcher_ref else 0,
                )
                hooks = {"on_step": self._lm_metrics.on_step, "on_admit": self._lm_metrics.on_admit}
            s = self.settings
            if self.in_process:
                import torch

                self.batcher = EngineProcess(
                    self.model,
                    self.ref,
                    self.home,
                    s,
                    name=self.name,
                    threads=torch.get_num_threads(),
                    **hooks,
                )
            else:
                self.batcher = self.model.continuous_batcher(
                    max_concurrent=s.max_concurrent,
                    max_queue=s.max_queue,
                    max_batch_tokens=s.max_batch_tokens,
                    prefill_chunk=s.prefill_chunk,
                    name=self.name,
                    **hooks,
                )
            if self.metrics is not None:
                batcher_ref.append(self.batcher)
            self.batcher.start()
            if self.in_process:
                release_weights(self.model)

    @property
    def in_process(self) -> bool:
        """The engine runs in a process of its own (`serve.lm.engine: process`, a model
        loaded from a registry, continuous batching)."""
        return (
            self.settings.engine == "process"
            and self.home is not None
            and self.settings.max_concurrent > 1
            and hasattr(self.model, "continuous_batcher")
        )

    @classmethod
    def load(
        cls,
        ref: str,
        registry: Any,
        *,
        settings: LMServeConfig | None = None,
        metrics: ServeMetrics | None = None,
    ) -> ServedLanguageModel:
        from foundry.lm.load import load

        settings = settings or LMServeConfig()
        if registry is None:
            from foundry.registry import Registry

            registry = Registry()
        model = load(ref, registry=registry)
        served = cls(
            model.ref.split(":")[0],
            model.ref,
            model,
            getattr(model, "generation", None) or GenerationConfig(),
            settings,
            metrics,
            home=str(registry.home),
        )
        if not served.in_process:  # else the engine process places its own copy
            place(model, settings.device, settings.dtype)
        served.start()
        return served

    @classmethod
    def from_model(
        cls,
        model: Any,
        registry: Any = None,
        *,
        settings: LMServeConfig | None = None,
        metrics: ServeMetrics | None = None,
    ) -> ServedLanguageModel:
        """Serve an already loaded model (its `ref` is pinned, `name:version`) with its
        engine in a thread of this process; its `generation` attribute (the package's
        `lm.generation`) gives the defaults."""
        defaults = getattr(model, "generation", None) or GenerationConfig()
        served = cls(
            model.ref.split(":")[0],
            model.ref,
            model,
            defaults,
            settings or LMServeConfig(),
            metrics,
        )
        served.start()
        return served

    @property
    def engine_failure(self) -> str | None:
        """Why the model's engine process is gone (it exited or was killed): its
        requests then fail with 503 `model_unavailable` and /readyz says so."""
        return getattr(self.batcher, "gone", None)

    @property
    def generates(self) -> bool:
        return isinstance(self.model, LanguageModel)

    @property
    def embeds(self) -> bool:
        return isinstance(self.model, Embedder)

    @property
    def kind(self) -> str:
        return "language_model" if self.generates else "embedding"

    def summary(self) -> dict[str, Any]:
        """The model's entry in GET /v1/models."""
        entry: dict[str, Any] = {"name": self.name, "ref": self.ref, "kind": self.kind}
        if self.generates:
            entry["context_length"] = self.model.context_length
            entry["endpoints"] = ["/v1/completions", "/v1/chat/completions"]
        if self.embeds:
            entry["dimensions"] = self.model.dimensions
            entry["max_length"] = self.model.max_length
            entry["endpoints"] = ["/v1/embeddings"]
        return entry

    # ------------------------------------------------------------------ work

    async def run(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on the model's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args))

    def check_capacity(self) -> None:
        """503 `server_busy` (with Retry-After) when a new request would be refused:
        checked before the request reserves anything at the gate."""
        if self.batcher is not None and self.batcher.full():
            raise self._busy()

    def _busy(self) -> ApiError:
        if self._lm_metrics is not None:
            self._lm_metrics.rejected()
        s = self.settings
        return ApiError(
            503,
            "server_busy",
            f"model '{self.name}' is generating {s.max_concurrent} streams and "
            f"{s.max_queue} requests are waiting (serve.lm.max_concurrent, "
            f"serve.lm.max_queue): retry after {s.retry_after_s} s",
            headers={"Retry-After": str(s.retry_after_s)},
        )

    def _submit(self, prompt: str, params: GenerationConfig, emit: Any) -> Any:
        assert self.batcher is not None
        try:
            return self.batcher.submit(prompt, params, emit)
        except QueueFull:
            raise self._busy() from None
        except EngineGone as exc:
            raise ApiError(503, "model_unavailable", str(exc)) from None

    async def generate(self, prompt: str, params: GenerationConfig) -> Completion:
        if self.batcher is None:
            [completion] = await self.run(self.model.generate, [prompt], params)
            return completion
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Any] = loop.create_future()
        failures: list[BaseException] = []

        def emit(item: Any) -> None:
            if isinstance(item, BaseException):
                failures.append(item)
            elif item is None:
                with contextlib.suppress(RuntimeError):  # the loop may be closed
                    loop.call_soon_threadsafe(_resolve, ended)

        handle = self._submit(prompt, params, emit)
        await ended
        if failures:
            if isinstance(failures[0], EngineGone):
                raise ApiError(503, "model_unavailable", str(failures[0]))
            raise failures[0]
        return handle.completion()

    async def embed(self, texts: list[str]) -> tuple[Any, list[int]]:
        return await self.run(self.model.embed, texts)

    def open_stream(
        self, prompt: str, params: GenerationConfig, progress: StreamProgress
    ) -> AsyncIterator[Delta]:
        """`stream`, with the request queued now: a full queue is a 503 here, before
        the response starts."""
        if self.batcher is None:
            return self.stream(prompt, params, progress)
        return self._open_batched(prompt, params, progress)

    def _open_batched(
        self, prompt: str, params: GenerationConfig, progress: StreamProgress
    ) -> AsyncIterator[Delta]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        handoff = self._handoff(asyncio.get_running_loop())  # made here, on the loop

        def emit(item: Any) -> None:
            if isinstance(item, Delta):  # on the engine thread, before the client reads
                progress.completion_tokens = item.completion_tokens
                if item.finish_reason is not None:
                    progress.finish_reason = item.finish_reason
            handoff.put(queue, item)

        handle = self._submit(prompt, params, emit)
        return _batched_deltas(queue, handle)

    def _handoff(self, loop: asyncio.AbstractEventLoop) -> _Handoff:
        if self._deliveries is None or self._deliveries.loop is not loop:
            self._deliveries = _Handoff(loop)
        return self._deliveries

    async def stream(
        self, prompt: str, params: GenerationConfig, progress: StreamProgress
    ) -> AsyncIterator[Delta]:
        """Deltas of one completion. Leaving the loop early (a client gone) stops the
        generation on the model's thread; `progress` then holds what was computed."""
        if self.batcher is not None:  # the continuous-batching engine has the weights
            async for delta in self._open_batched(prompt, params, progress):
                yield delta
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            deltas = self.model.stream(prompt, params)
            try:
                for delta in deltas:
                    progress.completion_tokens = delta.completion_tokens
                    if delta.finish_reason is not None:
                        progress.finish_reason = delta.finish_reason
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
                    if stop.is_set():
                        break
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with contextlib.suppress(Exception):
                    deltas.close()
                with contextlib.suppress(RuntimeError):  # the loop may be closed
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        running = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # The thread stops after its current token; wait for it, so that `progress`
            # is final when the caller charges the request. Shielded: a client that went
            # away cancels this task (Starlette), and anyio re-raises the cancellation at
            # every await in a cancelled scope.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await running

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self.batcher is not None:
            await loop.run_in_executor(None, self.batcher.close)
        await loop.run_in_executor(None, self._executor.shutdown)


class _Handoff:
    """Deltas from the engine thread to the event loop, one wake-up per batch of them:
    a step of 16 rows would otherwise wake the loop 16 times, and each wake-up is a
    round of the GIL between the two threads. An engine process's deltas are read on
    the loop and go straight to their queues."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop (`_open_batched`)
        self._items: list[tuple[asyncio.Queue[Any], Any]] = []
        self._lock = threading.Lock()

    def put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        if threading.get_ident() == self._loop_thread:  # an engine process's message,
            queue.put_nowait(item)  # read on the loop itself: nothing to hand over
            return
        with self._lock:
            self._items.append((queue, item))
            first = len(self._items) == 1
        if first:  # a flush is not yet scheduled
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


async def _batched_deltas(queue: asyncio.Queue[Any], handle: Any) -> AsyncIterator[Delta]:
    """A row's deltas from the engine thread. Leaving early (a client gone) cancels the
    row and waits until it has left the batch, so `progress` is final when the caller
    charges the request."""
    ended = False
    try:
        while True:
            item = await queue.get()
            if item is None:
                ended = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not ended:
            handle.cancel()
            # Shielded: a client that went away cancels this task (Starlette).
            with anyio.CancelScope(shield=True):
                while await queue.get() is not None:
                    pass


def generation_params(
    served: ServedLanguageModel,
    prompt_tokens: int,
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    repetition_penalty: float | None,
    stop: str | list[str] | None,
    seed: int | None,
) -> GenerationConfig:
    """A request's parameters over the model's defaults, max_tokens cut to the context
    left after the prompt; 400 `context_length_exceeded` when the prompt fills it."""
    context = served.model.context_length
    room = context - prompt_tokens
    if room < 1:
        raise ApiError(
            400,
            "context_length_exceeded",
            f"the prompt has {prompt_tokens} tokens; model '{served.name}' reads at most "
            f"{context} (prompt + completion): shorten the prompt",
            param="messages" if prompt_tokens else "prompt",
        )
    d = served.defaults
    wanted = d.max_tokens if max_tokens is None else max_tokens
    stops = [stop] if isinstance(stop, str) else list(stop or d.stop)
    return GenerationConfig(
        max_tokens=max(1, min(wanted, room)),
        temperature=d.temperature if temperature is None else temperature,
        top_p=d.top_p if top_p is None else top_p,
        top_k=d.top_k if top_k is None else top_k,
        repetition_penalty=(
            d.repetition_penalty if repetition_penalty is None else repetition_penalty
        ),
        stop=[s for s in stops if s],
        seed=d.seed if seed is None else seed,
    )
