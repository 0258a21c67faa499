"""What experiment tracking (`track:`) costs the training loop per epoch.

    python benchmarks/tracking.py                         # MLflow to a local SQLite store
    python benchmarks/tracking.py --uri http://127.0.0.1:5000 --epochs 200

Times the `on_epoch_end` hook the pipeline installs (`foundry.tracking.Tracker.hook`)
for a record shaped like the neural loop's (epoch, train_loss, val_loss, val_accuracy,
seconds), three ways, alternating, after a warm-up round:
  - none: the hook with no sink (what a run without `track:` would pay if it had one);
  - tensorboard: tensorboardX scalars written on the training thread;
  - mlflow: a queue put (the upload runs on the sink's background thread).
Medians of --repeats rounds of --epochs calls, in microseconds per epoch; then how long
the background thread takes to drain --epochs epochs into the store (what `finish`
waits for at the end of a run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from foundry.config.schema import MLflowTrackConfig
from foundry.tracking import Tracker
from foundry.tracking.mlflow_sink import MLflowSink
from foundry.tracking.tensorboard_sink import TensorBoardSink


def _record(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "val_loss": 1.1 / epoch,
        "val_accuracy": 0.5 + epoch * 1e-4,
        "seconds": 0.01 * epoch,
    }


def _round(tracker: Tracker, epochs: int) -> float:
    hook = tracker.hook(None)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        hook(_record(epoch))
    return (time.perf_counter() - started) / epochs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--uri", default=None, help="MLflow tracking URI [a temp SQLite]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = args.uri or f"sqlite:///{root / 'mlflow.db'}"
        trackers = {
            "none": Tracker([]),
            "tensorboard": Tracker([TensorBoardSink()]),
            "mlflow": Tracker(
                [
                    MLflowSink(
                        MLflowTrackConfig(uri=uri, artifacts=False), default_experiment="bench"
                    )
                ]
            ),
        }
        for name, tracker in trackers.items():
            tracker.begin(root / name, {"train.epochs": str(args.epochs)})
        times: dict[str, list[float]] = {name: [] for name in trackers}
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for name, tracker in trackers.items():
                cost = _round(tracker, args.epochs)
                if round_:
                    times[name].append(cost)
        sink = trackers["mlflow"].sinks[0].sink
        started = time.perf_counter()
        for tracker in trackers.values():
            tracker.finish({"accuracy": 0.9})
        drained = time.perf_counter() - started
        queued = (args.repeats + 1) * args.epochs
        print(f"per-epoch hook cost, median of {args.repeats} x {args.epochs} epochs:")
        for name, values in times.items():
            print(f"  {name:<12} {statistics.median(values):8.1f} us")
        print(
            f"mlflow background thread: {queued} epochs drained {drained:.2f} s after the "
            f"last one was queued ({uri.split(':')[0]} store, run {sink.run_id})"
        )


if __name__ == "__main__":
    main()
