"""The generation engine: prompts → completions, for any model behind a step function.

The step contract (`StepFn`): the engine calls

    logits, cache = step(input_ids, cache=cache, attention_mask=mask, position_ids=pos,
                         use_cache=use_cache)

    input_ids       int64 [B, t]    the tokens to run now: the left-padded prompts on the
                                    first call, then one new token per row (t = 1); with
                                    use_cache=False, the whole sequence every call
    cache           Any             None on the first call, then whatever the previous call
                                    returned (opaque to the engine; with use_cache=False
                                    always None)
    attention_mask  int64 [B, T]    1 = real token, 0 = left padding, over every token the
                    or None         model has seen including these t (T = cached + t);
                                    None when no row is padded (prompts of one length),
                                    so the model can take its plain causal path
    position_ids    int64 [B, t]    positions of these t tokens: the number of real tokens
                                    before each, so a left-padded prompt starts at 0
    use_cache       bool            False: the engine recomputes the whole sequence each
                                    call; the step need not build or return a cache
    → logits        float [B, t', V] next-token logits; only [:, -1] is read, so a step may
                                    return the last position alone (t' = 1)
    → cache         Any             state to pass back next call (None with use_cache=False)

`GPT.step` (foundry.models.gpt) and `HFCausalLMStep` (foundry.lm.hf_step) implement it.

What the engine guarantees:
- decoding: greedy when temperature is 0, else sampling after (in this order)
  repetition penalty (CTRL: a logit of a token already in the prompt or completion is
  divided by the penalty when positive, multiplied when negative), temperature, top-k
  (ties with the k-th logit are kept), top-p (the smallest set of most likely tokens
  whose probability reaches top_p; always at least one token);
- seeds: every row draws from its own generator seeded with `params.seed`, one uniform
  number per token, so a prompt gives the same text alone or in a batch, streamed or not;
- batches of different lengths run together: prompts are left-padded, padding is masked
  and does not shift positions;
- endings: a stop id of the tokenizer (EOS, end of turn: finish "stop", not in the text),
  a stop string (finish "stop"; the text ends before it, even when it spans several
  tokens), `max_tokens` or the model's context (finish "length");
- streaming: a delta never holds half of a multi-byte character, nor text that may still
  turn out to be the start of a stop string; the deltas add up to the completion's text.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from foundry.config.schema import GenerationConfig
from foundry.errors import ModelError
from foundry.lm.api import Completion, Delta, FinishReason
from foundry.lm.tokenizer import TokenizerLike

__all__ = [
    "GenerationEngine",
    "Row",
    "StepFn",
    "TextTracker",
    "advance_row",
    "greedy_texts",
    "pick_next_tokens",
]

_REPLACEMENT = "\ufffd"
"""What a decoder shows for the bytes of a character not yet complete."""


class StepFn(Protocol):
    """One forward pass of a causal LM, as the engine drives it (see the module doc)."""

    def __call__(
        self,
        input_ids: Tensor,
        *,
        cache: Any,
        attention_mask: Tensor | None,
        position_ids: Tensor,
        use_cache: bool,
    ) -> tuple[Tensor, Any]: ...


@dataclass
class Row:
    """One prompt's progress."""

    prompt: list[int]
    budget: int
    """Most tokens this row may generate (max_tokens, or what the context leaves)."""
    tokens: list[int] = field(default_factory=list)
    """Generated tokens, without the stop id that ended them."""
    computed: int = 0
    """Tokens generated, a final stop id included (that is what was computed)."""
    finish: FinishReason | None = None
    text: TextTracker | None = None


class GenerationEngine:
    """Completions for prompts from a step function and a tokenizer.

    `context_length` bounds prompt + completion. `use_cache=False` recomputes the whole
    sequence at every token (only to measure what the KV cache saves). Without a
    tokenizer only `generate_ids` works; `stop_ids` / `pad_id` then must be given.
    """

    def __init__(
        self,
        step: StepFn,
        tokenizer: TokenizerLike | None = None,
        *,
        context_length: int,
        device: str | torch.device = "cpu",
        use_cache: bool = True,
        stop_ids: Sequence[int] | None = None,
        pad_id: int | None = None,
    ) -> None:
        self.step = step
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.device = torch.device(device)
        self.use_cache = use_cache
        if tokenizer is None:
            if pad_id is None or stop_ids is None:
                raise ValueError("a GenerationEngine without a tokenizer needs pad_id and stop_ids")
            self.stop_ids, self.pad_id = frozenset(stop_ids), pad_id
        else:
            self.stop_ids = frozenset(tokenizer.stop_ids if stop_ids is None else stop_ids)
            self.pad_id = tokenizer.pad_id if pad_id is None else pad_id

    # ------------------------------------------------------------------ public API

    def generate(self, prompts: list[str], params: GenerationConfig) -> list[Completion]:
        """One completion per prompt, all prompts in one batch."""
        if not prompts:
            return []
        rows = self.new_rows([self.encode_prompt(p) for p in prompts], params, text=True)
        for _ in self._decode(rows, params):
            pass
        return [self.completion_of(row) for row in rows]

    def stream(self, prompt: str, params: GenerationConfig) -> Iterator[Delta]:
        """The completion of one prompt as deltas, one per generated token (a delta's text
        may be empty while text is held back); the last has `finish_reason` set."""
        [row] = self.new_rows([self.encode_prompt(prompt)], params, text=True)
        tracker = row.text
        assert tracker is not None
        for _ in self._decode([row], params):
            if row.finish is None:
                yield Delta(tracker.take_ready(), row.computed)
        yield Delta(tracker.take_rest(), row.computed, row.finish)

    def generate_ids(
        self, prompt_ids: list[list[int]], params: GenerationConfig
    ) -> list[list[int]]:
        """Token level: the generated ids of each prompt (stop id excluded). Stop strings
        need a tokenizer and are not checked here."""
        rows = self.new_rows([list(p) for p in prompt_ids], params, text=False)
        for _ in self._decode(rows, params):
            pass
        return [row.tokens for row in rows]

    # --------------------------------------------------------------------- helpers

    def encode_prompt(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("this GenerationEngine has no tokenizer; use generate_ids")
        ids = self.tokenizer.encode(prompt)
        # An empty prompt starts a new document: EOS is what precedes one in training
        # (it is then the one prompt token counted).
        return ids or [self.tokenizer.eos_id]

    def new_rows(
        self, prompts: list[list[int]], params: GenerationConfig, *, text: bool
    ) -> list[Row]:
        rows = []
        for ids in prompts:
            if not ids:
                raise ModelError("a prompt has no tokens; give at least one token id")
            if len(ids) >= self.context_length:
                raise ModelError(
                    f"the prompt is {len(ids)} tokens; this model's context is "
                    f"{self.context_length} tokens, which leaves no room to generate",
                    hint="shorten the prompt",
                )
            budget = min(params.max_tokens, self.context_length - len(ids))
            tracker = TextTracker(self.tokenizer, params.stop) if text and self.tokenizer else None
            rows.append(Row(prompt=ids, budget=budget, text=tracker))
        return rows

    def completion_of(self, row: Row) -> Completion:
        assert row.finish is not None
        text = row.text.final() if row.text is not None else ""
        return Completion(
            text=text,
            prompt_tokens=len(row.prompt),
            completion_tokens=row.computed,
            finish_reason=row.finish,
        )

    # ----------------------------------------------------------------- the loop

    def _decode(self, rows: list[Row], params: GenerationConfig) -> Iterator[None]:
        """Run the batch to the end, yielding after each generated token (rows updated)."""
        device, b = self.device, len(rows)
        width = max(len(row.prompt) for row in rows)
        ids = torch.full((b, width), self.pad_id, dtype=torch.int64)
        for i, row in enumerate(rows):  # left padding: every prompt ends at the last column
            ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt)
        ids = ids.to(device)
        # Without padding there is no mask at all (None): the model can take its plain
        # causal path, as transformers' generate does.
        mask = None
        if any(len(row.prompt) < width for row in rows):
            mask = torch.zeros((b, width), dtype=torch.int64)
            for i, row in enumerate(rows):
                mask[i, width - len(row.prompt) :] = 1
            mask = mask.to(device)
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # padding at 0: masked anyway
        else:
            positions = torch.arange(width, device=device)[None].expand(b, -1)
        generators = _generators(params.seed, b)
        seen = None
        if params.repetition_penalty != 1.0:  # tokens of each row so far (padding excluded)
            seen = torch.zeros((b, 1), dtype=torch.bool, device=device)
            seen = _mark_seen(seen, ids if mask is None else ids.masked_fill(mask == 0, -1))

        step_ids, step_positions, cache = ids, positions, None
        while True:
            with torch.inference_mode():
                logits, cache = self.step(
                    step_ids,
                    cache=cache if self.use_cache else None,
                    attention_mask=mask,
                    position_ids=step_positions,
                    use_cache=self.use_cache,
                )
            next_ids = pick_next_tokens(logits[:, -1].float(), params, generators, seen)
            for row, token in zip(rows, next_ids.tolist(), strict=True):
                if row.finish is None:
                    self._advance(row, token)
            yield
            finished = [row.finish is not None for row in rows]
            if all(finished):
                return

            # feed the new tokens (finished rows get padding; their output is ignored)
            new = next_ids[:, None]
            if any(finished):
                new = new.masked_fill(torch.tensor(finished, device=device)[:, None], self.pad_id)
            if seen is not None:
                seen = _mark_seen(seen, new)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            next_position = positions[:, -1:] + 1
            if self.use_cache:
                step_ids, step_positions, positions = new, next_position, next_position
            else:
                ids = torch.cat([ids, new], dim=1)
                positions = torch.cat([positions, next_position], dim=1)
                step_ids, step_positions = ids, positions

    def _advance(self, row: Row, token: int) -> None:
        advance_row(row, token, self.stop_ids)


def advance_row(row: Row, token: int, stop_ids: frozenset[int]) -> None:
    """Record one generated token and decide whether the row is done (both engines:
    this one and `foundry.lm.continuous`)."""
    row.computed += 1
    if token in stop_ids:
        row.finish = "stop"
        return
    row.tokens.append(token)
    if row.text is not None and row.text.update(row.tokens):
        row.finish = "stop"  # a stop string appeared
    elif len(row.tokens) >= row.budget:
        row.finish = "length"


# ------------------------------------------------------------------------ sampling


def pick_next_tokens(
    logits: Tensor,
    params: GenerationConfig,
    generators: list[torch.Generator],
    seen: Tensor | None = None,
    uniforms: Tensor | None = None,
) -> Tensor:
    """Next token per row from `logits` [B, V] (float32) → int64 [B].

    `seen` [B, V'] bool marks tokens already in each row (for the repetition penalty;
    V' may be shorter than V). `generators[i]` supplies row i's randomness: one uniform
    draw per token, turned into a token through the cumulative distribution. `uniforms`
    [B] float32: those draws, made already by the caller (foundry.lm.continuous draws
    ahead, the same numbers); then the generators are not used.
    """
    if seen is not None and params.repetition_penalty != 1.0:
        penalty = params.repetition_penalty
        hit = torch.zeros_like(logits, dtype=torch.bool)
        hit[:, : seen.shape[1]] = seen[:, : logits.shape[1]]
        logits = torch.where(
            hit, torch.where(logits > 0, logits / penalty, logits * penalty), logits
        )
    if params.temperature == 0:
        return logits.argmax(dim=-1)

    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # drop a token when the more likely ones before it already reach top_p
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)

    cdf = probs.cumsum(dim=-1)  # [B, V], not normalised after filtering: scale u instead
    if uniforms is None:
        uniforms = torch.stack([torch.rand((), generator=g) for g in generators])
    u = uniforms.to(cdf.device)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return picked.squeeze(1).clamp(max=logits.shape[-1] - 1)


def _generators(seed: int | None, n: int) -> list[torch.Generator]:
    """One CPU generator per row: the same seed for each, so a row does not depend on the
    rest of its batch; without a seed, fresh entropy per row."""
    if seed is None:
        entropy = random.SystemRandom()
        return [torch.Generator().manual_seed(entropy.randrange(2**63)) for _ in range(n)]
    return [torch.Generator().manual_seed(seed) for _ in range(n)]


def _mark_seen(seen: Tensor, ids: Tensor) -> Tensor:
    """`seen` [B, V'] with the ids [B, t] (negative = none) marked; grows V' as needed."""
    top = int(ids.max()) + 1
    if top > seen.shape[1]:
        seen = torch.cat([seen, seen.new_zeros((seen.shape[0], top - seen.shape[1]))], dim=1)
    valid = ids >= 0
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
    seen[rows[valid], ids[valid]] = True
    return seen


# -------------------------------------------------------------------- text tracking


class TextTracker:
    """The text of a row's tokens, cut at the first stop string, and how much of it is
    final: what may still change (an incomplete character, a possible stop string start)
    is held back from streams.

    Decoding the whole completion at each token (rather than token by token) is what
    keeps multi-byte characters and tokenizers whose pieces depend on their neighbours
    right. It costs O(length) per token, though: ~44 µs per row at 64 tokens, 0.7 ms of
    a 16-row decode step. A tokenizer that says `decodes_bytewise` (foundry's byte-level
    BPE) is decoded from the last point where its text ended on a whole character: the
    text before that point cannot change, and what follows decodes the same on its own.
    """

    def __init__(self, tokenizer: TokenizerLike, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.emitted = 0  # characters of the text already handed out
        self._tokens: list[int] = []
        self._text: str | None = ""  # None: not decoded since the last update
        self._settled = (0, "")
        """(tokens, their text) ending on a whole character: decoding resumes there
        (only for a `decodes_bytewise` tokenizer)."""
        self._bytewise = bool(getattr(tokenizer, "decodes_bytewise", False))
        self.stopped = False

    def update(self, tokens: list[int]) -> bool:
        """Take the row's tokens so far; returns True when a stop string has appeared."""
        self._tokens, self._text = tokens, None
        if not self.stops:
            return False  # decoded only when text is read
        text = self._current()
        # A stop string cannot start inside the text already emitted (that text was never
        # a possible start of one), so the search starts a stop's length before its end.
        start = max(0, self.emitted - max(len(s) for s in self.stops))
        hits = [i for s in self.stops if (i := text.find(s, start)) >= 0]
        if hits:
            self._text = text[: min(hits)]
            self.stopped = True
        return self.stopped

    def _current(self) -> str:
        if self._text is None:
            if not self._bytewise:
                self._text = self.tokenizer.decode(self._tokens)
                return self._text
            count, settled = self._settled
            if len(self._tokens) < count:  # another row's tokens (never in generation)
                count, settled = 0, ""
            tail = self.tokenizer.decode(self._tokens[count:])
            self._text = settled + tail
            if tail and tail[-1] != _REPLACEMENT:  # a whole character at the end
                self._settled = (len(self._tokens), self._text)
        return self._text

    def take_ready(self) -> str:
        """The text that became final since the last call."""
        text = self._current()
        end = len(text)
        while end > self.emitted and text[end - 1] == _REPLACEMENT:
            end -= 1  # an incomplete multi-byte character (or a real U+FFFD: sent later)
        end = min(end, self._possible_stop_start(text, end))
        return self._emit(text, end)

    def take_rest(self) -> str:
        """Everything not yet handed out (the row is finished)."""
        text = self._current()
        return self._emit(text, len(text))

    def final(self) -> str:
        return self._current()

    def _emit(self, text: str, end: int) -> str:
        if end <= self.emitted:
            return ""
        piece = text[self.emitted : end]
        self.emitted = end
        return piece

    def _possible_stop_start(self, text: str, end: int) -> int:
        """The earliest position from which text[pos:end] is the start of a stop string."""
        earliest = end
        for stop in self.stops:
            for k in range(min(len(stop) - 1, end - self.emitted), 0, -1):
                if text.endswith(stop[:k], 0, end):
                    earliest = min(earliest, end - k)
                    break
        return earliest


def greedy_texts(model: Any, prompts: list[str], max_tokens: int = 8) -> list[str]:
    """Greedy (temperature 0) continuations of `prompts` by a `LanguageModel`: the same
    weights give the same texts, so a model family's `outputs` for language models
    (the conformance suite compares a fitted model with its loaded package)."""
    params = GenerationConfig(max_tokens=max_tokens, temperature=0.0)
    return [completion.text for completion in model.generate(list(prompts), params)]
