from __future__ import annotations

import pytest
import torch
from torch import nn

from foundry.config.schema import MLPConfig
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models import MLP, build_model

SCHEMA = InputSchema(numeric=["a", "b", "c"], categorical=["d", "e"], cardinalities=[4, 9])


@pytest.mark.parametrize("n_outputs", [1, 2, 5])
def test_output_shape_and_gradients(n_outputs, make_inputs, check_grads):
    model = build_model(MLPConfig(batch_norm=True, dropout=0.1), SCHEMA, n_outputs)
    out = model(make_inputs(SCHEMA, batch=6))
    assert out.shape == (6, n_outputs) and out.dtype == torch.float32
    check_grads(model, out)


def test_no_layers_is_a_linear_model(make_inputs):
    schema = InputSchema(numeric=[f"x{i}" for i in range(7)])
    model = MLP(MLPConfig(layers=[]), schema, 3)
    assert sum(p.numel() for p in model.parameters()) == 7 * 3 + 3
    inputs = make_inputs(schema)
    expected = inputs["numeric"] @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(inputs), expected)


def test_config_flags_change_structure():
    def kinds(config: MLPConfig) -> list[type]:
        return [type(m) for m in MLP(config, SCHEMA, 2).body]

    assert kinds(MLPConfig(layers=[8], dropout=0.0)) == [nn.Linear, nn.ReLU]
    assert kinds(MLPConfig(layers=[8], activation="gelu", dropout=0.0)) == [nn.Linear, nn.GELU]
    assert kinds(MLPConfig(layers=[8], batch_norm=True, dropout=0.2)) == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Dropout,
    ]
    widths = [
        m.out_features
        for m in MLP(MLPConfig(layers=[8, 4]), SCHEMA, 2).body
        if isinstance(m, nn.Linear)
    ]
    assert widths == [8, 4]


def test_embedding_dim_is_used():
    model = MLP(MLPConfig(embedding_dim=5), SCHEMA, 2)
    assert model.inputs.out_dim == 3 + 2 * 5


@pytest.mark.parametrize(
    ("schema", "hint"),
    [
        (InputSchema(numeric=["a"], text=[TextInput("t", 10, 4)]), "text"),
        (InputSchema(numeric=["a"], image=[ImageInput("i", 1, 8, 8)]), "cnn"),
    ],
)
def test_text_or_image_inputs_are_refused(schema, hint):
    with pytest.raises(ModelError, match=hint):
        MLP(MLPConfig(), schema, 2)


def test_no_inputs_is_refused():
    with pytest.raises(ModelError, match="at least one input"):
        MLP(MLPConfig(), InputSchema(), 2)
