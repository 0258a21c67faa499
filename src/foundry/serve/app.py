"""The prediction API: `create_app(serve_config, ["adult:3"])` → a FastAPI app.

    GET  /healthz                      200 {"status": "ok"} while the process runs
    GET  /readyz                       200 once every model is loaded, else 503
    GET  /v1/models                    served models: name, version, task, inputs
    GET  /v1/models/{name}             input schema + a ready-to-send example body
    POST /v1/models/{name}/predict     labels + probabilities / values (needs a key)
    POST /v1/models/{name}/explain     integrated-gradients attributions (needs a key)
    GET  /v1/usage                     the calling key's usage and remaining quota
    GET  /metrics                      Prometheus text (see foundry.serve.metrics)
    /admin/keys...                     key admin behind FOUNDRY_ADMIN_TOKEN (routes_admin)
    GET  /dashboard, /admin/dashboard/...  the admin dashboard (foundry.serve.dashboard)
    GET  /docs, /openapi.json          OpenAPI

A predict request goes: body size (413) → JSON (400) → records vs the model's inputs
(422) → `gate.authenticate` (401/403) → records per request (413) → admission
(429, or an idempotent replay) → the model's batcher → response → `gate.complete`.
Gate calls are synchronous database work and run on the gate's own thread, which admits
concurrent requests in groups (foundry.serve.gate_runner); the forward pass runs on the
model's own thread (foundry.serve.batching):
the event loop only parses, checks and answers. Every error, whatever raised it, is
answered as `{"error": {"message", "type", "param", "code"}}` (foundry.serve.errors).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from foundry.config.schema import ServeConfig
from foundry.errors import ConfigError, FoundryError
from foundry.serve.batching import Batcher
from foundry.serve.errors import ApiError
from foundry.serve.gate_api import Admission, AdmitRequest
from foundry.serve.gate_runner import GateRunner
from foundry.serve.lm_serving import ServedLanguageModel
from foundry.serve.metrics import CONTENT_TYPE, ServeMetrics
from foundry.serve.schemas import (
    ErrorResponse,
    ExplainBody,
    ExplainRequest,
    ExplainResponse,
    ModelDetail,
    ModelList,
    PredictRequest,
    PredictResponse,
    Status,
    explain_body,
)
from foundry.serve.served_model import ServedModel, ServedTextModel

if TYPE_CHECKING:
    from foundry.serve.gate import Gate

log = logging.getLogger("foundry.serve")
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 500)
}
_BEARER = [{"bearerAuth": []}]


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
        self.models: dict[str, ServedModel | ServedTextModel] = {}
        """By name and by `name:version` (both spellings route to the same model)."""
        self.batchers: dict[str, Batcher] = {}
        self.language_models: dict[str, ServedLanguageModel] = {}
        """Generation and embedding models, by name and `name:version`."""
        self.state: dict[str, str] = {ref: "loading" for ref in refs}
        self._gate_runner: GateRunner | None = None
        self._in_flight = 0
        """Predict requests under way in this process (a lone one is admitted at once)."""
        self._torch_threads: int | None = None
        """PyTorch's thread count before start(), restored by stop()."""
        self.explainers: dict[str, Any] = {}
        """`foundry.evaluation.explain.Explainer` by model ref, made on first use."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every model (once per worker process) and start its batcher."""
        from foundry.registry import Registry

        registry = Registry(self.home) if self.home is not None else Registry()
        self.state = {ref: "loading" for ref in self.refs}
        self._torch_threads = _set_torch_threads(inference_threads(self.config.workers))
        for ref in self.refs:
            try:
                kind = await run_in_threadpool(_serving_kind, ref, registry)
                language = kind == "language"
                if language:
                    lm = await run_in_threadpool(ServedLanguageModel.load, ref, registry)
                elif kind == "text":
                    served = await run_in_threadpool(_load_text_model, ref, registry)
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
                self.state[ref] = "loaded"
                continue
            if served.name in self.batchers or served.name in self.language_models:
                self.state[ref] = "failed: another version of this model is served"
                raise ConfigError(f"serve one version per model; '{served.name}' is requested "
                                  f"twice ({', '.join(self.refs)})")
            config = self.config.model_batching.get(served.name, self.config.batching)
            batcher = Batcher(served.name, served.predict_records, config,
                              on_batch=partial(self.metrics.batch, served.name))
            batcher.start()
            self.batchers[served.name] = batcher
            self.models[served.name] = self.models[served.ref] = served
            self.state[ref] = "loaded"

    async def stop(self) -> None:
        for ref in self.state:
            self.state[ref] = "stopped"
        batchers, self.batchers, self.models = self.batchers, {}, {}
        self.explainers = {}
        for batcher in batchers.values():
            await batcher.close()
        language, self.language_models = self.language_models, {}
        for lm in {id(m): m for m in language.values()}.values():
            await lm.close()
        if self._torch_threads is not None:
            _set_torch_threads(self._torch_threads)
            self._torch_threads = None
        runner, self._gate_runner = self._gate_runner, None
        if runner is not None:  # let pending usage writes finish
            await runner.close()
        if self.owns_gate and self.gate is not None:
            self.gate.close()

    @property
    def ready(self) -> bool:
        return bool(self.state) and all(s == "loaded" for s in self.state.values())

    def model(self, name: str) -> ServedModel | ServedTextModel:
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

    async def predict(self, served: ServedModel | ServedTextModel, request: Request) -> Response:
        started = perf_counter()
        request_id = uuid4().hex
        status = 500
        self._in_flight += 1
        try:
            with self.batchers[served.name].ticket() as ticket:
                body = await read_body(request, self.config.max_body_bytes)
                payload = parse_json(body)
                records = served.validator.records_of(payload)
                idempotency_key = request.headers.get("idempotency-key")
                # Hashed before validate() casts values in place.
                body_hash = _body_hash(served.name, payload) if idempotency_key else None
                served.validator.validate(records)
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
                            body_hash,
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
                        "predictions": predictions,
                        "usage": {"units": units},
                    }
                    response = JSONResponse(content, 200, headers)  # encodes the body now
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
                latency = _ms_since(started)
                if idempotency_key:
                    # Stored before answering, so a retry after this answer is a replay.
                    await self.gate_call(self._complete, admission, 200, latency, content)
                else:
                    # `admit` already committed the usage event (status 200); all that is
                    # left is its latency, which Gate.complete buffers without database
                    # work, so it runs here rather than costing a hop to the gate thread.
                    self._complete(admission, 200, latency, content)
            status = 200
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
        started = perf_counter()
        request_id = f"explain-{uuid4().hex}"
        self._in_flight += 1
        try:
            payload = parse_json(await read_body(request, self.config.max_body_bytes))
            body = explain_body(payload)
            idempotency_key = request.headers.get("idempotency-key")
            # Hashed under its own name, so a predict body never replays as an explanation.
            body_hash = (_body_hash(f"{served.name}/explain", payload)
                         if idempotency_key else None)
            served.validator.validate(body.records)
            # A model without gradients or an unknown class: refused before admission,
            # so never charged.
            explainer = await run_in_threadpool(self._explainer, served, body.target)
            units = len(body.records.items)
            admission = None
            if self.gate is not None:
                admission = await self.gate_runner.admit(
                    AdmitRequest(request.headers.get("authorization"), served.name, units,
                                 request_id, idempotency_key, body_hash),
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
                    await self.gate_call(self._complete, admission, 200, _ms_since(started),
                                         content)
                else:  # only a latency to buffer (see predict)
                    self._complete(admission, 200, _ms_since(started), None)
            return response
        except ApiError as exc:
            if exc.status == 429:
                self.metrics.rejection(exc.code)
            exc.headers = {**exc.headers, "x-request-id": request_id}
            raise
        finally:
            self._in_flight -= 1

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
        """Gate thread: record the outcome. A failure here is logged, not answered: the
        usage was committed by `admit` and the client has (or is getting) its answer."""
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
    classifier / regressor on /predict) or `tabular`."""
    from foundry.lm.load import is_language_package, read_manifest

    manifest = read_manifest(ref, registry=registry)[1]
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
    refs = list(dict.fromkeys([*serve_config.models, *models]))
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
    )
    app.state.service = service
    _install_error_handlers(app)
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

    @app.post(
        "/v1/models/{name}/predict",
        response_model=PredictResponse,
        tags=["models"],
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
                },
            },
            **({} if bare else {"security": _BEARER}),
        },
    )
    async def predict(name: str, request: Request) -> Response:
        """Predict one record or a list. Needs `Authorization: Bearer <key>`; an
        `Idempotency-Key` header makes retries safe (same answer, charged once)."""
        return await service.predict(service.model(name), request)

    @app.post(
        "/v1/models/{name}/explain",
        response_model=ExplainResponse,
        tags=["models"],
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}}
                },
            },
            **({} if bare else {"security": _BEARER}),
        },
    )
    async def explain(name: str, request: Request) -> Response:
        """Integrated-gradients attributions of each record's prediction (or of `target`)
        to every input. Needs `Authorization: Bearer <key>`; metered like predict, one
        unit per record; at most 100 records and 200 steps a request."""
        return await service.explain(name, request)

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

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format; counters are per worker process."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)


# ---------------------------------------------------------------------- request body


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes (413) by header and by actual count."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body has {'more than ' if size > limit else ''}{size} bytes; this server "
        f"accepts up to {limit} (serve.max_body_bytes)",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (send null for a missing number)")


def parse_json(body: bytes) -> Any:
    """The parsed body; ApiError 400 `invalid_json` for anything json.loads refuses,
    including NaN / Infinity, which are not JSON."""
    if not body:
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON record or list")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _body_hash(model: str, payload: Any) -> str:
    """sha256 of the model name and the canonical JSON of the body (key order ignored)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{model}\n{canonical}".encode()).hexdigest()


def _ms_since(started: float) -> float:
    return (perf_counter() - started) * 1000.0


# ---------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), exc.status, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    code = "missing_field" if first.get("type") == "missing" else "invalid_field"
    where = f"{param}: " if param else ""
    err = ApiError(422, code, f"{where}{first.get('msg', 'invalid value')}", param=param)
    return JSONResponse(err.body(), 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = ApiError(404, "not_found", f"no route {request.method} {request.url.path}; "
                       "see /docs")
    elif exc.status_code == 405:
        err = ApiError(405, "method_not_allowed",
                       f"{request.method} is not allowed on {request.url.path}")
    else:
        err = ApiError(exc.status_code, "invalid_request", str(exc.detail))
    return JSONResponse(err.body(), err.status, dict(exc.headers or {}) or None)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    err = ApiError(500, "internal_error", "internal error; it has been logged")
    return JSONResponse(err.body(), 500)


# ---------------------------------------------------------------------- OpenAPI


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document + the predict body (parsed by hand, so FastAPI cannot see it)
    and the bearer-key security scheme."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    body = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(body.pop("$defs", {}))
    schemas["PredictRequest"] = body
    explain = ExplainRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(explain.pop("$defs", {}))
    schemas["ExplainRequest"] = explain
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "An API key (fdy_...) or, for /admin, the admin token."}
    }
    app.openapi_schema = schema
    return schema
