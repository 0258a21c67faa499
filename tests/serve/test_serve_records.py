"""`ServedModel.predict_records` (records encoded without a DataFrame) answers exactly
what `Predictor.predict` answers on the same rows: the same labels and the same float64
probabilities / values, compared with ==, for tabular, text and image models."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.serve.serve_app_support import shared_toy

import foundry
from foundry.predictor import load
from foundry.registry import Registry
from foundry.serve.served_model import ServedModel


def served_and_reference(
    ref: str, home: Path, rows: list[dict[str, Any]], frame: pd.DataFrame
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The server's answer to JSON `rows` and `Predictor.predict` on `frame`."""
    served = ServedModel.load(ref, registry=Registry(home))
    records = served.validator.records_of(json.loads(json.dumps(rows)))
    served.validator.validate(records)
    predictions = served.predict_records(records.items)
    return predictions, load(ref, registry=Registry(home)).predict(frame)


def assert_identical(predictions: list[dict[str, Any]], expected: pd.DataFrame,
                     target: str) -> None:
    assert len(predictions) == len(expected)
    for pred, (_, row) in zip(predictions, expected.iterrows(), strict=True):
        if "value" in pred:
            assert pred["value"] == float(row[target])
            continue
        assert pred["label"] == row[target]
        assert pred["probabilities"] == {
            cls: float(row[f"probability_{cls}"]) for cls in pred["probabilities"]
        }


@pytest.mark.parametrize("regression", [False, True], ids=["classifier", "regressor"])
def test_tabular_predictions_are_identical_to_predict(tmp_path_factory, regression):
    toy = shared_toy(tmp_path_factory, regression=regression)
    rows = toy.records()
    rows[0] = {**rows[0], "age": None, "color": "purple", "member": None}  # missing, unseen
    rows[1] = {**rows[1], "color": 3}  # a number as a category: the key "3"
    frame = pd.DataFrame.from_records(rows, columns=list(toy.rows))
    predictions, expected = served_and_reference(toy.ref, toy.home, rows, frame)
    assert_identical(predictions, expected, "spend" if regression else "tier")


def _train(tmp_path: Path, data: Path, target: str, **config: Any) -> tuple[str, Path]:
    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.train(
            {"name": "m", "data": {"path": str(data)}, "features": {"target": target},
             "train": {"epochs": 1, "batch_size": 16}, "output_dir": str(tmp_path / "runs"),
             **config},
            progress=False, quiet=True,
        )
    return result.model_ref, home


def test_text_and_tabular_predictions_are_identical_to_predict(tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "meh", "Ok", "not"]
    n = 80
    df = pd.DataFrame(
        {
            "review": [" ".join(rng.choice(words, 6)) for _ in range(n)],
            "stars": rng.integers(1, 6, n).astype(float),
            "shop": rng.choice(["north", "south"], n),
            "label": rng.choice(["pos", "neg"], n),
        }
    )
    df.to_csv(tmp_path / "reviews.csv", index=False)
    features = {"target": "label", "inputs": [
        {"name": "review", "type": "text", "text": {"max_length": 8}},
        {"name": "stars", "type": "number"}, {"name": "shop", "type": "category"}]}
    ref, home = _train(tmp_path, tmp_path / "reviews.csv", "label", features=features,
                       model={"type": "text", "embedding_dim": 16})
    rows = [
        {"review": "good good not bad", "stars": 4, "shop": "north"},
        {"review": "", "stars": None, "shop": None},
        {"review": None, "stars": 2.5, "shop": "east"},
        {"review": "Unheard-of WORDS, and more words than max_length allows", "stars": 1e6,
         "shop": "south"},
    ]
    frame = pd.DataFrame(rows)
    predictions, expected = served_and_reference(ref, home, rows, frame)
    assert_identical(predictions, expected, "label")


def test_image_predictions_are_identical_to_predict(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for label in ("dark", "bright"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(8):
            low = 0 if label == "dark" else 150
            pixels = rng.integers(low, low + 100, (10, 12, 3), dtype=np.uint8)
            path = tmp_path / "imgs" / label / f"{i}.png"
            Image.fromarray(pixels, mode="RGB").save(path)
            paths.append(path)
    ref, home = _train(tmp_path, tmp_path / "imgs", "label", model={"type": "cnn"})
    rows = [{"image": base64.b64encode(p.read_bytes()).decode()} for p in paths[::3]]
    frame = pd.DataFrame({"image": [str(p) for p in paths[::3]]})
    predictions, expected = served_and_reference(ref, home, rows, frame)
    assert_identical(predictions, expected, "label")
