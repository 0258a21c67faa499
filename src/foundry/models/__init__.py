"""Model architectures and their registry.

`build_model(config, schema, n_outputs)` returns an `nn.Module` whose forward maps an
`Encoded` batch (see `foundry.data.schema`) to raw outputs `[batch, n_outputs]`.
A new architecture is a module here with `@register_model("name")` on its class, plus
an import below so the decorator runs when `foundry.models` is imported.
"""

from foundry.models.cnn import CNN
from foundry.models.mlp import MLP
from foundry.models.registry import build_model, register_model, registered_models
from foundry.models.text import TextClassifier

__all__ = ["CNN", "MLP", "TextClassifier", "build_model", "register_model", "registered_models"]
