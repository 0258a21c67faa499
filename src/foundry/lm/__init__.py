"""Language models: corpora and instruction data, tokenizers, the next-token training
loop, generation, and the loaded-model interface the API serves.

Architectures live with the others in `foundry.models` (`gpt.py`: our decoder-only
transformer; `hf.py`: pretrained Hugging Face models). This package holds what differs
from the tabular path: token streams instead of encoded columns, a loss over next tokens
(or completion tokens only), generation, and the `LanguageModel` / `Embedder` protocols
(`foundry.lm.api`) that `foundry generate` and the OpenAI-compatible routes use.
"""
