"""Int8Linear and quantize_linears on real (trained) foundry models; no mocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

import foundry
from foundry.compression.quantize import Int8Linear, int8_size_report, quantize_linears
from foundry.config.schema import (
    CNNConfig,
    ConvBlock,
    FoundryConfig,
    MLPConfig,
    TextModelConfig,
)
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.models import build_model
from foundry.predictor import Predictor


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows whose argmax (predicted class) is the same."""
    return (a.argmax(1) == b.argmax(1)).float().mean().item()


def fit_steps(model: nn.Module, inputs: dict, y: torch.Tensor, steps: int = 60) -> nn.Module:
    """A few Adam steps, enough for the toy problems below to be learned; ends in eval."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), y).backward()
        optimizer.step()
    return model.eval()


def rows(inputs: dict, index: slice) -> dict:
    return {k: v[index] for k, v in inputs.items()}


# ------------------------------------------------------------------------ Int8Linear


def test_int8_linear_is_close_to_fp32():
    torch.manual_seed(0)
    linear = nn.Linear(512, 256)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(64, 512)
    want, got = linear(x), layer(x)
    assert got.dtype == torch.float32 and got.shape == (64, 256)
    assert relative_error(got, want) < 0.02
    assert ((got - want).abs().max() / want.abs().max()).item() < 0.03


def test_weights_round_to_the_nearest_int8_step():
    torch.manual_seed(0)
    linear = nn.Linear(40, 24)
    layer = Int8Linear.from_linear(linear)
    step = layer.weight_scale[:, None]  # [out, 1]
    assert (layer.dequantized_weight() - linear.weight).abs().le(step / 2 + 1e-7).all()
    # symmetric per channel: each row's largest weight maps to ±127
    assert layer.weight.abs().amax(dim=1).eq(127).all()


def test_state_dict_layout():
    layer = Int8Linear.from_linear(nn.Linear(12, 5))
    state = layer.state_dict()
    assert list(state) == ["weight", "weight_scale", "bias"]
    assert (state["weight"].dtype, state["weight"].shape) == (torch.int8, (5, 12))
    assert (state["weight_scale"].dtype, state["weight_scale"].shape) == (torch.float32, (5,))
    assert (state["bias"].dtype, state["bias"].shape) == (torch.float32, (5,))
    no_bias = Int8Linear.from_linear(nn.Linear(12, 5, bias=False))
    assert list(no_bias.state_dict()) == ["weight", "weight_scale"]
    assert no_bias(torch.randn(3, 12)).shape == (3, 5)


def test_all_zero_rows_give_the_bias():
    torch.manual_seed(0)
    linear = nn.Linear(32, 8)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(5, 32)
    x[[1, 3]] = 0.0
    out = layer(x)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], linear.bias.detach()) and torch.equal(out[3], out[1])
    # a zero weight row (dead unit) gives scale 1, not 0/0
    linear.weight.data[2] = 0.0
    layer = Int8Linear.from_linear(linear)
    assert layer.weight_scale[2] == 1.0 and torch.isfinite(layer(x)).all()


def test_leading_dimensions_are_kept():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(16, 6))
    x = torch.randn(2, 7, 16)  # [batch, tokens, features], as a transformer feeds it
    out = layer(x)
    assert out.shape == (2, 7, 6)
    # each row is quantized on its own: the batch layout does not change any value
    assert torch.equal(out[1], layer(x[1]))
    assert torch.equal(out.reshape(14, 6), layer(x.reshape(14, 16)))


def test_bf16_inputs_and_autocast():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(20, 64)
    want = layer(x)
    out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert relative_error(out.float(), want) < 0.02
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert relative_error(layer(x).float(), want) < 1e-6  # float32 input: same numbers


@pytest.mark.filterwarnings("error")  # no DeprecationWarning: torch.ao is not used
def test_quantizing_warns_nothing():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert quantize_linears(model) == 2
    with torch.inference_mode():
        assert model(torch.randn(3, 8)).shape == (3, 2)


# ---------------------------------------------------------------- quantize_linears


def tabular_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Three classes from two numbers and a category, learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    score = x1 + 0.5 * x2 + np.where(colour == "red", 1.0, 0.0)
    label = np.where(score < -0.5, "low", np.where(score < 0.8, "mid", "high"))
    return pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": label})


def train_tabular(tmp_path, model: dict) -> Predictor:
    tabular_frame().to_csv(tmp_path / "table.csv", index=False)
    run = foundry.train(
        {
            "name": "table",
            "data": {"path": str(tmp_path / "table.csv")},
            "features": {"target": "label"},
            "model": model,
            "train": {"epochs": 8, "batch_size": 32, "optimizer": {"lr": 0.01}},
            "output_dir": str(tmp_path / "runs"),
        },
        quiet=True,
        progress=False,
    )
    return foundry.load(run.model_ref)


@pytest.mark.slow
def test_quantized_mlp_package_round_trip(tmp_path):
    predictor = train_tabular(tmp_path, {"type": "mlp", "layers": [32, 16], "batch_norm": True})
    model = predictor.model
    encoded = predictor.preprocessor.transform(tabular_frame(300, seed=1), with_target=False)
    with torch.inference_mode():
        fp32 = model(encoded)
    assert quantize_linears(model) == 3  # two hidden layers + the head
    with torch.inference_mode():
        int8 = model(encoded)
    assert agreement(int8, fp32) >= 0.95

    # What the compress stage registers, and how a quantized package loads again.
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    manifest = predictor.manifest
    config = FoundryConfig.model_validate(manifest["config"])
    schema = InputSchema.from_dict(manifest["schema"])
    rebuilt = build_model(config.model, schema, int(manifest["n_outputs"]))
    quantize_linears(rebuilt)
    rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"))
    rebuilt.eval()
    assert load_file(tmp_path / "model.safetensors")["head.weight"].dtype == torch.int8
    with torch.inference_mode():
        assert torch.equal(rebuilt(encoded), int8)


def test_int8_is_four_times_smaller():
    schema = InputSchema(numeric=["a", "b"], categorical=["c"], cardinalities=[4])
    model = build_model(MLPConfig(layers=[64, 64]), schema, 3)
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    before = int8_size_report(model)
    quantize_linears(model)
    after = int8_size_report(model)
    assert before["int8_weights"] == 0
    assert after["int8_weights"] == linear_weights
    # int8 weights; biases, scales and category embeddings stay float32
    assert after["bytes"] < 0.4 * before["bytes"]


def test_min_features_skips_small_layers():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    assert quantize_linears(model, min_features=8) == 1
    assert isinstance(model[0], Int8Linear) and type(model[2]) is nn.Linear


def test_tied_weights_are_left_alone():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight
            self.proj = nn.Linear(8, 8)

    model = Tied()
    assert quantize_linears(model) == 1
    assert isinstance(model.proj, Int8Linear) and model.head.weight is model.embed.weight


def test_cnn_dense_layers_are_quantized_and_convs_kept():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    images = torch.randn(256, 1, 8, 8, generator=g) * 0.5
    images[y == 0, :, :, :4] += 1.0  # class 0: bright left half
    images[y == 1, :, :, 4:] += 1.0  # class 1: bright right half
    schema = InputSchema(image=[ImageInput("img", 1, 8, 8)])
    config = CNNConfig(conv=[ConvBlock(filters=8), ConvBlock(filters=8)], layers=[32])
    torch.manual_seed(0)
    inputs = {"image:img": images}
    model = fit_steps(build_model(config, schema, 2), rows(inputs, slice(0, 192)), y[:192])
    test = rows(inputs, slice(192, None))
    with torch.inference_mode():
        fp32 = model(test)
    assert quantize_linears(model) == 2
    assert isinstance(model.head, Int8Linear) and isinstance(model.features[0], nn.Conv2d)
    with torch.inference_mode():
        assert agreement(model(test), fp32) >= 0.95


def keyword_text(n: int = 400, length: int = 12, vocab: int = 60, seed: int = 0):
    """Three classes, each marked by one of its keywords among noise tokens."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    tokens = torch.randint(12, vocab, (n, length), generator=g)
    keyword = 2 + 3 * y + torch.randint(0, 3, (n,), generator=g)
    tokens[torch.arange(n), torch.randint(0, 4, (n,), generator=g)] = keyword
    lengths = torch.randint(5, length + 1, (n,), generator=g)
    tokens[torch.arange(length) >= lengths[:, None]] = 0
    return {"text:t": tokens}, y, InputSchema(text=[TextInput("t", vocab, length)])


@pytest.mark.parametrize(
    ("encoder", "n_linear"),
    [("bow", 2), ("transformer", 2 * 2 + 2)],  # body + head; + linear1/linear2 per layer
)
def test_text_models_keep_their_predictions(encoder, n_linear):
    inputs, y, schema = keyword_text()
    config = TextModelConfig(
        encoder=encoder, embedding_dim=32, num_layers=2, num_heads=4, layers=[32], dropout=0.0
    )
    torch.manual_seed(0)
    model = fit_steps(build_model(config, schema, 3), rows(inputs, slice(0, 300)), y[:300])
    test = rows(inputs, slice(300, None))
    with torch.inference_mode():  # eval + no grad: the transformer's fused fast path
        fp32 = model(test)
    assert (fp32.argmax(1) == y[300:]).float().mean() > 0.8  # it learned something
    assert quantize_linears(model) == n_linear
    with torch.inference_mode():
        int8 = model(test)
    assert agreement(int8, fp32) >= 0.95
    assert relative_error(int8, fp32) < 0.05
    for layer in model.modules():
        if isinstance(layer, nn.MultiheadAttention):
            # attention reads out_proj.weight directly: it must stay a float Linear
            assert type(layer.out_proj) is not Int8Linear
            assert layer.out_proj.weight.dtype == torch.float32
