"""The neural-network family: every architecture `foundry.models` registers (the tabular
MLP, the image CNN, the text networks), trained over columns encoded by
`data.Preprocessor` with `training.fit`."""

from foundry.families.neural.family import NeuralFamily, image_augmenter

__all__ = ["NeuralFamily", "image_augmenter"]
