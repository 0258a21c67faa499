"""What preprocessing hands to models and the training loop.

`Encoded` is a plain ``dict[str, torch.Tensor]`` with one row per example:

    "numeric"        float32 [N, n_numeric]   number + binary inputs, normalised, no NaN
    "categorical"    int64   [N, n_categorical] vocabulary indices (0 = unknown)
    "text:<name>"    int64   [N, max_length]  token ids (0 = padding, 1 = unknown)
    "image:<name>"   float32 [N, C, H, W]     normalised pixels
    "target"         int64 [N] class index (classification) | float32 [N] (regression,
                     standardised with the training mean/std)

Keys with no columns are absent (a table with no category column has no "categorical").
Tabular inputs are packed into two tensors so that a batch is two index operations,
not one per column.

`InputSchema` describes those tensors for building a model; `TaskInfo` describes the
target. Both are JSON round-trippable and stored in the model package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class TextInput:
    name: str
    vocab_size: int  # including padding (0) and unknown (1)
    max_length: int


@dataclass(frozen=True)
class ImageInput:
    name: str
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class InputSchema:
    numeric: list[str] = field(default_factory=list)
    """Names of the columns packed, in order, into "numeric"."""
    categorical: list[str] = field(default_factory=list)
    """Names of the columns packed, in order, into "categorical"."""
    cardinalities: list[int] = field(default_factory=list)
    """Vocabulary size of each categorical column (index 0 = unknown included)."""
    text: list[TextInput] = field(default_factory=list)
    image: list[ImageInput] = field(default_factory=list)

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSchema:
        return cls(
            numeric=list(d.get("numeric", [])),
            categorical=list(d.get("categorical", [])),
            cardinalities=list(d.get("cardinalities", [])),
            text=[TextInput(**t) for t in d.get("text", [])],
            image=[ImageInput(**i) for i in d.get("image", [])],
        )


@dataclass(frozen=True)
class TaskInfo:
    target: str
    task: Task
    classes: list[str] = field(default_factory=list)
    """Class labels in index order (classification); empty for regression."""
    target_mean: float = 0.0
    """Regression: the target is standardised for training; predictions are mapped back."""
    target_std: float = 1.0

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(**d)
