from __future__ import annotations

import pytest
import torch

from foundry.data.schema import InputSchema
from foundry.errors import ModelError
from foundry.models.tabular import TabularInputs, embedding_size


def test_numeric_only_is_passed_through_without_copy(make_inputs):
    schema = InputSchema(numeric=["a", "b"])
    inputs = make_inputs(schema)
    layer = TabularInputs(schema)
    assert layer.out_dim == 2
    assert layer(inputs) is inputs["numeric"]


def test_default_embedding_sizes():
    assert [embedding_size(n) for n in (1, 2, 3, 10, 1000, 10**6)] == [2, 2, 3, 6, 16, 16]


def test_categorical_embeddings_are_concatenated(make_inputs):
    schema = InputSchema(numeric=["a"], categorical=["c", "d"], cardinalities=[3, 1000])
    layer = TabularInputs(schema)
    assert [e.embedding_dim for e in layer.embeddings] == [3, 16]
    assert layer.out_dim == 1 + 3 + 16
    inputs = make_inputs(schema)
    out = layer(inputs)
    assert out.shape == (4, 20)
    assert torch.equal(out[:, :1], inputs["numeric"])
    assert torch.equal(out[:, 1:4], layer.embeddings[0](inputs["categorical"][:, 0]))


def test_explicit_embedding_dim_and_categorical_only(make_inputs):
    schema = InputSchema(categorical=["c", "d"], cardinalities=[3, 7])
    layer = TabularInputs(schema, embedding_dim=5)
    assert layer.out_dim == 10
    assert layer(make_inputs(schema)).shape == (4, 10)


def test_no_tabular_columns():
    assert TabularInputs(InputSchema()).out_dim == 0


def test_cardinalities_must_match_columns():
    with pytest.raises(ModelError, match="cardinalities"):
        TabularInputs(InputSchema(categorical=["c"], cardinalities=[]))
