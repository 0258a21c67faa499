"""Prometheus metrics of one app: requests, latency, batch sizes, quota rejections.

Every app gets its own `CollectorRegistry`, so two apps in one process (tests, the bare
benchmark variant) never share counters and nothing registers in the global registry.

Series (`GET /metrics`, Prometheus text format):

    foundry_requests_total{model, status}          predict requests answered, by HTTP status
    foundry_request_latency_seconds{model}         histogram: body read → response built
    foundry_batch_size{model}                      histogram: records per forward pass
    foundry_quota_rejections_total{reason}         429s: rate_limit_exceeded, quota_exceeded

Who may read them is `serve.metrics` (app.py): `admin` (the default: the admin token, as
a bearer; Prometheus sends one from its scrape config), `public` or `off`. They name
every model and its traffic, which the API port should not tell any caller.

With `--workers N` each worker process has its own registry, and `/metrics` shows the
counters of whichever worker answered the scrape: sum over workers by scraping each one
(e.g. one port per worker behind the balancer), or run one worker per container. We do not
use prometheus_client's multiprocess mode: it needs a shared directory and a cleanup
protocol that a plain `foundry serve` should not impose.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

# Seconds: a small model answers in about a millisecond; a big batch or a slow gate in tens.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Records per forward pass: powers of two up to the largest plan's max_records_per_request.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The app's counters and histograms; label children are cached (no lookup per call)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "foundry_requests_total",
            "Predict requests answered, by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "foundry_request_latency_seconds",
            "Time from the start of a predict request to its response, in seconds.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "foundry_batch_size",
            "Records in one forward pass of a model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._rejections = Counter(
            "foundry_quota_rejections_total",
            "Requests refused with 429, by reason (rate_limit_exceeded, quota_exceeded).",
            ["reason"],
            registry=self.registry,
        )
        # label values → child: `.labels()` takes a lock and hashes; this is a dict hit.
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._batch_children: dict[str, Histogram] = {}

    def request(self, model: str, status: int, seconds: float) -> None:
        """One predict request answered with `status` after `seconds`."""
        counter = self._request_children.get((model, status))
        if counter is None:
            counter = self._requests.labels(model, str(status))
            self._request_children[(model, status)] = counter
        counter.inc()
        hist = self._latency_children.get(model)
        if hist is None:
            hist = self._latency_children[model] = self._latency.labels(model)
        hist.observe(seconds)

    def batch(self, model: str, size: int) -> None:
        """One forward pass of `model` over `size` records."""
        hist = self._batch_children.get(model)
        if hist is None:
            hist = self._batch_children[model] = self._batch.labels(model)
        hist.observe(size)

    def rejection(self, reason: str) -> None:
        """One 429: `reason` is the error code (rate_limit_exceeded, quota_exceeded)."""
        self._rejections.labels(reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
