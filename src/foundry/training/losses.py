"""Loss functions by config name.

A loss takes the model's raw outputs and the `"target"` tensor of a batch and returns a
scalar. Outputs are `[batch, n_outputs]`; targets follow `foundry.data.schema`:

    classification   int64   [batch]   class index
    regression       float32 [batch]   standardised target

Regression losses and `bce` read the single output column `outputs[:, 0]`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from foundry.data.schema import TaskInfo
from foundry.errors import ConfigError

LossFn = Callable[[Tensor, Tensor], Tensor]

REGRESSION_LOSSES = ("mse", "mae", "huber")


def _cross_entropy(outputs: Tensor, target: Tensor) -> Tensor:
    # outputs: [batch, n_classes] logits; target: [batch] class indices
    return F.cross_entropy(outputs.float(), target)


def _bce(outputs: Tensor, target: Tensor) -> Tensor:
    # outputs: [batch, 1] logit of class 1; target: [batch] 0/1
    return F.binary_cross_entropy_with_logits(outputs[:, 0].float(), target.float())


def _mse(outputs: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(outputs[:, 0].float(), target)


def _mae(outputs: Tensor, target: Tensor) -> Tensor:
    return F.l1_loss(outputs[:, 0].float(), target)


def _huber(outputs: Tensor, target: Tensor) -> Tensor:
    # smooth L1 with beta = 1: quadratic within one (standardised) unit, linear beyond
    return F.smooth_l1_loss(outputs[:, 0].float(), target)


_LOSSES: dict[str, LossFn] = {
    "cross_entropy": _cross_entropy,
    "bce": _bce,
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
}


def resolve_loss_name(name: str, task: TaskInfo) -> str:
    """`auto` → `cross_entropy` for classification, `mse` for regression."""
    if name == "auto":
        return "cross_entropy" if task.is_classification else "mse"
    if name not in _LOSSES:
        raise ConfigError(f"train.loss must be one of auto, {', '.join(_LOSSES)}; got {name!r}")
    return name


def n_outputs_for(loss_name: str, task: TaskInfo) -> int:
    """Width of the model's last layer for this loss and task: 1 for regression and for
    `bce`, else the number of classes."""
    name = resolve_loss_name(loss_name, task)
    if not task.is_classification or name == "bce":
        return 1
    return task.n_classes


def build_loss(name: str, task: TaskInfo, n_outputs: int) -> LossFn:
    """The loss `name` (a `train.loss` value) checked against the task and output width.

    Returns `loss(outputs [batch, n_outputs], target [batch]) -> scalar tensor` (a mean
    over the batch). Raises `ConfigError` when the loss does not fit the task.
    """
    name = resolve_loss_name(name, task)
    if name == "bce" and task.task != "binary":
        raise ConfigError(
            f"train.loss: bce needs a binary target, but {task.target!r} is {task.task} "
            f"with {task.n_classes} classes",
            hint="use loss: cross_entropy (or auto)",
        )
    if name == "cross_entropy" and not task.is_classification:
        raise ConfigError(
            f"train.loss: cross_entropy needs a classification target, but {task.target!r} "
            "is a number",
            hint="use loss: mse, mae, huber (or auto)",
        )
    if name in REGRESSION_LOSSES and task.is_classification:
        raise ConfigError(
            f"train.loss: {name} needs a number target, but {task.target!r} is {task.task}",
            hint="use loss: cross_entropy (or auto)",
        )
    expected = n_outputs_for(name, task)
    if n_outputs != expected:
        raise ConfigError(
            f"train.loss: {name} on a {task.task} target needs a model with {expected} "
            f"output(s), got n_outputs={n_outputs}"
        )
    return _LOSSES[name]


__all__ = ["LossFn", "build_loss", "n_outputs_for", "resolve_loss_name"]
