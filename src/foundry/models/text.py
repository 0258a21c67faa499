"""Text classifier/regressor for one text input; tabular inputs join before the head.

Token ids are int64 [B, L] with 0 = padding. Every encoder maps embeddings [B, L, D] and
a mask [B, L] (True = real token) to one vector per row, and ignores padding: a row of
only padding encodes to zeros (never NaN).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from foundry.config.schema import TextModelConfig
from foundry.data.schema import InputSchema, TextInput
from foundry.errors import ModelError
from foundry.models.layers import dense_stack
from foundry.models.registry import register_model
from foundry.models.tabular import TabularInputs


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` [B, L, D] over positions where `mask` [B, L] is True → [B, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class BagOfWords(nn.Module):
    """Mean of the token embeddings → [B, D]."""

    def __init__(self, config: TextModelConfig, text: TextInput) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = config.embedding_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(masked_mean(x, mask))


class ConvEncoder(nn.Module):
    """One Conv1d + ReLU per kernel size, max over time → [B, filters * n_kernels]."""

    def __init__(self, config: TextModelConfig, text: TextInput) -> None:
        super().__init__()
        # "Full" padding (k - 1) gives every window that touches a token, so sequences
        # shorter than the kernel still work.
        self.convs = nn.ModuleList(
            nn.Conv1d(config.embedding_dim, config.filters, k, padding=k - 1)
            for k in config.kernel_sizes
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = config.filters * len(config.kernel_sizes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(1).to(x.dtype)  # [B, 1, L]
        x = x.transpose(1, 2) * m  # [B, D, L], padding zeroed
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            # A window counts if it covers at least one real token.
            window = F.conv1d(m, m.new_ones(1, 1, k), padding=k - 1) > 0  # [B, 1, L+k-1]
            # After ReLU every value is >= 0, so zeroing padding windows leaves the max of
            # the real ones unchanged (and an all-padding row gives 0).
            h = F.relu(conv(x)) * window
            pooled.append(h.amax(dim=2))
        return self.dropout(torch.cat(pooled, dim=1))


class TransformerTextEncoder(nn.Module):
    """Learned positions + pre-norm transformer encoder, mean over real tokens → [B, D]."""

    def __init__(self, config: TextModelConfig, text: TextInput) -> None:
        super().__init__()
        d = config.embedding_dim
        self.positions = nn.Parameter(torch.zeros(1, text.max_length, d))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d,
            config.num_heads,
            dim_feedforward=4 * d,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the residual stream un-normalised: close with a LayerNorm.
        # Nested tensors are not used with norm_first (and would warn).
        self.encoder = nn.TransformerEncoder(
            layer, config.num_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.out_dim = d

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.positions[:, : x.shape[1]]
        # Attention over only masked keys is softmax(-inf...) = NaN: let an all-padding
        # row attend to its first position; pooling below still ignores it.
        empty = ~mask.any(dim=1, keepdim=True)  # [B, 1]
        attend = mask.clone()
        attend[:, :1] |= empty
        h = self.encoder(x, src_key_padding_mask=~attend)  # [B, L, D]
        return masked_mean(h, mask)


_ENCODERS: dict[str, type[nn.Module]] = {
    "bow": BagOfWords,
    "cnn": ConvEncoder,
    "transformer": TransformerTextEncoder,
}


@register_model("text")
class TextClassifier(nn.Module):
    """`inputs["text:<name>"]` int64 [B, L] (+ tabular) → [B, n_outputs].

    Token embedding (`self.embedding`) → encoder (`self.encoder`) → concat tabular
    features → dense layers (`self.body`) → linear head (`self.head`).
    """

    def __init__(self, config: TextModelConfig, schema: InputSchema, n_outputs: int) -> None:
        super().__init__()
        if len(schema.text) != 1 or schema.image:
            raise ModelError(
                f"model type 'text' needs exactly one text input and no image, got "
                f"{len(schema.text)} text and {len(schema.image)} image input(s)",
                hint="use model.type: cnn for images, mlp for tables",
            )
        text = schema.text[0]
        self.key = f"text:{text.name}"
        self.embedding = nn.Embedding(text.vocab_size, config.embedding_dim, padding_idx=0)
        self.encoder = _ENCODERS[config.encoder](config, text)
        self.tabular = TabularInputs(schema)
        self.body, hidden = dense_stack(
            self.encoder.out_dim + self.tabular.out_dim,
            config.layers,
            config.activation,
            config.dropout,
        )
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = inputs[self.key]  # [B, L]
        x = self.encoder(self.embedding(tokens), tokens != 0)  # [B, encoder.out_dim]
        if self.tabular.out_dim:
            x = torch.cat([x, self.tabular(inputs)], dim=1)
        return self.head(self.body(x))  # [B, n_outputs]
