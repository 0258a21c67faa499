from __future__ import annotations

import pytest
import torch

from foundry.config.schema import TextModelConfig
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models import TextClassifier, build_model

ENCODERS = ["bow", "cnn", "transformer"]


def config(encoder: str, **kw) -> TextModelConfig:
    base = dict(encoder=encoder, embedding_dim=8, filters=4, num_layers=1, num_heads=2)
    return TextModelConfig(**{**base, **kw})


def text_schema(max_length: int = 6, **tabular) -> InputSchema:
    return InputSchema(text=[TextInput("review", 30, max_length)], **tabular)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("n_outputs", [1, 2, 5])
def test_output_shape_and_gradients(encoder, n_outputs, make_inputs, check_grads):
    schema = text_schema()
    model = build_model(config(encoder, layers=[6]), schema, n_outputs)
    out = model(make_inputs(schema, batch=5))
    assert out.shape == (5, n_outputs)
    check_grads(model, out)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("train", [True, False])
def test_fully_padded_row_is_finite(encoder, train, make_inputs, check_grads):
    schema = text_schema()
    inputs = make_inputs(schema, batch=3)
    inputs["text:review"][1] = 0
    model = TextClassifier(config(encoder), schema, 2).train(train)
    out = model(inputs)
    assert torch.isfinite(out).all()
    if train:
        check_grads(model, out)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_embedding_is_ignored(encoder, make_inputs):
    # Even a non-zero padding vector must not leak into the encoding: padding is masked.
    schema = text_schema()
    inputs = make_inputs(schema)
    model = TextClassifier(config(encoder), schema, 2).eval()
    before = model(inputs)
    with torch.no_grad():
        model.embedding.weight[0] = 5.0
    torch.testing.assert_close(model(inputs), before)


def test_bow_ignores_extra_padding():
    short, long = text_schema(max_length=4), text_schema(max_length=9)
    a = TextClassifier(config("bow"), short, 3).eval()
    b = TextClassifier(config("bow"), long, 3).eval()
    b.load_state_dict(a.state_dict())
    tokens = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0]])
    padded = torch.cat([tokens, torch.zeros(2, 5, dtype=torch.int64)], dim=1)
    torch.testing.assert_close(b({"text:review": padded}), a({"text:review": tokens}))


def test_cnn_kernels_longer_than_text(make_inputs):
    schema = text_schema(max_length=2)
    model = TextClassifier(config("cnn", kernel_sizes=[3, 5]), schema, 2)
    assert model(make_inputs(schema)).shape == (4, 2)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_tabular_side_inputs(encoder, make_inputs, check_grads):
    schema = text_schema(numeric=["a"], categorical=["c"], cardinalities=[3])
    model = TextClassifier(config(encoder), schema, 2)
    assert model.head.in_features == model.encoder.out_dim + 1 + 3
    out = model(make_inputs(schema))
    assert out.shape == (4, 2)
    check_grads(model, out)


def test_encoder_widths():
    schema = text_schema()
    cnn = TextClassifier(config("cnn", kernel_sizes=[2, 3, 4]), schema, 2)
    assert cnn.encoder.out_dim == 4 * 3
    tf = TextClassifier(config("transformer", num_layers=2), schema, 2)
    assert len(tf.encoder.encoder.layers) == 2
    assert tf.encoder.encoder.layers[0].linear1.out_features == 4 * 8


@pytest.mark.parametrize(
    "schema",
    [
        InputSchema(numeric=["a"]),
        InputSchema(text=[TextInput("a", 10, 4), TextInput("b", 10, 4)]),
        InputSchema(text=[TextInput("a", 10, 4)], image=[ImageInput("i", 1, 8, 8)]),
    ],
)
def test_needs_exactly_one_text(schema):
    with pytest.raises(ModelError, match="exactly one text"):
        TextClassifier(TextModelConfig(), schema, 2)
