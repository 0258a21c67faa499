from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from foundry.config.schema import FeatureConfig
from foundry.data import Preprocessor, ResolvedFeatures, read_table
from foundry.errors import DataError


def fit(df: pd.DataFrame, base_dir: Path | None = None, **image) -> Preprocessor:
    f = FeatureConfig(name="image", type="image", image=image)
    r = ResolvedFeatures(inputs=[f], target="label", target_type="category")
    return Preprocessor.fit(df, r, base_dir=base_dir)


def test_unit_normalisation_shapes_and_labels(image_folder: Path) -> None:
    df = read_table(image_folder)
    pre = fit(df, normalization="unit")
    enc = pre.transform(df)
    x = enc["image:image"]
    assert x.dtype == torch.float32 and x.shape == (6, 3, 4, 6)  # size from first image
    np.testing.assert_allclose(x[1, 0].numpy(), 10 / 255, rtol=1e-6)  # cat c1: red = 10
    np.testing.assert_allclose(x[5, :, 0, 0].numpy(), [200 / 255, 200 / 255, 20 / 255])
    assert enc["target"].tolist() == [0, 0, 0, 1, 1, 1]
    img = pre.schema.image[0]
    assert (img.channels, img.height, img.width) == (3, 4, 6)
    assert pre.task.classes == ["cat", "dog"]


def test_standard_normalisation_resize_and_grayscale(image_folder: Path) -> None:
    df = read_table(image_folder)
    pre = fit(df, height=2, width=3, channels=1)
    x = pre.transform(df)["image:image"]
    assert x.shape == (6, 1, 2, 3)
    # training statistics: each channel of the training pixels has mean 0 and std 1
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    again = Preprocessor.fit(df, pre.resolved)  # same config → same stats
    assert again.state_dict() == pre.state_dict()
    restored = Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))
    assert torch.equal(restored.transform(df)["image:image"], x)


def test_relative_paths_and_thread_pool(tmp_path: Path, png) -> None:
    # 20 images: enough to go through the thread pool
    names = [f"img/{i}.png" for i in range(20)]
    for i, name in enumerate(names):
        png(tmp_path / name, i * 10, size=(5, 5), mode="L")
    df = pd.DataFrame({"image": names, "label": ["a", "b"] * 10})
    pre = fit(df, base_dir=tmp_path, normalization="unit")
    x = pre.transform(df)["image:image"]
    assert x.shape == (20, 1, 5, 5)
    np.testing.assert_allclose(x[:, 0, 2, 2].numpy(), np.arange(20) * 10 / 255, rtol=1e-6)


def test_corrupt_and_missing_images(tmp_path: Path, image_folder: Path) -> None:
    df = read_table(image_folder)
    pre = fit(df)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot decode image .*broken.png"):
        pre.transform(pd.DataFrame({"image": [str(bad)], "label": ["cat"]}))
    with pytest.raises(DataError, match="cannot decode image .*gone.png"):
        pre.transform(pd.DataFrame({"image": [str(tmp_path / "gone.png")]}), with_target=False)
    with pytest.raises(DataError, match="image column 'image' has 1 missing path"):
        pre.transform(pd.DataFrame({"image": [None]}), with_target=False)
