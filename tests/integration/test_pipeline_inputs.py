"""The pipeline on each kind of input: image folders, text, explicit val/test files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tests.integration.support import adult_like, write_config

import foundry


def bars_folder(root, n_per_class: int = 30, size: int = 12) -> None:
    """Two classes a CNN separates easily: a bright vertical or horizontal bar."""
    rng = np.random.default_rng(0)
    for label in ("vertical", "horizontal"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            k = int(rng.integers(2, size - 2))
            if label == "vertical":
                img[:, k] = 255
            else:
                img[k, :] = 255
            Image.fromarray(img, mode="L").save(root / label / f"{i}.png")


@pytest.mark.slow
def test_init_on_an_image_folder_trains_a_cnn(cli, tmp_path):
    bars_folder(tmp_path / "bars")
    r = cli("init", "bars", "--target", "label", cwd=tmp_path)
    assert r.code == 0, r.err
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["model"]["type"] == "cnn"
    assert config["features"]["inputs"] == [{"name": "image", "type": "image"}]
    r = cli("train", "config.yaml", "train.epochs=15", "train.batch_size=8", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["metrics"]["accuracy"] >= 0.8
    # predicting an image folder: one row per file, labels from the two classes
    r = cli("predict", result["model"], "bars", "-o", "p.csv", cwd=tmp_path)
    assert r.code == 0, r.err
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == 60 and set(pred["label"]) <= {"vertical", "horizontal"}


@pytest.mark.slow
def test_text_classifier_with_bpe_and_transformer(tmp_path):
    rng = np.random.default_rng(1)
    good = ["great product", "works well", "love it", "excellent value"]
    bad = ["broke quickly", "waste of money", "very poor", "does not work"]
    rows = [
        {
            "text": f"{rng.choice(good if y else bad)} and {rng.choice(good if y else bad)}",
            "label": "pos" if y else "neg",
        }
        for y in rng.integers(0, 2, 300)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    write_config(
        tmp_path / "c.yaml",
        "t.csv",
        "label",
        features={
            "target": "label",
            "inputs": [
                {
                    "name": "text",
                    "type": "text",
                    "text": {"tokenizer": "bpe", "vocab_size": 200, "max_length": 16},
                }
            ],
        },
        model={
            "type": "text",
            "encoder": "transformer",
            "embedding_dim": 32,
            "num_heads": 4,
            "num_layers": 1,
        },
        train={"epochs": 10, "batch_size": 16, "optimizer": {"lr": 0.003}},
    )
    run = foundry.train(tmp_path / "c.yaml", progress=False, quiet=True)
    assert run.metrics["accuracy"] > 0.9
    pred = foundry.load(run.model_ref).predict(pd.DataFrame({"text": ["love it and works well"]}))
    assert pred["label"].iloc[0] == "pos"


@pytest.mark.slow
def test_explicit_val_and_test_files(tmp_path):
    df = adult_like(500)
    df.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[300:400].to_csv(tmp_path / "val.csv", index=False)
    df.iloc[400:].to_csv(tmp_path / "test.csv", index=False)
    write_config(tmp_path / "c.yaml", "train.csv", "income", name="explicit")
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    config["data"].update(val_path="val.csv", test_path="test.csv")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = foundry.train(tmp_path / "c.yaml", ["train.epochs=2"], progress=False, quiet=True)
    manifest = foundry.load(run.model_ref).manifest
    # every row of train.csv trains; val and test come from their files
    assert manifest["data"]["rows"] == {"train": 300, "val": 100, "test": 100}
    assert sum(map(sum, run.metrics["confusion_matrix"])) == 100


def test_explicit_test_file_with_other_columns_is_an_error(cli, tmp_path):
    df = adult_like(100)
    df.to_csv(tmp_path / "train.csv", index=False)
    df.drop(columns=["hours"]).to_csv(tmp_path / "test.csv", index=False)
    write_config(tmp_path / "c.yaml", "train.csv", "income")
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    config["data"]["test_path"] = "test.csv"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    r = cli("train", "c.yaml", cwd=tmp_path)
    assert r.code == 2 and "data.test_path" in r.err and "hours" in r.err
