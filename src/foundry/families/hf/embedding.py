"""Hugging Face family, task embedding: no training, the pretrained encoder and tokenizer
packaged whole (the package loads with no network), with a sanity check on texts from
the data as its metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.config.schema import HFModelConfig
from foundry.errors import ConfigError, DataError
from foundry.families.hf.package import (
    hf_card_section,
    hf_contents,
    hf_manifest_section,
    manifest_base,
)
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run

__all__ = ["evaluate", "fit", "package", "prepare", "summarize"]


@dataclass
class EmbeddingData:
    tokenizer: Any
    encoder: Any
    hf: dict[str, Any]


def prepare(run: Run, source: str, hf_config: Any) -> EmbeddingData:
    from foundry.models.hf import HFTokenizer, load_pretrained, load_tokenizer

    spec = run.config.model
    assert isinstance(spec, HFModelConfig)
    if spec.lora is not None:
        raise ConfigError("model.lora: task embedding trains nothing; remove the lora section")
    tokenizer = HFTokenizer(load_tokenizer(source, spec.revision))
    encoder = load_pretrained(source, "encoder", revision=spec.revision)
    hf = hf_manifest_section(spec, source, hf_config, task="embedding")
    hf["hidden_size"] = int(encoder.config.hidden_size)
    trained_length = sentence_transformers_length(source)
    if "max_length" not in spec.model_fields_set and trained_length is not None:
        # embed as sentence-transformers does for this checkpoint (MiniLM: 256 tokens)
        hf["max_length"] = trained_length
        run.say.info(f"max_length {trained_length} from the model's sentence_bert_config.json")
    return EmbeddingData(tokenizer, encoder, hf)


def fit(data: Any, train: Any, run: Run) -> Fitted:
    """Nothing to train: the embedder as it will be served."""
    from foundry.lm.hf_model import HFEmbedder

    own: EmbeddingData = data.data
    return Fitted(HFEmbedder(run.config.name, own.encoder, own.tokenizer, own.hf))


def evaluate(fitted: Fitted, data: Any, run: Run) -> Evaluation:
    return Evaluation(embedding_sanity_metrics(run, fitted.model))


def package(fitted: Fitted, data: Any, evaluation: Evaluation, run: Run) -> PackageContents:
    cfg, own = run.config, data.data
    manifest = {**manifest_base(cfg, own.hf), "task": "embedding", "data": {"path": cfg.data.path}}
    card = "\n".join(
        [
            f"# {cfg.name}",
            "",
            cfg.description or "_No description given (set `description` in the config)._",
            "",
            "Sentence embeddings: pretrained encoder, "
            f"{cfg.model.pooling} pooling, L2-normalised, {own.hf['hidden_size']} dimensions.",
            "",
        ]
    ) + hf_card_section(own.hf)
    return hf_contents(own.encoder, own.tokenizer, own.hf, manifest, card, head={})


def summarize(ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
    """`embedding_sanity_metrics` said what it found already."""


def sentence_transformers_length(source: str) -> int | None:
    """`max_seq_length` of a local sentence-transformers checkpoint (its
    sentence_bert_config.json), or None."""
    path = Path(source) / "sentence_bert_config.json"
    if not path.is_file():
        return None
    try:
        length = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return length if isinstance(length, int) and length > 0 else None


def embedding_sanity_metrics(run: Run, embedder: Any) -> dict[str, Any]:
    """Embeds up to 256 texts of the data (corpus documents, or prompts of instruction
    data): vectors must be finite and unit length. Reports their mean pairwise cosine
    (near 1 means the encoder barely tells the texts apart)."""
    from foundry.lm.data import read_lm_file

    cfg, say = run.config, run.say
    path = run.loaded.resolve(cfg.data.path)
    assert path is not None
    examples = read_lm_file(path, cfg.lm, cfg.data.format, cfg.data.delimiter)
    texts = [
        item if examples.kind == "corpus" else item[0]["content"] for item in examples.items[:256]
    ]
    vectors, tokens = embedder.embed(texts)
    norms = (vectors**2).sum(axis=1) ** 0.5
    if not (abs(norms - 1.0) < 1e-3).all():
        raise DataError(f"embeddings of {path} are not unit length (a broken checkpoint?)")
    cosine = vectors @ vectors.T
    n = len(texts)
    mean_cos = float((cosine.sum() - n) / (n * (n - 1))) if n > 1 else None
    say.info(
        f"embedded {n} texts: {vectors.shape[1]} dimensions, mean pairwise cosine "
        f"{mean_cos if mean_cos is None else round(mean_cos, 4)}"
    )
    return {
        "dimensions": int(vectors.shape[1]),
        "texts_checked": n,
        "mean_tokens": float(sum(tokens) / n) if n else 0.0,
        "mean_pairwise_cosine": mean_cos,
    }
