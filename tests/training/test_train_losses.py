from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_helpers import BINARY, MULTICLASS, REGRESSION

from foundry.errors import ConfigError
from foundry.training import build_loss, n_outputs_for


def test_n_outputs_for():
    assert n_outputs_for("auto", BINARY) == 2
    assert n_outputs_for("cross_entropy", MULTICLASS) == 3
    assert n_outputs_for("bce", BINARY) == 1
    for name in ("auto", "mse", "mae", "huber"):
        assert n_outputs_for(name, REGRESSION) == 1


def test_classification_losses_match_torch():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    target = torch.tensor([0, 2])
    for name in ("auto", "cross_entropy"):
        loss = build_loss(name, MULTICLASS, 3)(logits, target)
        assert torch.equal(loss, F.cross_entropy(logits, target))

    logit = torch.tensor([[1.5], [-0.5], [0.0]])
    target = torch.tensor([1, 0, 1])  # class indices, as Encoded stores them
    loss = build_loss("bce", BINARY, 1)(logit, target)
    expected = F.binary_cross_entropy_with_logits(logit[:, 0], target.float())
    assert torch.equal(loss, expected)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("auto", F.mse_loss),
        ("mse", F.mse_loss),
        ("mae", F.l1_loss),
        ("huber", F.smooth_l1_loss),
    ],
)
def test_regression_losses_use_the_first_column(name, reference):
    outputs = torch.tensor([[0.5], [2.0], [-3.0]])
    target = torch.tensor([0.0, 1.0, 1.0])
    loss = build_loss(name, REGRESSION, 1)(outputs, target)
    assert torch.equal(loss, reference(outputs[:, 0], target))


def test_losses_follow_gradients():
    outputs = torch.zeros(4, 1, requires_grad=True)
    build_loss("huber", REGRESSION, 1)(outputs, torch.ones(4)).backward()
    assert outputs.grad is not None and (outputs.grad < 0).all()


def test_bce_rejects_multiclass():
    with pytest.raises(ConfigError, match="bce needs a binary target"):
        build_loss("bce", MULTICLASS, 1)


def test_losses_must_fit_the_task():
    with pytest.raises(ConfigError, match="cross_entropy needs a classification target"):
        build_loss("cross_entropy", REGRESSION, 1)
    with pytest.raises(ConfigError, match="mse needs a number target"):
        build_loss("mse", BINARY, 1)
    with pytest.raises(ConfigError, match="needs a model with 3 output"):
        build_loss("auto", MULTICLASS, 2)
    with pytest.raises(ConfigError, match="train.loss must be one of"):
        build_loss("hinge", BINARY, 2)
