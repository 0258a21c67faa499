"""Number, binary and category inputs as one feature vector."""

from __future__ import annotations

import torch
from torch import nn

from foundry.data.schema import InputSchema
from foundry.errors import ModelError


def embedding_size(cardinality: int) -> int:
    """Default category embedding width: min(16, round(1.6 * n^0.56)), at least 1.

    The fast.ai rule of thumb: grows sub-linearly with the number of categories.
    """
    return max(1, min(16, round(1.6 * cardinality**0.56)))


class TabularInputs(nn.Module):
    """`inputs["numeric"]` [B, n_numeric] float32 and `inputs["categorical"]` [B, n_cat]
    int64 → [B, out_dim] float32: numbers as they are, then one embedding per category
    column. `out_dim` is 0 when the schema has no tabular columns (do not call it then).
    """

    def __init__(self, schema: InputSchema, embedding_dim: int | None = None) -> None:
        super().__init__()
        if len(schema.cardinalities) != len(schema.categorical):
            raise ModelError(
                f"input schema has {len(schema.categorical)} category columns but "
                f"{len(schema.cardinalities)} cardinalities"
            )
        self.n_numeric = schema.n_numeric
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, embedding_dim or embedding_size(n)) for n in schema.cardinalities
        )
        self.out_dim = self.n_numeric + sum(e.embedding_dim for e in self.embeddings)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # Hot path: numbers only is the tensor itself, no copy.
        if not self.embeddings:
            return inputs["numeric"]
        categorical = inputs["categorical"]
        parts = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.n_numeric:
            parts.insert(0, inputs["numeric"])
        return torch.cat(parts, dim=1)
