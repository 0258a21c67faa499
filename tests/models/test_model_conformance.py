"""What every architecture promises the training loop and the registry."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from foundry.config.schema import CNNConfig, ConvBlock, MLPConfig, TextModelConfig
from foundry.data.schema import ImageInput, InputSchema, TextInput
from foundry.models import build_model

TABULAR = dict(numeric=["a"], categorical=["c"], cardinalities=[3])
CASES = {
    "mlp": (MLPConfig(layers=[4], batch_norm=True), InputSchema(**TABULAR)),
    "cnn": (
        CNNConfig(conv=[ConvBlock(filters=2)], layers=[4]),
        InputSchema(image=[ImageInput("img", 1, 8, 8)], **TABULAR),
    ),
    **{
        f"text-{encoder}": (
            TextModelConfig(encoder=encoder, embedding_dim=4, filters=2, num_heads=2),
            InputSchema(text=[TextInput("t", 20, 5)], **TABULAR),
        )
        for encoder in ("bow", "cnn", "transformer")
    },
}


@pytest.fixture(params=list(CASES))
def case(request):
    return CASES[request.param]


def test_same_seed_same_model_and_outputs(case, make_inputs):
    config, schema = case
    inputs = make_inputs(schema)
    models = []
    for _ in range(2):
        torch.manual_seed(7)
        models.append(build_model(config, schema, 3).eval())
    a, b = (m.state_dict() for m in models)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(models[0](inputs), models[1](inputs))


def test_deterministic_algorithms_and_no_target_needed(case, make_inputs, check_grads):
    config, schema = case
    inputs = make_inputs(schema)
    del inputs["target"]
    model = build_model(config, schema, 2)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        out = model(inputs)
        check_grads(model, out)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert out.dtype == torch.float32 and out.shape == (4, 2)


def test_weights_round_trip_through_safetensors(case, make_inputs, tmp_path):
    config, schema = case
    inputs = make_inputs(schema)
    model = build_model(config, schema, 2).eval()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    fresh = build_model(config, schema, 2).eval()
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert torch.equal(fresh(inputs), model(inputs))
