from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch import nn

import foundry.models as models
from foundry.config.schema import CNNConfig, MLPConfig, TextModelConfig
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models import registry


def test_public_surface():
    assert sorted(models.__all__) == sorted(
        ["build_model", "register_model", "registered_models", "MLP", "CNN", "TextClassifier"]
    )
    for name in models.__all__:
        assert hasattr(models, name)


def test_architectures_register_on_import():
    assert {"mlp", "cnn", "text"} <= set(models.registered_models())


@pytest.mark.parametrize(
    ("config", "schema", "cls"),
    [
        (MLPConfig(), InputSchema(numeric=["a"]), models.MLP),
        (CNNConfig(), InputSchema(image=[ImageInput("img", 1, 8, 8)]), models.CNN),
        (TextModelConfig(), InputSchema(text=[TextInput("t", 50, 6)]), models.TextClassifier),
    ],
)
def test_build_model_picks_class_by_type(config, schema, cls):
    assert type(models.build_model(config, schema, 3)) is cls


def test_unknown_type_names_it_and_lists_registered():
    with pytest.raises(ModelError) as err:
        models.build_model(SimpleNamespace(type="resnet"), InputSchema(numeric=["a"]), 2)
    message = str(err.value)
    assert "resnet" in message
    assert all(name in message for name in ("mlp", "cnn", "text"))


def test_zero_outputs_is_refused():
    with pytest.raises(ModelError, match="n_outputs"):
        models.build_model(MLPConfig(), InputSchema(numeric=["a"]), 0)


def test_register_model_adds_a_buildable_type(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @models.register_model("constant")
    class Constant(nn.Module):
        def __init__(self, config, schema, n_outputs):
            super().__init__()
            self.n_outputs = n_outputs

    assert "constant" in models.registered_models()
    model = models.build_model(SimpleNamespace(type="constant"), InputSchema(), 4)
    assert isinstance(model, Constant) and model.n_outputs == 4

    with pytest.raises(ValueError, match="already registered"):

        @models.register_model("constant")
        class Other(nn.Module):
            pass
