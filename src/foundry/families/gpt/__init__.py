"""The GPT family: our decoder-only transformer, trained from scratch on your text."""

from foundry.families.gpt.family import GPTFamily

__all__ = ["GPTFamily"]
