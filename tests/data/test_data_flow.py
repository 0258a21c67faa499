"""The data stages chained as the pipeline chains them, on one small CSV with images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from foundry.config.schema import FeaturesConfig, SplitConfig
from foundry.data import (
    Preprocessor,
    fingerprint,
    infer_features,
    read_table,
    split_frame,
)


def test_csv_to_tensors(tmp_path: Path, png, rng: np.random.Generator) -> None:
    n = 40
    for i in range(n):
        png(tmp_path / "img" / f"{i}.png", int(i * 6), size=(4, 4), mode="L")
    pd.DataFrame(
        {
            "size": rng.normal(size=n),
            "shade": rng.choice(["light", "dark", "mid"], n),
            "note": [" ".join(rng.choice(["big", "small", "round", "flat"], 4)) for _ in range(n)],
            "picture": [f"img/{i}.png" for i in range(n)],
            "kind": np.where(np.arange(n) % 2 == 0, "odd", "even"),
        }
    ).to_csv(tmp_path / "data.csv", index=False)

    df = read_table(tmp_path / "data.csv")
    resolved = infer_features(df, FeaturesConfig(target="kind"))
    assert [f.type for f in resolved.inputs] == ["number", "category", "text", "image"]
    assert resolved.target_type == "binary"

    train, val, test = split_frame(df, SplitConfig(train=0.5, val=0.25, test=0.25), "kind")
    pre = Preprocessor.fit(train, resolved, base_dir=tmp_path)
    encoded = [pre.transform(pre.prepare(train)), pre.transform(val), pre.transform(test)]
    assert [len(e["target"]) for e in encoded] == [20, 10, 10]
    assert set(encoded[0]) == {"numeric", "categorical", "text:note", "image:picture", "target"}
    assert encoded[1]["image:picture"].shape == (10, 1, 4, 4)
    assert pre.task.task == "binary" and pre.task.classes == ["even", "odd"]

    restored = Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())), tmp_path)
    again = restored.transform(test)
    assert all(torch.equal(again[k], encoded[2][k]) for k in again)
    assert len(fingerprint(df, ["picture"], base_dir=tmp_path)) == 64
