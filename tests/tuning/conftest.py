"""A tiny tabular task (iris, 150 rows) and configs whose trials train in about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def iris_csv(tmp_path_factory) -> Path:
    from sklearn.datasets import load_iris

    df = load_iris(as_frame=True).frame
    df["target"] = df["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def write_config(tmp_path, iris_csv):
    """`write_config(tune={...}, **sections) -> path`: an iris config in tmp_path, data
    path relative to it (as users write them), evaluation extras off for speed."""

    def write(tune: dict[str, Any] | None = None, **sections: Any) -> Path:
        (tmp_path / "iris.csv").write_bytes(iris_csv.read_bytes())
        raw: dict[str, Any] = {
            "name": "iris",
            "data": {"path": "iris.csv", "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
            "features": {"target": "target"},
            "model": {"type": "mlp", "layers": [16]},
            "train": {"epochs": 2, "batch_size": 32, "optimizer": {"lr": 0.01}},
            "evaluate": {"explain": {"permutation_importance": False}},
            "output_dir": "runs",
        }
        for key, value in sections.items():
            merge = isinstance(value, dict) and key != "model"  # a model is replaced whole
            raw[key] = {**raw.get(key, {}), **value} if merge else value
        if tune is not None:
            raw["tune"] = tune
        path = tmp_path / "iris.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write
