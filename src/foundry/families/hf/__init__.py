"""The Hugging Face family: pretrained checkpoints fine-tuned as text classifiers /
regressors or causal LMs (fully or with LoRA), or packaged as sentence embedders."""

from foundry.families.hf.family import HFFamily

__all__ = ["HFFamily"]
