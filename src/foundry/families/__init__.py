"""Model families: one folder each, one interface (`interface.py`), one registry.

    family = family_for(cfg.model.type)      # e.g. the neural family for mlp / cnn / text
    data = family.prepare(run); fitted = family.fit(data, cfg.train, run); ...

Families today: `neural/` (the tabular MLP, image CNN and text networks over encoded
columns), `gpt/` (our GPT from scratch), `hf/` (Hugging Face checkpoints: classifier /
regressor, causal LM, embeddings, LoRA). Adding one is a new folder here whose class
carries `@register_family("name")`; see docs/INTERNALS.md.
"""

from foundry.families.interface import Evaluation, Fitted, ModelFamily, PackageContents, Run
from foundry.families.registry import (
    family_for,
    family_of_package,
    register_family,
    registered_families,
)

__all__ = [
    "Evaluation",
    "Fitted",
    "ModelFamily",
    "PackageContents",
    "Run",
    "family_for",
    "family_of_package",
    "register_family",
    "registered_families",
]
