"""Language models behind the API: generation and embeddings off the event loop.

    served = ServedLanguageModel.load("tiny-gpt:2", registry)     # once per worker
    completion = await served.generate(prompt, params)            # on the model's thread
    async for delta in served.stream(prompt, params, progress):   # deltas as they come
        ...

Each model has one thread: generation is compute-bound, and PyTorch already spreads one
forward pass over the cores it is given, so requests for a model run one after another
(a stream holds the thread until it ends or its client goes away). A stream's deltas are
handed to the event loop as they are produced; when the client disconnects, the
generator is closed on the model's thread and `progress.completion_tokens` says how many
tokens were computed, which is what the request is charged.
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

from foundry.config.schema import GenerationConfig
from foundry.lm.api import Completion, Delta, Embedder, LanguageModel
from foundry.serve.errors import ApiError

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
    _executor: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"foundry-lm-{self.name}")

    @classmethod
    def load(cls, ref: str, registry: Any) -> ServedLanguageModel:
        from foundry.lm.load import load

        return cls.from_model(load(ref, registry=registry), registry)

    @classmethod
    def from_model(cls, model: Any, registry: Any = None) -> ServedLanguageModel:
        """Serve an already loaded model (its `ref` is pinned, `name:version`); its
        `generation` attribute (the package's `lm.generation`) gives the defaults."""
        defaults = getattr(model, "generation", None) or GenerationConfig()
        return cls(model.ref.split(":")[0], model.ref, model, defaults)

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

    async def generate(self, prompt: str, params: GenerationConfig) -> Completion:
        [completion] = await self.run(self.model.generate, [prompt], params)
        return completion

    async def embed(self, texts: list[str]) -> tuple[Any, list[int]]:
        return await self.run(self.model.embed, texts)

    async def stream(
        self, prompt: str, params: GenerationConfig, progress: StreamProgress
    ) -> AsyncIterator[Delta]:
        """Deltas of one completion. Leaving the loop early (a client gone) stops the
        generation on the model's thread; `progress` then holds what was computed."""
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
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


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
