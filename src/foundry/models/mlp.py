"""Multi-layer perceptron over number, binary and category inputs."""

from __future__ import annotations

import torch
from torch import nn

from foundry.config.schema import MLPConfig
from foundry.data.schema import InputSchema
from foundry.errors import ModelError
from foundry.models.layers import dense_stack
from foundry.models.registry import register_model
from foundry.models.tabular import TabularInputs


@register_model("mlp")
class MLP(nn.Module):
    """Tabular inputs → hidden layers (`self.body`) → linear head (`self.head`).

    `layers: []` makes it a linear (or logistic) model. forward: Encoded → [B, n_outputs].
    """

    def __init__(self, config: MLPConfig, schema: InputSchema, n_outputs: int) -> None:
        super().__init__()
        if schema.text or schema.image:
            kind, hint = (
                ("text", "set model.type: text")
                if schema.text
                else ("image", "set model.type: cnn")
            )
            names = [i.name for i in (schema.text or schema.image)]
            raise ModelError(
                f"model type 'mlp' takes number, binary and category inputs only, "
                f"got {kind} input(s) {names}",
                hint=hint,
            )
        self.inputs = TabularInputs(schema, config.embedding_dim)
        if self.inputs.out_dim == 0:
            raise ModelError("model type 'mlp' needs at least one input feature")
        self.body, width = dense_stack(
            self.inputs.out_dim,
            config.layers,
            config.activation,
            config.dropout,
            config.batch_norm,
        )
        self.head = nn.Linear(width, n_outputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # [B, in_dim] → [B, hidden] → [B, n_outputs]
        return self.head(self.body(self.inputs(inputs)))
