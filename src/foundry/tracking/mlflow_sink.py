"""A training run as an MLflow run: params, per-epoch metrics, final metrics, artifacts.

Uses `mlflow.MlflowClient` with an explicit tracking URI (never the `mlflow` module's
global active run, which a user's own code may be using). `begin` checks a server
answers (`/health`, 5 s) and creates the run; everything after goes through one
background thread, so an epoch costs a queue put, not a network round trip, and a server
that dies mid-run stalls nothing: the first failure is warned about once and the rest
is dropped. `finish` waits for the queue at most FINISH_TIMEOUT_S.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from foundry.config.schema import MLflowTrackConfig
from foundry.errors import ConfigError
from foundry.extras import require

log = logging.getLogger("foundry.tracking")

FINISH_TIMEOUT_S = 60.0
"""How long the end of a run waits for MLflow uploads still queued."""
_PROBE_TIMEOUT_S = 5.0
_PARAMS_PER_CALL = 100  # MLflow's log_batch limit on params
_PARAM_VALUE_CHARS = 6000  # MLflow's limit on one param value
_METRICS_PER_CALL = 1000  # MLflow's log_batch limit on metrics
_NOT_IN_A_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
"""MLflow accepts these characters in param and metric names (group names in fairness
metrics may hold others, e.g. `<=50K`)."""


_NOTHING = object()
"""Nothing taken from the queue (None is the stop)."""


def _key(name: str) -> str:
    return _NOT_IN_A_KEY.sub("_", name)[:250]


class MLflowSink:
    name = "MLflow"

    def __init__(self, settings: MLflowTrackConfig, *, default_experiment: str) -> None:
        MlflowClient = require("tracking", "mlflow", "track.mlflow").MlflowClient
        self.uri = settings.uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not self.uri:
            raise ConfigError(
                "track.mlflow.uri: set the tracking server's URI (e.g. "
                "http://127.0.0.1:5000) or the MLFLOW_TRACKING_URI variable"
            )
        self.settings = settings
        # MLflow writes "View run ... at: URL" to stdout when a run ends; foundry's stdout
        # is its answer (`foundry train --json`). Kept if the user set it either way.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.experiment = settings.experiment or default_experiment
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id: str | None = None
        # Work for the background thread: a list of Metric (merged with the lists queued
        # behind it into one log_batch), a call, or None (stop).
        self._queue: queue.Queue[list[Any] | Callable[[], Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failed = False

    # -- the Sink interface (called on the training thread) ---------------------------

    def begin(self, run_dir: Path, params: dict[str, str]) -> None:
        self._probe()
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(self.experiment)
        )
        run = self.client.create_run(
            experiment_id,
            run_name=self.settings.run_name or run_dir.name,
            tags={"foundry.run_dir": str(run_dir), "mlflow.source.type": "LOCAL"},
        )
        self.run_id = run.info.run_id
        self._thread = threading.Thread(target=self._work, name="foundry-mlflow", daemon=True)
        self._thread.start()
        self._submit(lambda: self._log_params(params))
        log.info("MLflow run %s in experiment %r at %s", self.run_id, self.experiment, self.uri)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        self._submit(_metrics(metrics, step))

    def finish(self, metrics: dict[str, float], files: list[Path], failed: bool) -> None:
        if self.run_id is None:
            return
        self._submit(_metrics(metrics, 0))
        if self.settings.artifacts:
            for path in files:
                self._submit(lambda p=path: self.client.log_artifact(self.run_id, str(p)))
        status = "FAILED" if failed else "FINISHED"
        self._submit(lambda: self.client.set_terminated(self.run_id, status))
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(FINISH_TIMEOUT_S)
            if self._thread.is_alive():
                self._warn(
                    f"uploads to {self.uri} not done after {FINISH_TIMEOUT_S:.0f} s; "
                    "the run's results are in its run directory"
                )

    # -- the background thread --------------------------------------------------------

    def _submit(self, work: list[Any] | Callable[[], Any]) -> None:
        if not self._failed:
            self._queue.put(work)

    def _work(self) -> None:
        """Run the queued work in order; consecutive metrics go in one log_batch (one
        request for all the epochs queued while the previous request was under way)."""
        work = self._queue.get()
        while work is not None:
            following: Any = _NOTHING
            if isinstance(work, list):
                batch = list(work)
                while len(batch) < _METRICS_PER_CALL:
                    try:
                        following = self._queue.get_nowait()
                    except queue.Empty:
                        following = _NOTHING
                        break
                    if not isinstance(following, list):
                        break  # a call or the stop: run it after this batch
                    batch.extend(following)
                    following = _NOTHING
                call: Callable[[], Any] = partial(self._log_metrics, batch)
            else:
                call = work
            if not self._failed:
                try:
                    call()
                except Exception as exc:
                    self._failed = True
                    self._warn(f"{exc}")
            work = self._queue.get() if following is _NOTHING else following

    def _warn(self, why: str) -> None:
        message = f"experiment tracking: MLflow failed ({why}); the run goes on without it"
        log.debug("%s", message)  # the user sees the warning: one line, not two
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _probe(self) -> None:
        """Fail fast (and once) when a tracking server does not answer, instead of the
        client's retries (minutes) on every call."""
        if not self.uri.startswith(("http://", "https://")):
            return
        import httpx

        try:
            httpx.get(f"{self.uri.rstrip('/')}/health", timeout=_PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"no MLflow server answers at {self.uri}: {exc}") from exc

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(_key(k), v[:_PARAM_VALUE_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_CALL])

    def _log_metrics(self, items: list[Any]) -> None:
        for i in range(0, len(items), _METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=items[i : i + _METRICS_PER_CALL])


def _metrics(metrics: dict[str, float], step: int) -> list[Any]:
    """MLflow Metric entities of one epoch (or the final metrics, step 0), stamped now."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    return [Metric(_key(k), v, stamp, step) for k, v in metrics.items()]
