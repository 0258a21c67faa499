"""Helpers for model tests: schemas and random `Encoded` batches of the documented dtypes."""

from __future__ import annotations

import pytest
import torch

from foundry.data.schema import InputSchema


def random_inputs(schema: InputSchema, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch laid out as `foundry.data.schema` documents (plus a "target")."""
    g = torch.Generator().manual_seed(seed)
    inputs: dict[str, torch.Tensor] = {"target": torch.zeros(batch, dtype=torch.int64)}
    if schema.numeric:
        inputs["numeric"] = torch.randn(batch, schema.n_numeric, generator=g)
    if schema.categorical:
        inputs["categorical"] = torch.stack(
            [torch.randint(0, n, (batch,), generator=g) for n in schema.cardinalities], dim=1
        )
    for t in schema.text:
        tokens = torch.randint(1, t.vocab_size, (batch, t.max_length), generator=g)
        lengths = torch.randint(1, t.max_length + 1, (batch,), generator=g)
        tokens[torch.arange(t.max_length) >= lengths[:, None]] = 0  # trailing padding
        inputs[f"text:{t.name}"] = tokens
    for i in schema.image:
        inputs[f"image:{i.name}"] = torch.randn(batch, i.channels, i.height, i.width, generator=g)
    return inputs


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def make_inputs():
    return random_inputs


def assert_all_grads(model: torch.nn.Module, out: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.fixture
def check_grads():
    return assert_all_grads
