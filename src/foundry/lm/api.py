"""What a loaded language model offers the CLI and the API.

    lm = foundry.lm.load("tiny-gpt:1")                       # LanguageModel | Embedder
    [c] = lm.generate(["Once upon a time"], GenerationConfig(max_tokens=20, seed=0))
    c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason
    for delta in lm.stream("Once upon a time", params):      # the same tokens, as they come
        print(delta.text, end="")                            # last delta: finish_reason set

    emb = foundry.lm.load("minilm:1")
    vectors, tokens = emb.embed(["a sentence", "another"])   # [2, D] float32, unit length

Both run on the calling thread (the API calls them from its model threads). Generation
with the same prompt, parameters and seed gives the same text, batched or not, streamed
or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from foundry.config.schema import GenerationConfig

FinishReason = Literal["stop", "length"]
"""`stop`: an end-of-sequence token or a stop string; `length`: max_tokens or the
model's context ran out."""


@dataclass(frozen=True)
class Completion:
    text: str
    """Generated text, without the prompt and without the stop string that ended it."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens generated (a stop string's tokens included: they were computed)."""
    finish_reason: FinishReason


@dataclass(frozen=True)
class Delta:
    """One step of a stream: the text that became final since the last delta (may be
    empty while a multi-byte character or a possible stop string is pending)."""

    text: str
    completion_tokens: int
    """Tokens generated so far."""
    finish_reason: FinishReason | None = None
    """Set on the last delta only."""


@runtime_checkable
class LanguageModel(Protocol):
    ref: str
    """Registry reference (`name:version`)."""
    context_length: int
    """Most tokens (prompt + completion) the model attends over."""

    def count_tokens(self, text: str) -> int: ...

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Chat messages ([{role, content}]) → the prompt text, by the model's chat
        template, ending where the assistant's reply starts."""
        ...

    def generate(self, prompts: list[str], params: GenerationConfig) -> list[Completion]:
        """One completion per prompt; prompts of different lengths run as one batch."""
        ...

    def stream(self, prompt: str, params: GenerationConfig) -> Iterator[Delta]:
        """The completion of one prompt, delta by delta (a generator: closing it stops
        generation; `completion_tokens` of the last delta read is what was computed)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    ref: str
    dimensions: int
    max_length: int
    """Longer inputs are truncated to this many tokens."""

    def count_tokens(self, text: str) -> int:
        """Tokens `embed` will read of `text` (after truncation to max_length)."""
        ...

    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """([N, dimensions] float32, L2-normalised; input tokens per text)."""
        ...
