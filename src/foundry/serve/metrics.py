"""Prometheus metrics of one app: requests, latency, batch sizes, quota rejections.

Every app gets its own `CollectorRegistry`, so two apps in one process (tests, the bare
benchmark variant) never share counters and nothing registers in the global registry.

Series (`GET /metrics`, Prometheus text format):

    foundry_requests_total{model, status}          predict requests answered, by HTTP status
    foundry_request_latency_seconds{model}         histogram: body read → response built
    foundry_batch_size{model}                      histogram: records per forward pass
    foundry_quota_rejections_total{reason}         429s: rate_limit_exceeded, quota_exceeded

Language models on the continuous-batching engine (foundry.lm.continuous):

    foundry_lm_queue_wait_seconds{model}           histogram: submitted → took a slot
    foundry_lm_running{model}                      gauge: rows in the running batch now
    foundry_lm_queued{model}                       gauge: requests waiting for a slot now
    foundry_lm_batch_rows{model}                   histogram: rows per decode step
    foundry_lm_tokens_total{model}                 tokens generated (rate() = tokens/s)
    foundry_lm_tokens_per_second{model}            gauge: tokens generated over the last
                                                   5 seconds, per second
    foundry_lm_rejections_total{model}             503s: the queue was full

Who may read them is `serve.metrics` (app.py): `admin` (the default: the admin token, as
a bearer; Prometheus sends one from its scrape config), `public` or `off`. They name
every model and its traffic, which the API port should not tell any caller.

With `--workers N` (N > 1) the workers share their series through prometheus_client's
multiprocess mode: `foundry serve` (server.run_server) sets PROMETHEUS_MULTIPROC_DIR to a
fresh directory for that server before the workers start (removed when it stops), each
worker writes its values to its own memory-mapped files there, and whichever worker
answers `/metrics` reads them all. Counters and histograms are summed over workers;
the gauges (`foundry_lm_running`, `_queued`, `_tokens_per_second`) are summed over the
live workers (`livesum`): a worker that stops is dropped from them. A gauge read from a
function is written to its file by each worker every GAUGE_REFRESH_S (and by the
answering worker at the scrape), so another worker's gauges are up to that old.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Seconds: a small model answers in about a millisecond; a big batch or a slow gate in tens.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Records per forward pass: powers of two up to the largest plan's max_records_per_request.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000)

# Seconds a language-model request waits for a slot: none when one is free, a few
# steps (tens of ms) under load, seconds when the queue is long.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TOKEN_RATE_WINDOW_S = 5.0
"""foundry_lm_tokens_per_second averages over this many seconds."""

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set (by server.run_server, for --workers > 1) before the workers import
prometheus_client, which picks its file-backed values from it at import."""
GAUGE_REFRESH_S = 1.0
"""Multiprocess mode: seconds between writes of the function-read gauges to the files."""


class ServeMetrics:
    """The app's counters and histograms; label children are cached (no lookup per call)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        """Set: this worker shares its series with the server's others (module docstring)."""
        self._polled: list[tuple[Gauge, Callable[[], float]]] = []
        self._refresher: threading.Thread | None = None
        self._stopping = threading.Event()
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
        self._lm_wait = Histogram(
            "foundry_lm_queue_wait_seconds",
            "Seconds a language-model request waited for a slot in the running batch.",
            ["model"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self._lm_running = Gauge(
            "foundry_lm_running",
            "Rows in the running batch.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._lm_queued = Gauge(
            "foundry_lm_queued",
            "Requests waiting for a slot.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._lm_rows = Histogram(
            "foundry_lm_batch_rows",
            "Rows in one decode step of a language model.",
            ["model"],
            buckets=BATCH_BUCKETS[:8],
            registry=self.registry,
        )
        self._lm_tokens = Counter(
            "foundry_lm_tokens_total", "Tokens generated.", ["model"], registry=self.registry
        )
        self._lm_rate = Gauge(
            "foundry_lm_tokens_per_second",
            f"Tokens generated per second over the last {TOKEN_RATE_WINDOW_S:g} seconds.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._lm_rejections = Counter(
            "foundry_lm_rejections_total",
            "Language-model requests refused with 503 because the queue was full.",
            ["model"],
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

    def language_model(
        self, model: str, running: Callable[[], int], queued: Callable[[], int]
    ) -> LMMetrics:
        """The series of one served language model; `running` and `queued` are read at
        each scrape."""
        self._read_from(self._lm_running.labels(model), running)
        self._read_from(self._lm_queued.labels(model), queued)
        lm = LMMetrics(
            self._lm_wait.labels(model),
            self._lm_rows.labels(model),
            self._lm_tokens.labels(model),
            self._lm_rejections.labels(model),
        )
        self._read_from(self._lm_rate.labels(model), lm.tokens_per_second)
        return lm

    def _read_from(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """`gauge` shows `read()`: at each scrape in one process; in multiprocess mode
        written to its file every GAUGE_REFRESH_S by a thread of this worker (the files
        are all another worker can read)."""
        if self.multiprocess_dir is None:
            gauge.set_function(read)
            return
        gauge.set(read())
        self._polled.append((gauge, read))
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_every, name="foundry-metrics", daemon=True
            )
            self._refresher.start()

    def _refresh(self) -> None:
        for gauge, read in self._polled:
            gauge.set(read())

    def _refresh_every(self) -> None:
        while not self._stopping.wait(GAUGE_REFRESH_S):
            self._refresh()

    def close(self) -> None:
        """Stop the refresh thread; in multiprocess mode, drop this worker from the
        `livesum` gauges (its counters and histograms stay counted)."""
        self._stopping.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series (of every worker, in
        multiprocess mode)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self._refresh()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


class LMMetrics:
    """One language model's series, fed from its engine thread (`on_step`, `on_admit`)
    and its routes (`rejected`)."""

    def __init__(
        self, wait: Histogram, rows: Histogram, tokens: Counter, rejections: Counter
    ) -> None:
        self._wait, self._rows, self._tokens, self._rejections = wait, rows, tokens, rejections
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def on_admit(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def on_step(self, rows: int, tokens: int) -> None:
        if rows:
            self._rows.observe(rows)
        if tokens:
            self._tokens.inc(tokens)
            now = time.monotonic()
            with self._lock:
                self._recent.append((now, tokens))
                self._drop_old(now)

    def rejected(self) -> None:
        self._rejections.inc()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._drop_old(now)
            return sum(n for _, n in self._recent) / TOKEN_RATE_WINDOW_S

    def _drop_old(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - TOKEN_RATE_WINDOW_S:
            self._recent.popleft()
