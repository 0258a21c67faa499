"""OpenAI-compatible routes for language models (the `openai` client works against them).

    POST /v1/completions         prompt → text          (stream: SSE chunks, then [DONE])
    POST /v1/chat/completions    messages → message     (stream_options.include_usage)
    POST /v1/embeddings          input → vectors
    GET  /v1/models              (app.py) lists these models in OpenAI's `data` form too

Metering: a request's units are tokens. Admission reserves prompt + max_tokens (so a
hard quota is never overspent and the tokens-per-minute bucket sees the worst case) and
`Gate.complete(..., units=)`, once the answer is written, settles it to prompt +
completion tokens. A stream cut off by its client is charged for the tokens generated
until then (status 499, billable).

Idempotency-Key (as on /predict): the same key and body replays the first answer and is
charged once; the same key with another body is a 422 `idempotency_key_reused`; a retry
while the first is running gets 409 `idempotency_in_progress` (Retry-After: 1). A stream
is replayed whole: the same `data:` events, ending as the first one ended (the events a
client that left early had been sent, for a stream cut off). Bodies are compared after
parsing (the same request sent with its keys in another order is the same request) and
per route, so a chat body never replays as a completion.
Errors are the API's one format; unsupported OpenAI options (n > 1, logprobs, tools...)
are refused with 422 naming the field rather than ignored.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal
from uuid import uuid4

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.background import BackgroundTask

from foundry.config.schema import GenerationConfig
from foundry.serve.errors import ApiError
from foundry.serve.gate_api import Admission, AdmitRequest, StoredResponse
from foundry.serve.lm_serving import ServedLanguageModel, StreamProgress, generation_params

if TYPE_CHECKING:
    from foundry.serve.app import Service

log = logging.getLogger("foundry.serve")

CLIENT_CLOSED = 499
"""Status recorded for a stream its client closed (billable: tokens were computed)."""


# ---------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False
    """Send a last chunk with `usage` (and no choices) before `[DONE]`."""


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    """Extension: sample among the k most likely tokens."""
    repetition_penalty: float | None = Field(None, gt=0)
    """Extension: > 1 discourages tokens already present."""
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = 1
    """Only one choice per request."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Literal[0] = 0
    """Not supported beyond 0; use repetition_penalty."""
    frequency_penalty: Literal[0] = 0
    """Not supported beyond 0; use repetition_penalty."""
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    """One prompt, or a list (one choice each)."""

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= 64:
            raise ValueError("send 1 to 64 prompts")
        return v


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """Same as max_tokens (the newer name)."""


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= 2048:
            raise ValueError("send 1 to 2048 inputs")
        return v


# ---------------------------------------------------------------------- routes


def openai_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["openai"])
    bearer = {"security": [{"bearerAuth": []}]}

    @router.post("/v1/completions", openapi_extra=bearer)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Text completion (OpenAI `completions`); `stream: true` answers with SSE."""
        served = service.language_model(body.model, generate=True)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if body.stream and len(prompts) > 1:
            raise ApiError(422, "invalid_field", "stream one prompt at a time",
                           param="prompt")
        if _upstream(served):  # another engine answers (serve/upstream.py)
            return await _relay(service, served, request, body, chat=False)
        return await _generate(service, served, request, body, prompts, chat=False)

    @router.post("/v1/chat/completions", openapi_extra=bearer)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Chat completion (OpenAI `chat.completions`); `stream: true` answers with SSE."""
        served = service.language_model(body.model, generate=True)
        if _upstream(served):
            return await _relay(service, served, request, body, chat=True)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt = served.model.render_chat(messages)
        return await _generate(service, served, request, body, [prompt], chat=True)

    @router.post("/v1/embeddings", openapi_extra=bearer)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """Sentence embeddings (OpenAI `embeddings`), L2-normalised."""
        served = service.language_model(body.model, generate=False)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if body.dimensions is not None and body.dimensions != served.model.dimensions:
            raise ApiError(422, "invalid_field",
                           f"model '{served.name}' gives {served.model.dimensions} "
                           f"dimensions, not {body.dimensions}", param="dimensions")
        started = time.perf_counter()
        tokens = sum(served.model.count_tokens(t) for t in texts)
        admission = await _admit(service, served, request, body, tokens, tokens)
        if admission is not None and admission.replay is not None:
            return _replay(admission, admission.replay)
        try:
            vectors, counts = await served.embed(texts)
        except Exception:
            await _fail(service, served, admission, started)
            raise
        used = int(sum(counts))
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(vec, body.encoding_format)}
            for i, vec in enumerate(np.asarray(vectors, dtype=np.float32))
        ]
        content = {"object": "list", "data": data, "model": served.name,
                   "usage": {"prompt_tokens": used, "total_tokens": used}}
        return await _answer(service, served, admission, started, content, min(used, tokens))

    return router


# ---------------------------------------------------------------------- upstreams


# Imported when called: serve/upstream.py imports this module's metering helpers.


def _upstream(served: Any) -> bool:
    """A `serve.models` entry with `upstream:` (answered by another OpenAI engine)."""
    from foundry.serve.upstream import UpstreamModel

    return isinstance(served, UpstreamModel)


async def _relay(service: Service, served: Any, request: Request, body: Any,
                 *, chat: bool) -> Response:
    from foundry.serve.upstream import relay

    return await relay(service, served, request, body, chat=chat)


# ---------------------------------------------------------------------- generation


async def _generate(
    service: Service,
    served: ServedLanguageModel,
    request: Request,
    body: CompletionRequest | ChatCompletionRequest,
    prompts: list[str],
    *,
    chat: bool,
) -> Response:
    started = time.perf_counter()
    counts = [served.model.count_tokens(p) for p in prompts]
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    params = [
        generation_params(
            served, n, max_tokens=max_tokens, temperature=body.temperature,
            top_p=body.top_p, top_k=body.top_k, repetition_penalty=body.repetition_penalty,
            stop=body.stop, seed=body.seed,
        )
        for n in counts
    ]
    reserved = sum(counts) + sum(p.max_tokens for p in params)
    admission = await _admit(service, served, request, body, reserved, reserved)
    if admission is not None and admission.replay is not None:
        return _replay(admission, admission.replay)
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _sse(service, served, admission, started, prompts[0], params[0], counts[0],
                      ident, created, chat=chat, include_usage=include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={**_headers(admission), "cache-control": "no-cache"})
    choices, completion_tokens = [], 0
    try:
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            done = await served.generate(prompt, p)
            completion_tokens += done.completion_tokens
            choices.append(_choice(i, done.text, done.finish_reason, chat=chat))
    except Exception:
        await _fail(service, served, admission, started)
        raise
    usage = _usage(sum(counts), completion_tokens)
    content = {"id": ident, "object": "chat.completion" if chat else "text_completion",
               "created": created, "model": served.name, "choices": choices, "usage": usage}
    return await _answer(service, served, admission, started, content, usage["total_tokens"])


async def _sse(
    service: Service,
    served: ServedLanguageModel,
    admission: Admission | None,
    started: float,
    prompt: str,
    params: GenerationConfig,
    prompt_tokens: int,
    ident: str,
    created: int,
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """`data: {chunk}` events, the usage chunk if asked, `data: [DONE]`; whatever happens
    (end, client gone, failure) the request is charged for the tokens computed."""
    progress = StreamProgress()
    kind = "chat.completion.chunk" if chat else "text_completion"
    status = CLIENT_CLOSED
    sent: list[str] = []
    """The events written so far: an Idempotency-Key's replay is these."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data = {"id": ident, "object": kind, "created": created, "model": served.name,
                "choices": choices, **extra}
        return event(json.dumps(data, separators=(",", ":")))

    def event(data: str) -> bytes:
        sent.append(data)
        return b"data: " + data.encode() + b"\n\n"

    try:
        if chat:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None}])
        async for delta in served.stream(prompt, params, progress):
            if delta.text or delta.finish_reason is not None:
                yield chunk([_stream_choice(delta.text, delta.finish_reason, chat=chat)])
        if include_usage:
            yield chunk([], usage=_usage(prompt_tokens, progress.completion_tokens))
        yield event("[DONE]")
        status = 200
    except Exception:
        status = 500
        service.log_failure(served.name, admission)
        yield chunk([], error={"message": "generation failed; not charged",
                               "type": "server_error", "param": None,
                               "code": "internal_error"})
    finally:
        units = prompt_tokens + progress.completion_tokens
        # Shielded: when the client goes away Starlette cancels this generator, and the
        # tokens computed must still be charged (and the reservation settled). Stored
        # first (the events are written already), so a retry after this is a replay.
        with anyio.CancelScope(shield=True):
            if status < 500 and _keyed(admission):
                with contextlib.suppress(Exception):  # logged; the charge still settles
                    await service.gate_call(_store, service, admission,
                                            {"object": _SSE_REPLAY, "events": sent})
            await _settle(service, served, admission, started, status, units)


def _choice(index: int, text: str, finish: str, *, chat: bool) -> dict[str, Any]:
    if chat:
        return {"index": index, "message": {"role": "assistant", "content": text},
                "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}


def _stream_choice(text: str, finish: str | None, *, chat: bool) -> dict[str, Any]:
    if chat:
        delta = {"content": text} if text else {}
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai client asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


# ---------------------------------------------------------------------- metering


_SSE_REPLAY = "foundry.sse_replay"
"""`object` of a stored stream: {"object": _SSE_REPLAY, "events": [data, ...]}."""


async def _admit(service: Service, served: ServedLanguageModel, request: Request,
                 body: BaseModel, units: int, tokens: int) -> Admission | None:
    """Reserve `units` (check the key, rate, quota); with an Idempotency-Key, the
    admission may be a replay of the first answer."""
    if service.gate is None:  # bare app (benchmarks only)
        return None
    ikey = request.headers.get("idempotency-key")
    body_hash = _body_hash(request.url.path, body) if ikey is not None else None
    return await service.gate_runner.admit(
        AdmitRequest(request.headers.get("authorization"), served.name, units,
                     uuid4().hex, ikey, body_hash, tokens=tokens)
    )


def _body_hash(route: str, body: BaseModel) -> str:
    """The request as parsed (defaults filled in, keys in order) and its route."""
    text = json.dumps({"route": route, "body": body.model_dump(mode="json")},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _replay(admission: Admission, stored: StoredResponse) -> Response:
    """The first answer of an Idempotency-Key again (charged nothing)."""
    headers = {**_headers(admission), "idempotent-replayed": "true"}
    body = stored.body
    if isinstance(body, dict) and body.get("object") == _SSE_REPLAY:
        events = [b"data: " + data.encode() + b"\n\n" for data in body["events"]]

        async def again() -> AsyncIterator[bytes]:
            for item in events:
                yield item

        return StreamingResponse(again(), stored.status, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    return JSONResponse(body, stored.status, headers)


async def _answer(service: Service, served: ServedLanguageModel, admission: Admission | None,
                  started: float, content: dict[str, Any], units: int) -> Response:
    """The JSON answer; with an Idempotency-Key its body is stored first (a retry after
    the answer is a replay), and the reservation is settled once it is written."""
    if _keyed(admission):
        try:
            await service.gate_call(_store, service, admission, content)
        except Exception:  # not stored: not answered, and its reservation given back
            await _fail(service, served, admission, started)
            raise

    async def settle() -> None:
        await _settle(service, served, admission, started, 200, units)

    return JSONResponse(content, headers=_headers(admission), background=BackgroundTask(settle))


def _keyed(admission: Admission | None) -> bool:
    """Admitted with an Idempotency-Key (its answer is to be stored)."""
    return getattr(admission, "idempotency_key", None) is not None


def _store(service: Service, admission: Admission, content: Any) -> None:
    """Gate thread: `store_response`, a failure logged and raised."""
    assert service.gate is not None
    try:
        service.gate.store_response(admission, 200, content)
    except Exception:
        log.exception("storing the answer of usage event %s failed", admission.event_id)
        raise


async def _settle(service: Service, served: ServedLanguageModel,
                  admission: Admission | None, started: float, status: int,
                  units: int) -> None:
    latency = (time.perf_counter() - started) * 1000.0
    service.metrics.request(served.name, status, latency / 1000.0)
    if admission is None or service.gate is None:
        return
    reserved = getattr(admission, "units", units)
    await service.gate_call(service.complete_quietly, admission, status, latency,
                            None, min(units, reserved))


async def _fail(service: Service, served: ServedLanguageModel, admission: Admission | None,
                started: float) -> None:
    await _settle(service, served, admission, started, 500, 0)


def _headers(admission: Admission | None) -> dict[str, str]:
    return admission.rate.headers() if admission is not None else {}
