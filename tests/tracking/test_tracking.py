"""`track:`: a training run reaches a real MLflow server and writes TensorBoard event
files; a tracking server that is down warns once and the run still registers."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import foundry
from foundry.serve.loadtest import free_port
from foundry.tracking import flatten


def _config(tmp_path: Path, model: dict, track: dict) -> dict:
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"x": rng.normal(0, 1, n), "color": rng.choice(["a", "b"], n)})
    df["y"] = np.where(df.x + (df.color == "a") > 0.5, "yes", "no")
    df.to_csv(tmp_path / "t.csv", index=False)
    return {
        "name": "tracked",
        "data": {"path": str(tmp_path / "t.csv")},
        "features": {"target": "y"},
        "model": model,
        "train": {"epochs": 3, "batch_size": 32, "early_stopping": {"patience": 10}},
        "output_dir": str(tmp_path / "runs"),
        "track": track,
    }


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under `folder`, read back from the
    TFRecord framing (length, crc, Event proto, crc) with tensorboardX's own protos."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_a_run_reaches_mlflow_and_tensorboard(tmp_path, mlflow_url):
    from mlflow import MlflowClient

    config = _config(
        tmp_path,
        {"type": "mlp", "layers": [8]},
        {"mlflow": {"uri": mlflow_url, "experiment": "tracking-test"}, "tensorboard": True},
    )
    result = foundry.train(config, progress=False, quiet=True)

    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name("tracking-test")
    [run] = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`foundry.run_dir` = '{result.run_dir}'"
    )
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    params = run.data.params
    assert params["train.epochs"] == "3" and params["model.layers"] == "[8]"
    assert params == flatten(json.loads((result.run_dir / "config.json").read_text()))
    assert run.data.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([r["val_loss"] for r in result.history])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"card.md", "card.json", "metrics.json", "config.json"} <= artifacts

    scalars = _scalars(result.run_dir / "tensorboard")
    assert [step for step, _ in scalars["val_loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["val_loss"]] == pytest.approx(
        [r["val_loss"] for r in result.history]
    )
    [(step, accuracy)] = scalars["final/accuracy"]
    assert step == 0 and accuracy == pytest.approx(result.metrics["accuracy"])


def test_gbm_rounds_are_logged(tmp_path):
    config = _config(tmp_path, {"type": "gbm", "n_estimators": 20}, {"tensorboard": True})
    result = foundry.train(config, progress=False, quiet=True)
    scalars = _scalars(result.run_dir / "tensorboard")
    assert [step for step, _ in scalars["train_loss"]] == list(range(1, 21))


def test_a_tracking_server_that_is_down_warns_once(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    config = _config(tmp_path, {"type": "mlp", "layers": [8]}, {"mlflow": {"uri": down}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = foundry.train(config, progress=False, quiet=True)
    assert result.model_ref == "tracked:1"  # trained and registered all the same
    messages = [str(w.message) for w in caught if "experiment tracking" in str(w.message)]
    assert len(messages) == 1 and "MLflow failed" in messages[0] and down in messages[0]
