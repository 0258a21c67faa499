"""Lazy image columns (`data.images.loading: lazy`): rows decoded per batch by DataLoader
workers equal the in-memory array's, and a seeded run trains to the same model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from foundry.config import LoadedConfig
from foundry.config.load import validate_config
from foundry.config.schema import FeatureConfig, TrainConfig
from foundry.console import Reporter
from foundry.data import Preprocessor, ResolvedFeatures, read_table
from foundry.data.lazy_images import (
    IN_MEMORY_BYTES,
    LazyImages,
    decode_workers,
    epoch_inputs,
    use_lazy,
)
from foundry.families.interface import Run
from foundry.families.neural import NeuralFamily
from foundry.training.runtime import torch_settings


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 noisy RGB images of two sizes (so resizing runs), a bright bar per class."""
    root = tmp_path_factory.mktemp("lazy") / "bars"
    rng = np.random.default_rng(0)
    for label in ("vertical", "horizontal"):
        (root / label).mkdir(parents=True)
        for i in range(18):
            size = 10 if i % 3 else 12
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            k = int(rng.integers(2, size - 2))
            if label == "vertical":
                img[:, k] = 255
            else:
                img[k, :] = 255
            Image.fromarray(img).save(root / label / f"{i}.png")
    return root


def test_lazy_rows_equal_the_in_memory_array(folder: Path) -> None:
    df = read_table(folder)
    feature = FeatureConfig(name="image", type="image", image={"height": 10, "width": 10})
    resolved = ResolvedFeatures(inputs=[feature], target="label", target_type="category")
    pre = Preprocessor.fit(df, resolved)
    eager = pre.transform(df)["image:image"]  # float32 [36, 3, 10, 10], standardised
    lazy = pre.transform(df, lazy_images=True, image_workers=1)["image:image"]
    assert isinstance(lazy, LazyImages) and lazy.shape == tuple(eager.shape)
    idx = torch.tensor([35, 0, 7, 7])
    assert torch.equal(lazy[idx], eager[idx])
    assert torch.equal(lazy[3:9], eager[3:9])

    # an epoch's batches, decoded ahead by a worker process, in the shuffled order
    perm = torch.randperm(len(df), generator=torch.Generator().manual_seed(1))
    data = {"image:image": lazy, "numeric": torch.arange(36.0)[:, None]}
    batches = list(epoch_inputs(data, ["image:image", "numeric"], perm, 8, 5))
    assert len(batches) == 5
    for b, inputs in enumerate(batches):
        rows = perm[b * 8 : (b + 1) * 8]
        assert torch.equal(inputs["image:image"], eager[rows])
        assert torch.equal(inputs["numeric"][:, 0], rows.float())


def test_auto_decodes_in_memory_below_the_limit(folder: Path) -> None:
    df = read_table(folder)
    resolved = ResolvedFeatures(
        inputs=[FeatureConfig(name="image", type="image")], target="label", target_type="category"
    )
    encoders = Preprocessor.fit(df, resolved).image_encoders
    per_row = 3 * 12 * 12 * 4  # the first image is 12x12 RGB, float32
    assert not use_lazy("auto", encoders, IN_MEMORY_BYTES // per_row)
    assert use_lazy("auto", encoders, IN_MEMORY_BYTES // per_row + 1)
    assert use_lazy("lazy", encoders, 1) and not use_lazy("memory", encoders, 10**9)
    assert not use_lazy("lazy", [], 10)  # no image column: nothing to decode lazily


def test_lazy_and_in_memory_runs_train_the_same_model(folder: Path, tmp_path: Path) -> None:
    """Same seed, augmentation on: the lazy run sees the very tensors the in-memory run
    does, so the trained models predict the same outputs bit for bit. (Same
    `train.num_threads` too: left unset, the lazy run leaves its worker a core, and sums
    split over fewer threads may round differently.)"""
    family = NeuralFamily()
    frame = pd.DataFrame({"image": sorted(str(p) for p in folder.rglob("*.png"))})
    results = {}
    for loading in ("memory", "lazy"):
        config = validate_config({
            "name": "bars",
            "data": {"path": str(folder), "images": {"loading": loading, "workers": 1}},
            "features": {
                "target": "label",
                "inputs": [{"name": "image", "image": {"augment": {"flip": True, "crop": 1}}}],
            },
            "model": {"type": "cnn", "conv": [{"filters": 4}], "layers": [8]},
            "train": {"epochs": 2, "batch_size": 8, "num_threads": 1},
        })  # fmt: skip
        run = Run(LoadedConfig(config, tmp_path), tmp_path / loading, Reporter(quiet=True))
        data = family.prepare(run)
        assert isinstance(data.train["image:image"], LazyImages) == (loading == "lazy")
        fitted = family.fit(data, config.train, run)
        results[loading] = (fitted.result.history, fitted.model.outputs(frame))
    (memory_history, memory_out), (lazy_history, lazy_out) = results.values()
    assert [r["train_loss"] for r in lazy_history] == [r["train_loss"] for r in memory_history]
    np.testing.assert_array_equal(lazy_out, memory_out)


def test_training_leaves_the_decode_workers_their_cores(folder: Path) -> None:
    """A training thread on a core a decode worker is busy on stalls every op; an
    explicit train.num_threads still wins, and the thread count is restored after."""
    df = read_table(folder)
    feature = FeatureConfig(name="image", type="image", image={"height": 10, "width": 10})
    resolved = ResolvedFeatures(inputs=[feature], target="label", target_type="category")
    pre = Preprocessor.fit(df, resolved)
    assert decode_workers(pre.transform(df)) == 0  # decoded in memory: no workers
    lazy = pre.transform(df, lazy_images=True, image_workers=1)
    assert decode_workers(lazy) == 1

    before = torch.get_num_threads()
    with torch_settings(TrainConfig(), workers=decode_workers(lazy)):
        assert torch.get_num_threads() == max(1, min(before, (os.cpu_count() or 1) - 1))
    assert torch.get_num_threads() == before
    with torch_settings(TrainConfig(num_threads=3), workers=1):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
