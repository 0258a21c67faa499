"""Structured pruning (MLP, CNN) and magnitude pruning on real foundry models; no mocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import foundry
from foundry.compression.prune import kept_width, magnitude_prune, prune_model
from foundry.compression.quantize import quantize_linears
from foundry.config.schema import (
    CNNConfig,
    ConvBlock,
    FoundryConfig,
    MLPConfig,
    TextModelConfig,
    TrainConfig,
)
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models import build_model
from foundry.training import fit

TABULAR = InputSchema(numeric=["a", "b", "c"], categorical=["d"], cardinalities=[5])
IMAGE = InputSchema(image=[ImageInput("img", 3, 8, 8)], numeric=["a"])


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tabular_batch(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "numeric": torch.randn(n, 3, generator=g),
        "categorical": torch.randint(0, 5, (n, 1), generator=g),
    }


def image_batch(n: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {"image:img": torch.randn(n, 3, 8, 8, generator=g), "numeric": torch.randn(n, 1)}


def randomise_batch_norm(model: nn.Module) -> None:
    """Give BatchNorm layers trained-looking statistics and affine weights."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@torch.no_grad()
def kill_units(layers: nn.Sequential, layer_type: type[nn.Module], amount: float) -> None:
    """Make the last units of every `layer_type` layer output exactly zero after the
    activation (relu): zero incoming weights and bias, or BatchNorm scale and shift."""
    modules = list(layers)
    for i, m in enumerate(modules):
        if not isinstance(m, layer_type):
            continue
        dead = slice(kept_width(m.weight.shape[0], amount), None)
        m.weight[dead] = 0.0
        if m.bias is not None:
            m.bias[dead] = 0.0
        if i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm1d | nn.BatchNorm2d):
            modules[i + 1].weight[dead] = 0.0
            modules[i + 1].bias[dead] = 0.0


# ------------------------------------------------------------------------------ MLP


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_loses_the_expected_share_of_parameters(batch_norm):
    config = MLPConfig(layers=[64, 32], batch_norm=batch_norm)
    model = build_model(config, TABULAR, 3)
    new_config, pruned = prune_model(model, config, 0.5, schema=TABULAR, n_outputs=3)
    assert new_config.layers == [32, 16]
    assert new_config.model_dump() == config.model_copy(update={"layers": [32, 16]}).model_dump()
    assert type(pruned) is type(model)
    # the pruned weights load into a model built from the new config: a normal package
    build_model(new_config, TABULAR, 3).load_state_dict(pruned.state_dict())
    # input → 64 → 32 → 3 with 7 inputs: 64*7 + 32*64 + 3*32 weights; halving both hidden
    # widths quarters the hidden-to-hidden block and halves the rest.
    ratio = n_params(pruned) / n_params(model)
    assert 0.25 < ratio < 0.4
    assert pruned(tabular_batch()).shape == (32, 3)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_outputs_unchanged_when_pruned_units_are_dead(batch_norm):
    config = MLPConfig(layers=[20, 10, 6], batch_norm=batch_norm, dropout=0.3)
    model = build_model(config, TABULAR, 3)
    randomise_batch_norm(model)
    kill_units(model.body, nn.Linear, 0.4)
    model.eval()  # dropout off, BatchNorm on its running statistics
    new_config, pruned = prune_model(model, config, 0.4, schema=TABULAR, n_outputs=3)
    assert new_config.layers == [12, 6, 4]
    assert not pruned.training
    # the survivors are exactly the live units, in order
    assert torch.equal(pruned.body[0].weight, model.body[0].weight[:12])
    assert torch.equal(pruned.inputs.embeddings[0].weight, model.inputs.embeddings[0].weight)
    x = tabular_batch()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-6)


def test_least_important_units_go_first():
    config = MLPConfig(layers=[4], dropout=0.0)
    model = build_model(config, TABULAR, 2)
    with torch.no_grad():
        model.body[0].weight.copy_(torch.tensor([[3.0] * 7, [0.1] * 7, [2.0] * 7, [0.2] * 7]))
    _, pruned = prune_model(model, config, 0.5, schema=TABULAR, n_outputs=2)
    assert torch.equal(pruned.body[0].weight, model.body[0].weight[[0, 2]])
    assert torch.equal(pruned.head.weight, model.head.weight[:, [0, 2]])
    assert torch.equal(pruned.body[0].bias, model.body[0].bias[[0, 2]])


def test_every_layer_keeps_at_least_one_unit():
    config = MLPConfig(layers=[3, 1])
    model = build_model(config, TABULAR, 2)
    new_config, pruned = prune_model(model, config, 0.9, schema=TABULAR, n_outputs=2)
    assert new_config.layers == [1, 1]
    assert kept_width(10, 0.0) == 10 and kept_width(10, 0.25) == 8 and kept_width(2, 0.99) == 1
    assert pruned(tabular_batch()).shape == (32, 2)


def test_pruning_does_not_move_the_callers_random_stream():
    config = MLPConfig(layers=[16])
    model = build_model(config, TABULAR, 2)
    torch.manual_seed(7)
    prune_model(model, config, 0.5, schema=TABULAR, n_outputs=2)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


# ------------------------------------------------------------------------------ CNN


@pytest.mark.parametrize("global_pool", [True, False])
def test_cnn_outputs_unchanged_when_pruned_filters_are_dead(global_pool):
    # conv without bias (batch_norm: true) then a dense layer; a number joins at the head
    config = CNNConfig(
        conv=[ConvBlock(filters=8), ConvBlock(filters=6, pool="avg")],
        layers=[10],
        global_pool=global_pool,
    )
    model = build_model(config, IMAGE, 4)
    randomise_batch_norm(model)
    kill_units(model.features, nn.Conv2d, 0.5)
    kill_units(model.body, nn.Linear, 0.5)
    model.eval()
    new_config, pruned = prune_model(model, config, 0.5, schema=IMAGE, n_outputs=4)
    assert [b.filters for b in new_config.conv] == [4, 3] and new_config.layers == [5]
    assert [b.pool for b in new_config.conv] == ["max", "avg"]
    assert pruned.features[0].weight.shape == (4, 3, 3, 3)
    assert pruned.features[4].weight.shape == (3, 4, 3, 3)  # conv, bn, relu, pool, conv
    x = image_batch()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-6)


def test_cnn_without_batch_norm_or_dense_layers():
    config = CNNConfig(conv=[ConvBlock(filters=8)], layers=[], batch_norm=False)
    model = build_model(config, IMAGE, 2)
    kill_units(model.features, nn.Conv2d, 0.25)
    model.eval()
    new_config, pruned = prune_model(model, config, 0.25, schema=IMAGE, n_outputs=2)
    assert new_config.conv[0].filters == 6 and new_config.layers == []
    assert pruned.head.in_features == 6 + 1  # pooled filters + the number
    assert n_params(pruned) < n_params(model)
    x = image_batch()
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- other model types


def test_text_models_are_refused_by_name():
    schema = InputSchema(text=[TextInput("t", 50, 8)])
    config = TextModelConfig(encoder="bow", embedding_dim=8)
    model = build_model(config, schema, 2)
    with pytest.raises(ModelError, match="'text'") as info:
        prune_model(model, config, 0.5, schema=schema, n_outputs=2)
    assert "'mlp'" in str(info.value) and "'cnn'" in str(info.value)


def test_an_int8_model_is_refused():
    config = MLPConfig(layers=[8])
    model = build_model(config, TABULAR, 2)
    quantize_linears(model)
    with pytest.raises(ModelError, match="int8"):
        prune_model(model, config, 0.5, schema=TABULAR, n_outputs=2)


def test_amount_out_of_range():
    config = MLPConfig(layers=[4])
    model = build_model(config, TABULAR, 2)
    with pytest.raises(ValueError, match="amount"):
        prune_model(model, config, 1.0, schema=TABULAR, n_outputs=2)


# --------------------------------------------------------------- fine-tune afterwards


def blobs(n: int, seed: int) -> pd.DataFrame:
    """Two classes from three numbers and a category, learnable but not trivially."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    shop = rng.choice(["a", "b", "c", "d"], n)
    score = x[:, 0] - x[:, 1] + 0.5 * x[:, 2] ** 2 + np.where(shop == "a", 0.8, 0.0)
    label = np.where(score + 0.3 * rng.normal(size=n) > 0.5, "yes", "no")
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "shop": shop, "y": label})


def accuracy(model: nn.Module, encoded: dict[str, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        return (model(encoded).argmax(1) == encoded["target"]).float().mean().item()


@pytest.mark.slow
def test_pruned_mlp_fine_tuned_keeps_its_accuracy(tmp_path):
    blobs(1200, seed=0).to_csv(tmp_path / "blobs.csv", index=False)
    run = foundry.train(
        {
            "name": "blobs",
            "data": {"path": str(tmp_path / "blobs.csv")},
            "features": {"target": "y"},
            "model": {"type": "mlp", "layers": [64, 32], "dropout": 0.0},
            "train": {"epochs": 15, "batch_size": 32, "optimizer": {"lr": 0.01}},
            "output_dir": str(tmp_path / "runs"),
        },
        quiet=True,
        progress=False,
    )
    predictor = foundry.load(run.model_ref)
    manifest = predictor.manifest
    config = FoundryConfig.model_validate(manifest["config"])
    schema = InputSchema.from_dict(manifest["schema"])
    n_outputs = int(manifest["n_outputs"])
    train = predictor.preprocessor.transform(blobs(1200, seed=0))
    test = predictor.preprocessor.transform(blobs(600, seed=1))
    original = accuracy(predictor.model, test)
    assert original > 0.85

    new_config, pruned = prune_model(
        predictor.model, config.model, 0.5, schema=schema, n_outputs=n_outputs
    )
    assert new_config.layers == [32, 16]
    # As the compress stage does: the normal loop, a few epochs at a lower rate.
    tune = TrainConfig.model_validate(
        {**config.train.model_dump(), "epochs": 3, "optimizer": {"lr": 0.001}}
    )
    fit(
        pruned,
        train,
        None,
        tune,
        predictor.task,
        tmp_path / "finetune",
        n_outputs=n_outputs,
        progress=False,
    )
    assert accuracy(pruned, test) >= original - 0.03
    assert n_params(pruned) < 0.5 * n_params(predictor.model)


# ----------------------------------------------------------------------- magnitude


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.9])
def test_magnitude_prune_reaches_the_sparsity_asked(amount):
    config = CNNConfig(conv=[ConvBlock(filters=8)], layers=[16])
    model = build_model(config, IMAGE, 3)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    bias_before = model.body[0].bias.detach().clone()
    pruned_weights = [model.features[0].weight, model.body[0].weight, model.head.weight]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in pruned_weights])

    stats = magnitude_prune(model, amount)

    total = sum(w.numel() for w in pruned_weights)
    assert stats["parameters"] == total
    assert abs(stats["sparsity"] - amount) <= 1 / total
    zeros = sum(int((w == 0).sum()) for w in pruned_weights)
    assert zeros / total == stats["sparsity"]
    if amount:  # global: what survives is everything above one threshold
        survivors = torch.cat([w.detach().abs().flatten() for w in pruned_weights])
        threshold = magnitudes.sort().values[round(amount * total) - 1]
        assert survivors[survivors > 0].min() >= threshold
    # plain tensors: same keys and shapes, no masks or hooks left behind
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert torch.equal(model.body[0].bias, bias_before)
