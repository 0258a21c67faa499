"""The prediction API: `create_app(serve_config, ["adult:3"])` → a FastAPI app.

    GET  /healthz                      200 {"status": "ok"} while the process runs
    GET  /readyz                       200 once every model is loaded, else 503
    GET  /v1/models                    served models: name, version, task, inputs
    GET  /v1/models/{name}             input schema + a ready-to-send example body
    POST /v1/models/{name}/predict     labels + probabilities / values (needs a key)
    POST /v1/models/{name}/explain     integrated-gradients attributions (needs a key)
    POST /v1/models/{name}/recommend   a recommender's top-k items for a user (needs a key;
                                       served_recommender)
    GET  /v1/usage                     the calling key's usage and remaining quota
    GET  /metrics                      Prometheus text (serve.metrics: admin token by
                                       default, public or off; foundry.serve.metrics)
    /admin/keys...                     key admin behind FOUNDRY_ADMIN_TOKEN (routes_admin)
    GET  /dashboard, /admin/dashboard/...  the admin dashboard (foundry.serve.dashboard)
    GET  /docs, /redoc, /openapi.json  OpenAPI: Swagger UI and ReDoc, their assets served
                                       here, no CDN (foundry.serve.api_docs)

A predict request goes: `gate.authenticate` (401/403, before the body is read, so
only a caller with a key learns the model's fields) → media type (415) → body size (413)
→ JSON (400; 415 unless UTF-8) → records per request (413) → records vs the model's
inputs (422) → admission (429, or an idempotent replay) → the model's batcher →
response → `gate.complete`. Bodies over `serve.offload_body_bytes` are parsed and checked
on a worker thread (foundry.serve.request_body). Slow clients and the connection cap are
handled below the app, in the HTTP protocol (foundry.serve.http_limits).
Gate calls are synchronous database work and run on the gate's own thread, which admits
concurrent requests in groups (foundry.serve.gate_runner); the forward pass runs on the
model's own thread (foundry.serve.batching):
the event loop only parses, checks and answers. Every error, whatever raised it, is
answered as `{"error": {"message", "type", "param", "code"}}` (foundry.serve.errors).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from foundry.config.schema import ServeConfig
from foundry.errors import ConfigError, FoundryError
from foundry.lm.continuous import ENGINE_SWITCH_INTERVAL_S, ContinuousBatcher
from foundry.serve.batching import Batcher
from foundry.serve.errors import ApiError, install_error_handlers

# The checks admission makes without the database, made again before the body is read
# (gate.py keeps the one copy).
from foundry.serve.gate import _check_model as check_model
from foundry.serve.gate import _check_records as check_records
from foundry.serve.gate_api import Admission, AdmitRequest, KeyInfo
from foundry.serve.gate_runner import GateRunner
from foundry.serve.lm_serving import ServedLanguageModel
from foundry.serve.metrics import CONTENT_TYPE, ServeMetrics
from foundry.serve.request_body import (
    body_hash,
    encode_json,
    parse_json,
    read_body,
    release,
)
from foundry.serve.schemas import (
    ErrorResponse,
    ExplainBody,
    ExplainRequest,
    ExplainResponse,
    ModelDetail,
    ModelList,
    PredictRequest,
    PredictResponse,
    RecommendRequest,
    RecommendResponse,
    Records,
    Status,
    explain_body,
)
from foundry.serve.served_model import ServedModel, ServedTextModel
from foundry.serve.served_recommender import ServedRecommender

if TYPE_CHECKING:
    from pydantic import BaseModel

    from foundry.serve.gate import Gate

log = logging.getLogger("foundry.serve")
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503)
}
_BEARER = [{"bearerAuth": []}]
_SCRUB_INLINE_BYTES = 4_096
"""Bodies up to this size are PII-scrubbed on the event loop (~4 ms at worst, at the
~1 MB/s of a value packed with PII-like candidates); larger ones on a worker thread."""


class Service:
    """Everything the routes share: models, batchers, gate, metrics. One per app."""

    def __init__(
        self,
        config: ServeConfig,
        refs: list[str],
        *,
        gate: Gate | None,
        home: str | Path | None,
        admin_token: str | None,
        owns_gate: bool = False,
    ) -> None:
        self.config = config
        self.owns_gate = owns_gate
        """The gate was made by create_app: stop() closes its connections."""
        self.refs = refs
        self.gate = gate
        self.home = home
        self.admin_token = admin_token or None
        self.metrics = ServeMetrics()
        self.models: dict[str, ServedModel | ServedTextModel | ServedRecommender] = {}
        """By name and by `name:version` (both spellings route to the same model)."""
        self.batchers: dict[str, Batcher] = {}
        self.language_models: dict[str, ServedLanguageModel] = {}
        """Generation and embedding models, by name and `name:version`."""
        self._engines: dict[str, ServedLanguageModel] = {}
        """Each language model by the ref it was asked for (a key of `state`)."""
        self.state: dict[str, str] = {ref: "loading" for ref in refs}
        self._gate_runner: GateRunner | None = None
        self._in_flight = 0
        """Predict requests under way in this process (a lone one is admitted at once)."""
        self._torch_threads: int | None = None
        """PyTorch's thread count before start(), restored by stop()."""
        self._switch_interval: float | None = None
        """Python's GIL switch interval before start(), restored by stop()."""
        self.explainers: dict[str, Any] = {}
        """`foundry.evaluation.explain.Explainer` by model ref, made on first use."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every model (once per worker process) and start its batcher."""
        from foundry.registry import Registry

        registry = Registry(self.home) if self.home is not None else Registry()
        self.state = {ref: "loading" for ref in self.refs}
        if self.gate is not None:  # this worker's lease; a crash's reservations voided
            await run_in_threadpool(self.gate.start)
        self._torch_threads = _set_torch_threads(inference_threads(self.config.workers))
        for ref in self.refs:
            try:
                kind = await run_in_threadpool(_serving_kind, ref, registry)
                language = kind == "language"
                if language:
                    lm = await run_in_threadpool(
                        partial(ServedLanguageModel.load, ref, registry,
                                settings=self.config.lm, metrics=self.metrics))
                elif kind == "text":
                    served = await run_in_threadpool(_load_text_model, ref, registry)
                elif kind == "recommend":
                    served = await run_in_threadpool(ServedRecommender.load, ref,
                                                     registry=registry)
                else:
                    served = await run_in_threadpool(ServedModel.load, ref, registry=registry)
            except Exception as exc:
                self.state[ref] = f"failed: {exc}"
                raise
            if language:
                if lm.name in self.language_models or lm.name in self.batchers:
                    self.state[ref] = "failed: another version of this model is served"
                    raise ConfigError(f"serve one version per model; '{lm.name}' is "
                                      f"requested twice ({', '.join(self.refs)})")
                self.language_models[lm.name] = self.language_models[lm.ref] = lm
                self._engines[ref] = lm
                self.state[ref] = "loaded"
                continue
            if served.name in self.batchers or served.name in self.language_models:
                self.state[ref] = "failed: another version of this model is served"
                raise ConfigError(f"serve one version per model; '{served.name}' is requested "
                                  f"twice ({', '.join(self.refs)})")
            config = self.config.model_batching.get(served.name, self.config.batching)
            # The request path scrubs PII before submitting (Service._checked), so the
            # batching thread only encodes and runs the model.
            batcher = Batcher(served.name, served.forward_records, config,
                              on_batch=partial(self.metrics.batch, served.name))
            batcher.start()
            self.batchers[served.name] = batcher
            self.models[served.name] = self.models[served.ref] = served
            self.state[ref] = "loaded"
        if self.gate is not None:  # `foundry models delete` refuses what is served
            served = sorted({m.ref for m in (*self.models.values(),
                                             *self.language_models.values())})
            await run_in_threadpool(self.gate.lease.record_models, served)
        for upstream in self.config.upstreams():  # answered by another engine
            from foundry.serve.upstream import UpstreamModel

            if upstream.name in self.language_models or upstream.name in self.batchers:
                raise ConfigError(f"serve.models: upstream '{upstream.name}' has the name of "
                                  "a registry model served here; rename one of them")
            self.language_models[upstream.name] = UpstreamModel.open(upstream)
            self.state[upstream.name] = "loaded"
        if any(isinstance(getattr(m, "batcher", None), ContinuousBatcher)
               for m in self.language_models.values()):  # an engine thread here
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(ENGINE_SWITCH_INTERVAL_S)

    async def stop(self) -> None:
        for ref in self.state:
            self.state[ref] = "stopped"
        batchers, self.batchers, self.models = self.batchers, {}, {}
        self.explainers = {}
        for batcher in batchers.values():
            await batcher.close()
        language, self.language_models, self._engines = self.language_models, {}, {}
        for lm in {id(m): m for m in language.values()}.values():
            await lm.close()
        if self._torch_threads is not None:
            _set_torch_threads(self._torch_threads)
            self._torch_threads = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        runner, self._gate_runner = self._gate_runner, None
        if runner is not None:  # let pending usage writes finish
            await runner.close()
        if self.owns_gate and self.gate is not None:
            self.gate.close()
        self.metrics.close()

    @property
    def ready(self) -> bool:
        for ref, lm in self._engines.items():
            gone = lm.engine_failure
            if gone is not None and self.state.get(ref) == "loaded":
                self.state[ref] = f"failed: {gone}"  # /readyz 503: restart the server
        return bool(self.state) and all(s == "loaded" for s in self.state.values())

    def model(self, name: str) -> ServedModel | ServedTextModel | ServedRecommender:
        served = self.models.get(name)
        if served is None:
            names = sorted({m.name for m in self.models.values()})
            served_text = ", ".join(names) if names else "none yet (the server is starting)"
            raise ApiError(
                404,
                "model_not_found",
                f"no model '{name}' is served here; served: {served_text} (GET /v1/models)",
                param="model",
            )
        return served

    # ------------------------------------------------------------------ predict

    async def predict(self, served: ServedModel | ServedTextModel | ServedRecommender,
                      request: Request, *, answers: str = "predictions") -> Response:
        """POST /v1/models/{name}/predict, and /recommend (`answers="recommendations"`:
        a recommender's queries are its records, metered and batched the same way)."""
        if (answers == "recommendations") != isinstance(served, ServedRecommender):
            route = "recommend" if isinstance(served, ServedRecommender) else "predict"
            raise ApiError(400, "invalid_model", f"model '{served.name}' is served on "
                           f"POST /v1/models/{served.name}/{route}", param="model")
        started = perf_counter()
        request_id = uuid4().hex
        status = 500
        self._in_flight += 1
        try:
            key = await self._authenticate(request, served.name)
            with self.batchers[served.name].ticket() as ticket:
                idempotency_key = request.headers.get("idempotency-key")
                body = await read_body(request, self.config.max_body_bytes)
                # A recommend body hashes under its own name: it never replays as predict.
                hash_as = served.name if answers == "predictions" else f"{served.name}/recommend"
                records, digest = await self._checked(
                    body, served, key, served.validator.records_of,
                    hash_as if idempotency_key else None)
                units = len(records.items)
                admission = None
                if self.gate is not None:
                    admission = await self.gate_runner.admit(
                        AdmitRequest(
                            request.headers.get("authorization"),
                            served.name,
                            units,
                            request_id,
                            idempotency_key,
                            digest,
                        ),
                        alone=self._in_flight == 1,
                    )
                    if admission.replay is not None:
                        status = admission.replay.status
                        headers = {"x-request-id": request_id, "idempotent-replayed": "true",
                                   **admission.rate.headers()}
                        return JSONResponse(admission.replay.body, status, headers)
                headers = {"x-request-id": request_id}
                if admission is not None:
                    headers.update(admission.rate.headers())
                try:
                    predictions = await ticket.submit(records.items)
                    content = {
                        "model": served.ref,
                        answers: predictions,
                        "usage": {"units": units},
                    }
                    response = await self._json_response(content, headers, units)
                except Exception:
                    log.exception("model '%s' failed on request %s", served.ref, request_id)
                    if admission is not None:
                        await self.gate_call(
                            self._complete, admission, 500, _ms_since(started), None
                        )
                    raise ApiError(
                        500,
                        "internal_error",
                        f"model '{served.name}' failed on this request, which was not "
                        f"charged; request id {request_id}",
                    ) from None
            if admission is not None:
                if idempotency_key:
                    # Stored before answering, so a retry after this answer is a replay.
                    await self.gate_call(self.store_answer, admission, content)
                response.background = self.settle_after_answer(admission, started)
            status = 200
            if len(body) > self.config.offload_body_bytes:  # many records: see `release`
                asyncio.get_running_loop().run_in_executor(None, release, records.items,
                                                           predictions)
            return response
        except ApiError as exc:
            status = exc.status
            if status == 429:
                self.metrics.rejection(exc.code)
            exc.headers = {**exc.headers, "x-request-id": request_id}
            raise
        finally:
            self._in_flight -= 1
            self.metrics.request(served.name, status, perf_counter() - started)

    # ------------------------------------------------------------------ explain

    async def explain(self, name: str, request: Request) -> Response:
        """POST /v1/models/{name}/explain: predict's checks, gate and metering (units =
        records; usage events carry request ids `explain-...`), then integrated gradients
        on a worker thread: never through the batcher, whose forward passes stay short."""
        if name in self.language_models:
            raise ApiError(400, "invalid_model", f"model '{name}' is a language model: "
                           "explanations cover models with input features; it is served on "
                           "the OpenAI-compatible routes", param="model")
        served = self.model(name)
        if isinstance(served, ServedRecommender):
            raise ApiError(400, "model_not_explainable", f"model '{name}' is a recommender: "
                           "its scores are dot products of learned factors, with no input "
                           "features to attribute them to", param="model")
        started = perf_counter()
        request_id = f"explain-{uuid4().hex}"
        self._in_flight += 1
        try:
            key = await self._authenticate(request, served.name)
            idempotency_key = request.headers.get("idempotency-key")
            raw = await read_body(request, self.config.max_body_bytes)
            parts: list[ExplainBody] = []

            def records_of(payload: Any) -> Records:
                parts.append(explain_body(payload))
                return parts[0].records

            # Hashed under its own name, so a predict body never replays as an explanation.
            _, digest = await self._checked(
                raw, served, key, records_of,
                f"{served.name}/explain" if idempotency_key else None)
            body = parts[0]
            # A model without gradients or an unknown class: refused before admission,
            # so never charged.
            explainer = await run_in_threadpool(self._explainer, served, body.target)
            units = len(body.records.items)
            admission = None
            if self.gate is not None:
                admission = await self.gate_runner.admit(
                    AdmitRequest(request.headers.get("authorization"), served.name, units,
                                 request_id, idempotency_key, digest),
                    alone=self._in_flight == 1,
                )
                if admission.replay is not None:
                    headers = {"x-request-id": request_id, "idempotent-replayed": "true",
                               **admission.rate.headers()}
                    return JSONResponse(admission.replay.body, admission.replay.status,
                                        headers)
            headers = {"x-request-id": request_id}
            if admission is not None:
                headers.update(admission.rate.headers())
            try:
                content = await run_in_threadpool(_explain_records, served, explainer, body)
                content["usage"] = {"units": units}
                response = JSONResponse(content, 200, headers)
            except Exception:
                log.exception("explaining with model '%s' failed on request %s", served.ref,
                              request_id)
                if admission is not None:
                    await self.gate_call(self._complete, admission, 500, _ms_since(started),
                                         None)
                raise ApiError(500, "internal_error", f"model '{served.name}' failed to "
                               f"explain this request, which was not charged; request id "
                               f"{request_id}") from None
            if admission is not None:
                if idempotency_key:  # stored before answering: a retry is then a replay
                    await self.gate_call(self.store_answer, admission, content)
                response.background = self.settle_after_answer(admission, started)
            return response
        except ApiError as exc:
            if exc.status == 429:
                self.metrics.rejection(exc.code)
            exc.headers = {**exc.headers, "x-request-id": request_id}
            raise
        finally:
            self._in_flight -= 1

    async def _authenticate(self, request: Request, model: str) -> KeyInfo | None:
        """The caller's key, checked before the body is read: an unknown caller gets 401
        (a key without this model 403) and never learns the model's fields from a 422.
        A cached key costs a dict lookup here; a miss reads the database on the gate's
        thread. None without a gate (the benchmark's bare app)."""
        if self.gate is None:
            return None
        authorization = request.headers.get("authorization")
        key = self.gate.authenticate_cached(authorization)
        if key is None:
            key = await self.gate_call(self.gate.authenticate, authorization)
        check_model(key, model)
        return key

    async def _checked(
        self,
        body: bytes,
        served: ServedModel | ServedTextModel,
        key: KeyInfo | None,
        records_of: Callable[[Any], Records],
        hash_as: str | None,
    ) -> tuple[Records, str | None]:
        """Parse `body`, find its records (`records_of`), hold them to the key's plan
        (413) and to the model's inputs (422, values cast in place); with `hash_as`, the
        body's hash for Idempotency-Key (taken before the casts). A body over
        `serve.offload_body_bytes` goes through all of it on a worker thread, parsed a
        record at a time, so the loop keeps answering meanwhile (request_body)."""
        def work(yielding: bool) -> tuple[Records, str | None]:
            payload = parse_json(body, yielding=yielding)
            try:
                records = records_of(payload)
                if key is not None:
                    check_records(key, len(records.items))
                digest = (body_hash(hash_as, payload, yielding=yielding)
                          if hash_as is not None else None)
                served.validator.validate(records)
                if scrubs:
                    records = replace(records, items=served.scrub(records.items))
            except BaseException:
                if yielding and isinstance(payload, (list, dict)):
                    # A refused large body: freed here, not by whoever drops the error.
                    release(*(v for v in (payload, *_values(payload)) if isinstance(v, list)))
                raise
            return records, digest

        # PII scrubbing runs here too (see ServedModel.scrub). A body packed with
        # PII-like values scans at ~1 MB/s, so past _SCRUB_INLINE_BYTES it is scrubbed on
        # a worker thread rather than on the loop.
        scrubs = isinstance(served, ServedModel) and served.scrubs
        inline = self.config.offload_body_bytes
        if scrubs:
            inline = min(inline, _SCRUB_INLINE_BYTES)
        if len(body) <= inline:
            return work(False)
        return await run_in_threadpool(work, len(body) > self.config.offload_body_bytes)

    async def _json_response(self, content: dict[str, Any], headers: dict[str, str],
                             units: int) -> Response:
        """A 200 JSONResponse of `content`, encoded on a worker thread when it answers
        many records (as large bodies are parsed: see `_checked`)."""
        # ~100 bytes a prediction: the answer is about as large as the body was.
        if units * 100 <= self.config.offload_body_bytes:
            return JSONResponse(content, 200, headers)
        encoded = await run_in_threadpool(partial(encode_json, content, yielding=True))
        return Response(encoded, 200, headers, media_type="application/json")

    def _explainer(self, served: ServedModel | ServedTextModel, target: str | None) -> Any:
        """Worker thread: the model's Explainer (its private network copy is made once)
        with `target` checked; 400 for a model without gradients, 422 for an unknown
        class."""
        from foundry.evaluation.explain import Explainer

        explainer = self.explainers.get(served.ref)
        try:
            if explainer is None:
                explainer = self.explainers.setdefault(served.ref, Explainer(served.predictor))
        except FoundryError as exc:
            raise ApiError(400, "model_not_explainable", str(exc), param="model") from None
        try:
            explainer.target_index(target)
        except FoundryError as exc:
            raise ApiError(422, "invalid_field", str(exc), param="target") from None
        return explainer

    @property
    def gate_runner(self) -> GateRunner:
        """The gate's thread (made on first use, inside the running loop)."""
        if self._gate_runner is None:
            self._gate_runner = GateRunner(self.gate)
        return self._gate_runner

    async def gate_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a gate (database) call off the event loop, on the gate's thread."""
        return await self.gate_runner.call(fn, *args)

    def language_model(self, name: str, *, generate: bool) -> ServedLanguageModel:
        """The served generation (generate=True) or embedding model called `name`;
        404 if none, 400 if it is another kind of model."""
        lm = self.language_models.get(name)
        if lm is None:
            if name in self.models:
                raise ApiError(
                    400, "invalid_model",
                    f"model '{name}' is not a language model: call POST "
                    f"/v1/models/{name.split(':')[0]}/predict", param="model")
            names = sorted({m.name for m in self.language_models.values()})
            raise ApiError(
                404, "model_not_found",
                f"no language model '{name}' is served here; served: "
                f"{', '.join(names) or 'none'} (GET /v1/models)", param="model")
        if generate and not lm.generates:
            raise ApiError(400, "invalid_model", f"model '{name}' makes embeddings: call "
                           "POST /v1/embeddings", param="model")
        if not generate and not lm.embeds:
            raise ApiError(400, "invalid_model", f"model '{name}' generates text: call "
                           "POST /v1/completions or /v1/chat/completions", param="model")
        return lm

    def settle_after_answer(self, admission: Admission, started: float) -> BackgroundTask:
        """The response's background task: settle the request's reservation once Starlette
        has handed the answer to the socket (billed only when answered). Gate.complete
        buffers it (no database work), so it runs on the event loop."""

        async def settle() -> None:
            self._complete(admission, 200, _ms_since(started), None)

        return BackgroundTask(settle)

    def store_answer(self, admission: Admission, content: Any) -> None:
        """Gate thread: store an Idempotency-Key's answer before it is written. If that
        fails, the request fails: 500, not charged, the key freed for a retry."""
        assert self.gate is not None
        try:
            self.gate.store_response(admission, 200, content)
        except Exception:
            log.exception("storing the answer of usage event %s failed", admission.event_id)
            self.complete_quietly(admission, 500, 0.0, None)
            raise ApiError(500, "internal_error", "the answer could not be stored for the "
                           "Idempotency-Key; this request was not charged: retry it") from None

    def complete_quietly(self, admission: Admission, status: int, latency_ms: float,
                         response: Any, units: int | None = None) -> None:
        """Gate thread: `gate.complete`, a failure logged (see `_complete`)."""
        assert self.gate is not None
        try:
            self.gate.complete(admission, status=status, latency_ms=latency_ms,
                               response=response, units=units)
        except Exception:
            log.exception("gate.complete failed for usage event %s", admission.event_id)

    def log_failure(self, name: str, admission: Admission | None) -> None:
        event = admission.event_id if admission is not None else None
        log.exception("model '%s' failed while streaming (usage event %s)", name, event)

    def _complete(
        self, admission: Admission, status: int, latency_ms: float, response: Any
    ) -> None:
        """Record the outcome (`Gate.complete`: a plain settlement is only buffered, so
        this also runs on the event loop). A failure is logged, not answered: the client
        has (or is getting) its answer; the reservation stays unbilled and is voided when
        this process ends."""
        assert self.gate is not None
        try:
            self.gate.complete(admission, status=status, latency_ms=latency_ms,
                               response=response)
        except Exception:
            log.exception("gate.complete failed for usage event %s", admission.event_id)


def inference_threads(workers: int) -> int:
    """PyTorch threads per worker process: its share of the cores, less one for the event
    loop. More would oversubscribe the cores, and then a batch's forward pass spins at
    PyTorch's thread barrier waiting for a thread that has no core: measured on 2 cores,
    a batch of 8 rows took 13 ms of CPU with 2 threads and 1.6 ms with 1."""
    return max(1, (os.cpu_count() or 1) // max(1, workers) - 1)


def _set_torch_threads(n: int) -> int:
    """Set PyTorch's intra-op threads; returns the previous count."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    return previous


def _explain_records(
    served: ServedModel | ServedTextModel, explainer: Any, body: ExplainBody
) -> dict[str, Any]:
    """Worker thread: predictions as /predict answers them, then their attributions."""
    from foundry.evaluation.explain import explain_settings

    records = body.records.items
    steps = body.steps or explain_settings(served.predictor).steps
    predictions = served.predict_records(records)
    return explainer.explain_records(records, predictions, target=body.target, steps=steps)


def _serving_kind(ref: str, registry: Any) -> str:
    """`language` (OpenAI-compatible routes), `text` (a fine-tuned Hugging Face
    classifier / regressor on /predict), `recommend` (/recommend) or `tabular`."""
    from foundry.config.schema import RECOMMENDER_TYPES
    from foundry.lm.load import is_language_package, model_type, read_manifest

    manifest = read_manifest(ref, registry=registry)[1]
    if model_type(manifest) in RECOMMENDER_TYPES:
        return "recommend"
    if not is_language_package(manifest):
        return "tabular"
    task = (manifest.get("hf") or {}).get("task")
    return "text" if task in ("classification", "regression") else "language"


def _load_text_model(ref: str, registry: Any) -> ServedTextModel:
    from foundry.predictor import load

    return ServedTextModel.from_predictor(load(ref, registry=registry))


def create_app(
    serve_config: ServeConfig,
    models: list[str],
    *,
    gate: Gate | None = None,
    home: str | Path | None = None,
    admin_token: str | None = None,
    bare: bool = False,
) -> FastAPI:
    """The API serving `serve_config.models` + `models` (references like `adult:3`).

    gate: keys, plans, rate limits and metering (default: a `Gate` on the registry's
    database at `home`). home: registry root (default FOUNDRY_HOME). admin_token: enables
    /admin routes (the CLI passes FOUNDRY_ADMIN_TOKEN). Models load when the app starts
    (its lifespan), once per worker process.

    bare=True is for the benchmark only: the same parsing, validation, batching and
    responses, but no gate — no keys, no metering, no /v1/usage, no /admin — so the cost
    of authentication and metering can be measured against it. Never expose it.
    """
    refs = list(dict.fromkeys([*serve_config.model_refs(), *models]))
    owns_gate = not bare and gate is None
    if bare:
        gate = None
    elif gate is None:
        from foundry.serve.gate import Gate

        gate = Gate(serve_config.all_plans(), home=home)
    service = Service(serve_config, refs, gate=gate, home=home, admin_token=admin_token,
                      owns_gate=owns_gate)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await service.start()
            # What is loaded by now (torch, the models, their preprocessing) lives as long
            # as the worker: keep it out of the collector's full passes, which otherwise
            # walk all of it every few seconds under load (0.1-0.5 s stalls seen in p99).
            gc.collect()
            gc.freeze()
            yield
        finally:
            gc.unfreeze()
            await service.stop()

    from foundry.version import __version__

    app = FastAPI(
        title="foundry",
        version=__version__,
        description="Predictions from registered foundry models. Authenticate with "
        "`Authorization: Bearer fdy_...`; errors are `{\"error\": {message, type, param, "
        "code}}`.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN: ours serve their own assets
        redoc_url=None,
    )
    app.state.service = service
    from foundry.serve.api_docs import add_api_docs

    add_api_docs(app)
    install_error_handlers(app)
    _add_routes(app, service, bare=bare)
    from foundry.serve.routes_openai import openai_router

    app.include_router(openai_router(service))
    if not bare:
        from foundry.serve.routes_admin import admin_router

        app.include_router(admin_router(service))
        from foundry.serve.dashboard import dashboard_routers

        for router in dashboard_routers(service):  # /dashboard (see serve/dashboard.py)
            app.include_router(router)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


# ---------------------------------------------------------------------- routes


_HAND_PARSED_BODIES = (PredictRequest, ExplainRequest, RecommendRequest)
"""Bodies the model routes parse themselves; `_openapi` adds their schemas."""


def _model_post(
    app: FastAPI,
    verb: str,
    response_model: type[BaseModel],
    request_model: type[BaseModel],
    *,
    bare: bool,
) -> Callable[[T], T]:
    """The decorator of `POST /v1/models/{name}/<verb>`, a metered model route. Its
    handler parses the body by hand, so FastAPI cannot see it: the body's schema is
    named here (and added by `_openapi`). It needs a bearer key unless the app is bare."""
    body_ref = {"$ref": f"#/components/schemas/{request_model.__name__}"}
    return app.post(
        f"/v1/models/{{name}}/{verb}",
        response_model=response_model,
        tags=["models"],
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_ref}},
            },
            **({} if bare else {"security": _BEARER}),
        },
    )


def _add_routes(app: FastAPI, service: Service, *, bare: bool) -> None:
    @app.get("/healthz", response_model=Status, tags=["health"])
    async def healthz() -> Response:
        """The process is up (it may still be loading models: see /readyz)."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=Status, tags=["health"],
             responses={503: {"model": Status}})
    async def readyz() -> Response:
        """200 once every model is loaded; 503 while loading or stopping."""
        ready = service.ready
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "models": dict(service.state)},
            200 if ready else 503,
        )

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> Response:
        """Every served model: name, version, task and input features."""
        seen = {id(m): m for m in service.models.values()}
        language = {id(m): m for m in service.language_models.values()}
        names = [m.name for m in seen.values()] + [m.name for m in language.values()]
        return JSONResponse({
            "object": "list",  # OpenAI's shape, for OpenAI clients
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "foundry"}
                     for n in names],
            "models": [m.summary for m in seen.values()],
            "language_models": [m.summary() for m in language.values()],
        })

    @app.get("/v1/models/{name}", response_model=ModelDetail, tags=["models"],
             responses={404: {"model": ErrorResponse}})
    async def get_model(name: str) -> Response:
        """A model's input schema (types, known category values) and an example body."""
        if name in service.language_models:
            return JSONResponse(service.language_models[name].summary())
        return JSONResponse(service.model(name).detail)

    @_model_post(app, "predict", PredictResponse, PredictRequest, bare=bare)
    async def predict(name: str, request: Request) -> Response:
        """Predict one record or a list. Needs `Authorization: Bearer <key>`; an
        `Idempotency-Key` header makes retries safe (same answer, charged once)."""
        return await service.predict(service.model(name), request)

    @_model_post(app, "explain", ExplainResponse, ExplainRequest, bare=bare)
    async def explain(name: str, request: Request) -> Response:
        """Integrated-gradients attributions of each record's prediction (or of `target`)
        to every input. Needs `Authorization: Bearer <key>`; metered like predict, one
        unit per record; at most 100 records and 200 steps a request."""
        return await service.explain(name, request)

    @_model_post(app, "recommend", RecommendResponse, RecommendRequest, bare=bare)
    async def recommend(name: str, request: Request) -> Response:
        """A recommender's top-k items (best first, with scores) for a user id, or for
        someone known only by recent items; a user unknown to training gets the
        popularity list. Needs `Authorization: Bearer <key>`; metered like predict, one
        unit per query."""
        return await service.predict(service.model(name), request, answers="recommendations")

    if not bare:

        @app.get("/v1/usage", tags=["account"], openapi_extra={"security": _BEARER},
                 responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}})
        async def usage(request: Request) -> Response:
            """The calling key's usage this period and its remaining quota."""
            gate = service.gate
            assert gate is not None

            def work(authorization: str | None) -> dict:
                return gate.usage(gate.authenticate(authorization))

            return JSONResponse(await service.gate_call(work, request.headers.get("authorization")))

    exposure = service.config.metrics
    if exposure == "off":
        return

    @app.get("/metrics", tags=["health"], response_class=Response,
             openapi_extra={} if exposure == "public" else {"security": _BEARER})
    async def metrics(request: Request) -> Response:
        """Prometheus text format; counters are per worker process. Who may read it is
        `serve.metrics` (default: the admin token)."""
        if exposure == "admin":
            check_metrics_token(request.headers.get("authorization"), service.admin_token)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)


def check_metrics_token(authorization: str | None, token: str | None) -> None:
    """`serve.metrics: admin`: the admin token's check, with a 403 that names the
    setting when the server has no admin token."""
    from foundry.serve.routes_admin import check_admin_token

    if not token:
        raise ApiError(403, "admin_disabled",
                       "/metrics needs the admin token (serve.metrics: admin) and this server "
                       "has none: set FOUNDRY_ADMIN_TOKEN and send it as `Authorization: "
                       "Bearer <token>`, or set serve.metrics: public")
    check_admin_token(authorization, token)


def _values(payload: list | dict) -> list[Any]:
    return list(payload.values()) if isinstance(payload, dict) else []


def _ms_since(started: float) -> float:
    return (perf_counter() - started) * 1000.0


# ---------------------------------------------------------------------- OpenAPI


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document + the request bodies of `_model_post` routes (parsed by hand,
    so FastAPI cannot see them) and the bearer-key security scheme."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for request in _HAND_PARSED_BODIES:
        body = request.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[request.__name__] = body
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "An API key (fdy_...) or, for /admin, the admin token."}
    }
    app.openapi_schema = schema
    return schema
