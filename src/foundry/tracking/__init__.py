"""Experiment tracking: what a training run also sends to MLflow and TensorBoard.

    tracker = start_tracking(cfg.track, name=cfg.name)   # None when `track:` is empty
    hook = tracker.hook(on_epoch_end)                     # each epoch's record, then theirs
    tracker.begin(run_dir, params=flatten(dump_config(cfg)))
    tracker.finish(metrics, files=[card.md, metrics.json, ...])

The pipeline calls these (`foundry.pipeline.train`); a family knows nothing of them: the
per-epoch records are the ones `on_epoch_end` already gets (gbm: every few rounds).

A tracker must never cost the run: each sink (`MLflowSink`, `TensorBoardSink`) is
called inside `_Guarded`, which turns its first failure into one warning and drops the
sink for the rest of the run. MLflow calls go over the network, so they run on one
background thread (`mlflow_sink`); an epoch only puts its record on a queue.
"""

from __future__ import annotations

import json
import logging
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from foundry.config.schema import TrackConfig

log = logging.getLogger("foundry.tracking")

__all__ = ["Tracker", "flatten", "numeric", "start_tracking"]


class Sink(Protocol):
    """One tracker (MLflow, TensorBoard)."""

    name: str

    def begin(self, run_dir: Path, params: dict[str, str]) -> None: ...
    def epoch(self, step: int, metrics: dict[str, float]) -> None: ...
    def finish(self, metrics: dict[str, float], files: list[Path], failed: bool) -> None: ...


class Tracker:
    """The sinks of one run, each guarded (module docstring)."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = [_Guarded(s) for s in sinks]
        # A run that raised never reaches `finish`: its trackers are closed as failed when
        # the Tracker is dropped or the interpreter exits (an MLflow run is not left
        # RUNNING forever).
        self._abandon = weakref.finalize(self, _close_failed, self.sinks)

    def hook(
        self, then: Callable[[dict[str, Any]], None] | None
    ) -> Callable[[dict[str, Any]], None]:
        """An `on_epoch_end` that reports the record to every sink, then calls `then`."""

        def on_epoch_end(record: dict[str, Any]) -> None:
            step = int(record.get("epoch", 0))
            metrics = {k: v for k, v in numeric(record).items() if k != "epoch"}
            for sink in self.sinks:
                sink.call("epoch", step, metrics)
            if then is not None:
                then(record)

        return on_epoch_end

    def begin(self, run_dir: Path, params: dict[str, str]) -> None:
        for sink in self.sinks:
            sink.call("begin", run_dir, params)

    def finish(
        self, metrics: dict[str, Any], files: Iterable[Path] = (), *, failed: bool = False
    ) -> None:
        """The final metrics and files (those that exist), then close every sink."""
        self._abandon.detach()
        present = [Path(f) for f in files if Path(f).is_file()]
        for sink in self.sinks:
            sink.call("finish", numeric(metrics), present, failed)


def start_tracking(track: TrackConfig, *, name: str) -> Tracker | None:
    """The tracker the `track:` section asks for, or None. Importing a tracker's client
    is the one failure that stops the run: the user asked for it and it is not installed."""
    sinks: list[Sink] = []
    if track.mlflow is not None:
        from foundry.tracking.mlflow_sink import MLflowSink

        sinks.append(MLflowSink(track.mlflow, default_experiment=name))
    if track.tensorboard:
        from foundry.tracking.tensorboard_sink import TensorBoardSink

        sinks.append(TensorBoardSink())
    return Tracker(sinks) if sinks else None


def _close_failed(sinks: list[_Guarded]) -> None:
    for sink in sinks:
        sink.call("finish", {}, [], True)


class _Guarded:
    """A sink whose first exception is warned about once and ends its use."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.dead = False

    def call(self, method: str, *args: Any) -> None:
        if self.dead:
            return
        try:
            getattr(self.sink, method)(*args)
        except Exception as exc:
            self.dead = True
            message = (
                f"experiment tracking: {self.sink.name} failed ({exc}); the run goes on without it"
            )
            # One line for the user (the CLI prints warnings as `warning: ...`); the
            # traceback only in the debug log.
            log.debug("%s", message, exc_info=True)
            warnings.warn(message, RuntimeWarning, stacklevel=2)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as {"train.optimizer.lr": "0.001", ...}: lists and None as JSON,
    what trackers take as params and `foundry runs compare` diffs."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        elif isinstance(value, str):
            flat[path] = value
        else:
            flat[path] = json.dumps(value)
    return flat


def numeric(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, keys joined with '.': what a
    tracker can chart (confusion matrices and per-class lists are left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(numeric(value, f"{path}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if number == number and abs(number) != float("inf"):
                flat[path] = number
    return flat
