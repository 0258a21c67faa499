"""Convolutional network for one image input; tabular inputs join before the head."""

from __future__ import annotations

import torch
from torch import nn

from foundry.config.schema import CNNConfig
from foundry.data.schema import InputSchema
from foundry.errors import ModelError
from foundry.models.layers import activation, dense_stack
from foundry.models.registry import register_model
from foundry.models.tabular import TabularInputs


@register_model("cnn")
class CNN(nn.Module):
    """`inputs["image:<name>"]` [B, C, H, W] (+ tabular) → [B, n_outputs].

    Conv blocks (`self.features`) → global average pool or flatten → concat tabular
    features → dense layers (`self.body`) → linear head (`self.head`).
    """

    def __init__(self, config: CNNConfig, schema: InputSchema, n_outputs: int) -> None:
        super().__init__()
        if len(schema.image) != 1 or schema.text:
            raise ModelError(
                f"model type 'cnn' needs exactly one image input and no text, got "
                f"{len(schema.image)} image and {len(schema.text)} text input(s)",
                hint="use model.type: text for text, mlp for tables",
            )
        image = schema.image[0]
        self.key = f"image:{image.name}"

        blocks: list[nn.Module] = []
        channels, height, width = image.channels, image.height, image.width
        for block in config.conv:
            k = block.kernel_size
            # Bias is redundant right before batch norm (it subtracts the mean).
            blocks.append(
                nn.Conv2d(channels, block.filters, k, padding=k // 2, bias=not config.batch_norm)
            )
            if config.batch_norm:
                blocks.append(nn.BatchNorm2d(block.filters))
            blocks.append(activation(config.activation))
            # padding k//2 keeps the size for odd k and adds one for even k.
            height, width = height + 2 * (k // 2) - k + 1, width + 2 * (k // 2) - k + 1
            # Small images (8x8 digits) run out of pixels: stop pooling at 1 pixel.
            if block.pool != "none" and min(height, width) >= 2:
                blocks.append(nn.MaxPool2d(2) if block.pool == "max" else nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            channels = block.filters
        self.features = nn.Sequential(*blocks)

        self.global_pool = config.global_pool
        image_dim = channels if config.global_pool else channels * height * width

        self.tabular = TabularInputs(schema)
        self.body, hidden = dense_stack(
            image_dim + self.tabular.out_dim, config.layers, config.activation, config.dropout
        )
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.features(inputs[self.key])  # [B, C', H', W']
        # mean() rather than AdaptiveAvgPool2d, whose CUDA backward has no deterministic
        # kernel (torch.use_deterministic_algorithms raises).
        x = x.mean(dim=(2, 3)) if self.global_pool else x.flatten(1)  # [B, image_dim]
        if self.tabular.out_dim:
            x = torch.cat([x, self.tabular(inputs)], dim=1)
        return self.head(self.body(x))  # [B, n_outputs]
