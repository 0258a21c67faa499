"""Language models answered by another OpenAI-compatible engine, sold through this gate.

    serve:
      models:
        - {name: chat, upstream: http://gpu-1:8000/v1, model: Qwen/Qwen2.5-7B-Instruct,
           api_key_env: VLLM_API_KEY}

A team runs vLLM, TGI, llama.cpp's server (or another `foundry serve`) on its GPU
machines and sells it here: keys, plans, rate limits, quotas, Idempotency-Key and the
usage report work as for foundry's own models, because a relayed request goes through
the same admission and settlement as a local one (routes_openai's `_admit`, `_answer`,
`_settle`); only the generation is somebody else's.

Request. The body is checked by the same schema as a local request (unsupported OpenAI
options are refused the same way), then sent on as the client wrote it, with `model`
replaced by the upstream's id, `max_tokens` always set (the client's, else the entry's
`max_tokens`: the bound reserved against the quota) and, for a stream,
`stream_options.include_usage` on (the upstream's token counts are what is charged). The
client's foundry key is never sent; the upstream's own key comes from `api_key_env`.

Metering. Admission reserves an upper bound: the prompt's UTF-8 bytes (a byte-level or
byte-fallback tokenizer never makes more tokens than bytes), 8 tokens per chat message
for the template's markers, plus max_tokens. The request is then settled to the
upstream's `usage.total_tokens` (never above the reservation). When the upstream gives
no usage, tokens are counted here: prompt and completion text at 4 characters per token
(rounded up; OpenAI's rule of thumb for English), except a stream's completion, which
counts one token per relayed chunk that carried text (vLLM, TGI, llama.cpp and foundry
send one chunk per token). A stream cut off, by its client or by the upstream, has no
usage yet: it is charged the same way for what was relayed, as local streams are.

Errors come in the API's one shape: the upstream unreachable or answering 5xx → 502
`upstream_unavailable` / `upstream_error`; no answer within `timeout_s` → 504
`upstream_timeout`; every connection busy → 503 `upstream_busy`; a 4xx from the
upstream is passed on with its status and message, naming the upstream (401/403 are
ours to fix, not the client's: 502 `upstream_auth`). None of them is charged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from foundry.config.schema import UpstreamConfig
from foundry.errors import ConfigError
from foundry.serve import routes_openai as api
from foundry.serve.errors import ApiError

if TYPE_CHECKING:
    from foundry.serve.app import Service
    from foundry.serve.gate_api import Admission

__all__ = ["UpstreamModel", "relay"]

log = logging.getLogger("foundry.serve")

CHARS_PER_TOKEN = 4
"""Tokens counted here when the upstream reports none: characters / 4, rounded up."""
MESSAGE_OVERHEAD = 8
"""Tokens reserved per chat message for the template's role markers (`<|im_start|>user\\n`
... `<|im_end|>\\n` is 5 in ChatML; Llama 3's header is 4 + 1)."""
PARTIAL = 206
"""Status recorded for a stream the upstream ended early after relaying text: billable,
charged for what was relayed (a stream cut before any text is 502, not charged)."""


@dataclass
class UpstreamModel:
    """A `serve.models` entry with `upstream:`, as `Service.language_models` holds it."""

    config: UpstreamConfig
    client: httpx.AsyncClient
    """One pool per worker: keep-alive connections, at most `max_connections`."""
    api_key: str | None

    generates = True
    embeds = False
    kind = "language_model"

    @classmethod
    def open(cls, config: UpstreamConfig) -> UpstreamModel:
        key = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(
                    f"serve.models: upstream '{config.name}' takes its API key from the "
                    f"environment variable {config.api_key_env}, which is not set"
                )
        timeout = httpx.Timeout(
            config.timeout_s, connect=config.connect_timeout_s, pool=config.timeout_s
        )
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        client = httpx.AsyncClient(
            base_url=config.upstream.rstrip("/") + "/", timeout=timeout, limits=limits
        )
        return cls(config, client, key)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def ref(self) -> str:
        return self.config.name

    @property
    def upstream_model(self) -> str:
        return self.config.model or self.config.name

    def summary(self) -> dict[str, Any]:
        """The model's entry in GET /v1/models (the upstream's address stays private)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "ref": self.ref,
            "kind": self.kind,
            "engine": "upstream",
            "endpoints": ["/v1/completions", "/v1/chat/completions"],
        }
        if self.config.context_length is not None:
            entry["context_length"] = self.config.context_length
        return entry

    async def close(self) -> None:
        await self.client.aclose()


# ---------------------------------------------------------------------- relay


async def relay(
    service: Service,
    served: UpstreamModel,
    request: Request,
    body: api.CompletionRequest | api.ChatCompletionRequest,
    *,
    chat: bool,
) -> Response:
    """Admit `body` against the caller's key, send it to the upstream, answer (or
    stream) what it answers, and settle the request to the tokens used."""
    started = time.perf_counter()
    if chat:
        texts = [m.text() for m in body.messages]  # type: ignore[union-attr]
        reserve_prompt = sum(_bytes(t) + MESSAGE_OVERHEAD for t in texts)
        choices = 1
    else:
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt  # type: ignore[union-attr]
        reserve_prompt, choices = sum(_bytes(t) for t in texts), len(texts)
    max_tokens = (
        getattr(body, "max_completion_tokens", None) or body.max_tokens or served.config.max_tokens
    )
    reserved = reserve_prompt + choices * max_tokens
    admission = await api._admit(service, served, request, body, reserved, reserved)
    if admission is not None and admission.replay is not None:
        return api._replay(admission, admission.replay)

    payload = body.model_dump(mode="json", exclude_unset=True)
    payload.pop("max_completion_tokens", None)
    payload.update(model=served.upstream_model, max_tokens=max_tokens)
    if body.stream:
        payload["stream_options"] = {"include_usage": True}
    headers = {"accept": "text/event-stream" if body.stream else "application/json"}
    if served.api_key:
        headers["authorization"] = f"Bearer {served.api_key}"
    path = "chat/completions" if chat else "completions"
    prompt_estimate = sum(_estimate(t) for t in texts)

    try:
        upstream = await served.client.send(
            served.client.build_request("POST", path, json=payload, headers=headers),
            stream=True,
        )
    except httpx.HTTPError as exc:
        error = _transport_error(served, exc)
        await _settle_error(service, served, admission, started, error)
        raise error from None
    if upstream.status_code >= 400:
        try:
            raw = await upstream.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await upstream.aclose()
        error = _status_error(served, upstream.status_code, raw, upstream.headers)
        await _settle_error(service, served, admission, started, error)
        raise error

    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        events = _relay_stream(
            service,
            served,
            admission,
            started,
            upstream,
            include_usage=include,
            prompt_estimate=prompt_estimate,
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={**api._headers(admission), "cache-control": "no-cache"},
        )

    try:
        content = json.loads(await upstream.aread())
        if not isinstance(content, dict) or not isinstance(content.get("choices"), list):
            raise ValueError("no choices in the answer")
    except (httpx.HTTPError, ValueError) as exc:
        error = (
            _transport_error(served, exc)
            if isinstance(exc, httpx.HTTPError)
            else ApiError(
                502,
                "upstream_error",
                f"the upstream of model '{served.name}' "
                f"sent an answer that is not an OpenAI completion: {exc}",
            )
        )
        await _settle_error(service, served, admission, started, error)
        raise error from None
    finally:
        await upstream.aclose()
    content["model"] = served.name
    usage = _usage_of(content.get("usage"))
    if usage is None:  # counted here (module doc)
        completion = sum(_estimate(_choice_text(c)) for c in content["choices"])
        usage = api._usage(prompt_estimate, completion)
        content["usage"] = usage
    return await api._answer(service, served, admission, started, content, usage["total_tokens"])


async def _relay_stream(
    service: Service,
    served: UpstreamModel,
    admission: Admission | None,
    started: float,
    upstream: httpx.Response,
    *,
    include_usage: bool,
    prompt_estimate: int,
) -> AsyncIterator[bytes]:
    """The upstream's SSE chunks, one by one, as they come (`model` renamed to ours; its
    usage chunk only if the client asked for one); whatever happens, the request is
    charged for what was relayed (module doc)."""
    sent: list[str] = []
    """The events written so far: an Idempotency-Key's replay is these."""
    relayed = 0
    """Chunks that carried text: the completion tokens when the upstream gives no usage."""
    usage: dict[str, int] | None = None
    status = api.CLIENT_CLOSED

    def event(data: str) -> bytes:
        sent.append(data)
        return b"data: " + data.encode() + b"\n\n"

    def dump(chunk: dict[str, Any]) -> str:
        return json.dumps({**chunk, "model": served.name}, separators=(",", ":"))

    try:
        done = False
        async for data in _sse_data(upstream):
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if not isinstance(chunk, dict) or "error" in chunk:
                raise ValueError(f"the upstream sent an error: {str(data)[:300]}")
            usage = _usage_of(chunk.get("usage")) or usage
            if not chunk.get("choices"):  # the usage chunk we asked for
                if include_usage and chunk.get("usage"):
                    yield event(dump(chunk))
                continue
            relayed += any(_choice_text(c) for c in chunk["choices"])
            yield event(dump(chunk))
        if not done:
            raise ValueError("the stream ended without data: [DONE]")
        if include_usage and usage is None:  # asked for, not given: ours
            ident = f"cmpl-{time.time_ns()}"
            yield event(
                dump(
                    {
                        "id": ident,
                        "object": "text_completion",
                        "choices": [],
                        "usage": api._usage(prompt_estimate, relayed),
                    }
                )
            )
        yield event("[DONE]")
        status = 200
    except (httpx.HTTPError, ValueError) as exc:
        status = PARTIAL if relayed else 502
        log.warning(
            "upstream of model '%s' (%s) ended a stream early after %d chunks: %s",
            served.name,
            served.config.upstream,
            relayed,
            exc,
        )
        charged = "charged for the text relayed" if relayed else "not charged"
        yield event(
            json.dumps(
                {
                    "error": {
                        "message": f"the upstream of model '{served.name}' ended the stream early "
                        f"({type(exc).__name__}); {charged}",
                        "type": "server_error",
                        "param": None,
                        "code": "upstream_error",
                    }
                }
            )
        )
    finally:
        units = usage["total_tokens"] if usage is not None else prompt_estimate + relayed
        # Shielded: when the client goes away Starlette cancels this generator, and what
        # was relayed must still be charged (the upstream connection closed, so it stops).
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
            if status < 500 and api._keyed(admission):
                with contextlib.suppress(Exception):  # logged; the charge still settles
                    await service.gate_call(
                        api._store, service, admission, {"object": api._SSE_REPLAY, "events": sent}
                    )
            await api._settle(
                service, served, admission, started, status, units if status < 500 else 0
            )


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream (lines of one event joined),
    as they arrive; other fields and comments are not part of OpenAI's stream."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


# ---------------------------------------------------------------------- errors


def _transport_error(served: UpstreamModel, exc: httpx.HTTPError) -> ApiError:
    """No answer from the upstream: 503 when the pool is full, 504 on a timeout, 502 else."""
    log.warning(
        "upstream of model '%s' (%s): %s: %s",
        served.name,
        served.config.upstream,
        type(exc).__name__,
        exc,
    )
    who = f"the upstream of model '{served.name}'"
    if isinstance(exc, httpx.PoolTimeout):
        return ApiError(
            503,
            "upstream_busy",
            f"{who} has all its connections busy; retry shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(
            504,
            "upstream_timeout",
            f"{who} did not answer in time ({type(exc).__name__}); not charged",
        )
    return ApiError(
        502, "upstream_unavailable", f"{who} cannot be reached ({type(exc).__name__}); not charged"
    )


def _status_error(served: UpstreamModel, status: int, raw: bytes, headers: Any) -> ApiError:
    """An upstream's error answer in our shape: its 4xx passed on (but 401/403, which are
    about our key to it, not the client's), its 5xx as 502."""
    message, code, param = raw.decode("utf-8", "replace")[:500].strip(), None, None
    try:
        error = json.loads(raw).get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code") if isinstance(error.get("code"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        pass
    who = f"the upstream of model '{served.name}'"
    if status in (401, 403):
        log.error(
            "upstream of model '%s' (%s) refused our credentials (%d): check "
            "serve.models api_key_env",
            served.name,
            served.config.upstream,
            status,
        )
        return ApiError(
            502,
            "upstream_auth",
            f"{who} refused this server's credentials; "
            "not charged (the operator must fix serve.models api_key_env)",
        )
    if status < 500:
        extra = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else {}
        return ApiError(
            status,
            code or "upstream_rejected",
            f"{who} answered {status}: {message}",
            param=param,
            headers=extra,
        )
    log.warning(
        "upstream of model '%s' (%s) answered %d: %s",
        served.name,
        served.config.upstream,
        status,
        message,
    )
    return ApiError(502, "upstream_error", f"{who} failed ({status}): {message}; not charged")


async def _settle_error(
    service: Service,
    served: UpstreamModel,
    admission: Admission | None,
    started: float,
    error: ApiError,
) -> None:
    """Nothing is charged. A rejection (4xx but 429) is stored for an Idempotency-Key
    and replayed, as any answer; a failure, a 429 and a timeout free the key for a retry."""
    latency = (time.perf_counter() - started) * 1000.0
    service.metrics.request(served.name, error.status, latency / 1000.0)
    if admission is None or service.gate is None:
        return
    final = error.status < 500 and error.status != 429
    await service.gate_call(
        service.complete_quietly,
        admission,
        error.status if final else 502,
        latency,
        error.body() if final else None,
        0,
    )


# ---------------------------------------------------------------------- counting


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _choice_text(choice: Any) -> str:
    """A choice's text: `text` (completions), `message.content` or `delta.content` (chat)."""
    if not isinstance(choice, dict):
        return ""
    for part in (choice, choice.get("message"), choice.get("delta")):
        if isinstance(part, dict):
            text = part.get("text") if part is choice else part.get("content")
            if isinstance(text, str) and text:
                return text
    return ""


def _usage_of(usage: Any) -> dict[str, int] | None:
    """An upstream's `usage` as ours, or None when it gives none (or a malformed one)."""
    if not isinstance(usage, dict):
        return None
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        return None
    if prompt < 0 or completion < 0 or prompt + completion == 0:
        return None
    return api._usage(prompt, completion)
