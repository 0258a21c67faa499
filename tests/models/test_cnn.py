from __future__ import annotations

import pytest
from torch import nn

from foundry.config.schema import CNNConfig, ConvBlock
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models import CNN, build_model

SMALL = CNNConfig(conv=[ConvBlock(filters=4), ConvBlock(filters=6)], layers=[8])


def image_schema(channels: int, size: int, **tabular) -> InputSchema:
    return InputSchema(image=[ImageInput("img", channels, size, size)], **tabular)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("n_outputs", [1, 5])
def test_output_shape(channels, size, n_outputs, make_inputs):
    schema = image_schema(channels, size)
    out = build_model(SMALL, schema, n_outputs)(make_inputs(schema, batch=3))
    assert out.shape == (3, n_outputs)


@pytest.mark.parametrize("size", [8, 28])
def test_flatten_tracks_spatial_size(size, make_inputs):
    # 8x8 digits with two pooled blocks end at 2x2; 28x28 at 7x7.
    model = CNN(SMALL.model_copy(update={"global_pool": False}), image_schema(1, size), 2)
    side = size // 4
    assert model.body[0].in_features == 6 * side * side
    assert model(make_inputs(image_schema(1, size))).shape == (4, 2)


def test_pooling_stops_at_one_pixel(make_inputs):
    config = CNNConfig(conv=[ConvBlock(filters=2, pool="avg")] * 4, layers=[], global_pool=False)
    schema = image_schema(1, 4)
    model = CNN(config, schema, 2)
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.features) == 2
    assert model.body.__len__() == 0 and model.head.in_features == 2
    assert model(make_inputs(schema)).shape == (4, 2)


def test_even_kernel_and_no_pool(make_inputs):
    config = CNNConfig(
        conv=[
            ConvBlock(filters=3, kernel_size=4, pool="none"),
            ConvBlock(filters=3, kernel_size=2),
        ],
        layers=[],
        global_pool=False,
    )
    schema = image_schema(1, 8)
    # 8 → 9 (k=4, padding 2) → 10 (k=2, padding 1) → pooled 5
    assert CNN(config, schema, 2).head.in_features == 3 * 5 * 5
    assert CNN(config, schema, 2)(make_inputs(schema)).shape == (4, 2)


def test_config_flags_change_structure():
    plain = CNN(
        CNNConfig(conv=[ConvBlock(filters=4)], batch_norm=False, activation="tanh", dropout=0.3),
        image_schema(1, 8),
        2,
    )
    assert [type(m) for m in plain.features] == [nn.Conv2d, nn.Tanh, nn.MaxPool2d]
    assert [type(m) for m in plain.body] == [nn.Linear, nn.Tanh, nn.Dropout]
    normed = CNN(CNNConfig(conv=[ConvBlock(filters=4, pool="avg")]), image_schema(1, 8), 2)
    assert [type(m) for m in normed.features] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d]


def test_tabular_inputs_join_and_gradients_flow(make_inputs, check_grads):
    schema = image_schema(3, 8, numeric=["a", "b"], categorical=["c"], cardinalities=[5])
    model = CNN(SMALL, schema, 3)
    assert model.body[0].in_features == 6 + 2 + 4  # embedding_size(5) == 4
    out = model(make_inputs(schema))
    assert out.shape == (4, 3)
    check_grads(model, out)


@pytest.mark.parametrize(
    "schema",
    [
        InputSchema(numeric=["a"]),
        InputSchema(image=[ImageInput("a", 1, 8, 8), ImageInput("b", 1, 8, 8)]),
        InputSchema(image=[ImageInput("a", 1, 8, 8)], text=[TextInput("t", 10, 4)]),
    ],
)
def test_needs_exactly_one_image(schema):
    with pytest.raises(ModelError, match="exactly one image"):
        CNN(CNNConfig(), schema, 2)
