"""`foundry evaluate` for a language model: its perplexity on a held-out text file.

The file is read as training data is (a text file of blank-line separated documents,
JSONL or a table with the `lm:` columns the model was trained with), tokenized by the
model's own tokenizer into blocks of the length it was trained on, and scored on the same
target tokens training scored (completions only, for instruction data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundry.config.schema import LMConfig
from foundry.errors import DataError, ModelError
from foundry.registry import Package

__all__ = ["encode_as_trained", "evaluate_lm_file"]


def evaluate_lm_file(package: Package, ref: str, path: Path) -> tuple[int, dict[str, Any]]:
    """(examples read, metrics) of the `gpt` / `hf` causal LM in `package` on `path`:
    `loss` (mean next-token nats), `perplexity`, `tokens` (target tokens scored)."""
    from foundry.lm.data import read_lm_file
    from foundry.lm.load import load_package, model_type
    from foundry.lm.train import evaluate_tokens, exp_loss

    manifest = package.manifest
    is_causal = (manifest.get("hf") or {}).get("task") == "causal_lm"
    if not (model_type(manifest) == "gpt" or (model_type(manifest) == "hf" and is_causal)):
        raise ModelError(f"model {ref} is not a language model: it has no perplexity")
    lm_object = load_package(package, ref)
    examples = read_lm_file(path, LMConfig.model_validate(manifest.get("lm", {})))
    data = encode_as_trained(examples, lm_object.tokenizer, package)
    if not data.n_targets:
        raise DataError(f"{path}: no target tokens to score (is every completion empty?)")
    loss, tokens = evaluate_tokens(lm_object.model, data)
    return len(examples), {
        "loss": loss,
        "perplexity": exp_loss(loss),
        "tokens": tokens,
        "kind": examples.kind,
    }


def encode_as_trained(examples: Any, tokenizer: Any, package: Package) -> Any:
    """`TokenData` of `examples` as training scored them: the package's block size, loss
    mask, and chat rendering (a Hugging Face tokenizer's own template with its bos/eos
    variables, else the config's or foundry's default)."""
    from foundry.lm.data import encode_examples

    manifest = package.manifest
    try:
        lm = LMConfig.model_validate(manifest.get("lm", {}))
        block_size = int(manifest["data"]["block_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{package.path / 'foundry.json'}: no lm / data.block_size section: {exc}"
        ) from exc
    return encode_examples(
        examples,
        tokenizer,
        block_size=block_size,
        loss_on=lm.loss_on,
        chat_template=getattr(tokenizer, "chat_template", None) or lm.chat_template,
        **getattr(tokenizer, "template_variables", {}),
    )
