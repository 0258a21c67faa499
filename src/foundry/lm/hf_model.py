"""Registered Hugging Face packages, loaded for prediction, embeddings or generation.

    obj = load_hf_package(registry.load("reviews-minilm:1"), "reviews-minilm:1")
    obj.predict_texts(["great film", "dull"])   # classifier / regressor (HFTextPredictor)
    obj.embed(["a sentence"])                   # task embedding (HFEmbedder)
    obj.generate(["Hello"], params)             # causal LM (HFLanguageModel)

What a package holds (`manifest["hf"]` says which):

    weights: full      hf/        config.json + model.safetensors + tokenizer files: a
                                  complete transformers directory (`from_pretrained` works
                                  on it directly)
    weights: adapter   adapter/   adapter_config.json + adapter_model.safetensors +
                                  tokenizer files; the base model is loaded again from
                                  `manifest["hf"]["source"]` (hub id or local directory,
                                  at the commit recorded when it was downloaded), the
                                  adapter applied and merged
    model.safetensors             the pooled head's weights (`head.*`), or nothing

Nothing here reads a pickle or runs code from a checkpoint (see `foundry.models.hf`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import foundry.crypto as crypto
from foundry.config.schema import GenerationConfig, LMConfig
from foundry.data.encoders.target import TargetEncoder
from foundry.data.encoders.text import texts_of
from foundry.data.schema import TaskInfo
from foundry.errors import DataError, ModelError
from foundry.evaluation.metrics import probabilities
from foundry.lm.api import Completion, Delta
from foundry.models.hf import (
    HFTokenizer,
    PooledClassifier,
    SequenceClassifier,
    embed_batch,
    length_batches,
    load_pretrained,
    load_tokenizer,
    pad_batch,
    text_model_outputs,
)
from foundry.registry import Package
from foundry.registry.integrity import Confinement

__all__ = [
    "HFEmbedder",
    "HFLanguageModel",
    "HFTextPredictor",
    "load_hf_network",
    "load_hf_package",
]

BATCH = 32
"""Texts per forward pass when predicting or embedding (sorted by length first, so a
batch pads little)."""


def load_hf_package(
    package: Package, ref: str, *, device: str | torch.device = "cpu"
) -> HFLanguageModel | HFEmbedder | HFTextPredictor:
    """The object that serves a registered `hf` package, by its task, on `device`."""
    hf = hf_section(package)
    model, tokenizer = load_hf_network(package)
    model = model.to(device)
    task = hf["task"]
    if task == "causal_lm":
        lm = LMConfig.model_validate(package.manifest.get("lm", {}))
        return HFLanguageModel(ref, model, tokenizer, hf, generation=lm.generation)
    if task == "embedding":
        return HFEmbedder(ref, model, tokenizer, hf)
    from foundry.predictor import trust_state

    task_info = TaskInfo.from_dict(package.manifest["task"])
    scrubber = trust_state(package.manifest, ref=ref).get("scrubber")
    return HFTextPredictor(ref, model, tokenizer, hf, task_info, scrubber=scrubber)


def hf_section(package: Package) -> dict[str, Any]:
    hf = package.manifest.get("hf")
    needed = ("task", "weights", "directory", "source", "max_length")
    if not isinstance(hf, dict) or any(k not in hf for k in needed):
        raise ModelError(
            f"{package.path}/foundry.json has no complete 'hf' section "
            f"(needs {', '.join(needed)}): not a Hugging Face model package"
        )
    return hf


def load_hf_network(package: Package) -> tuple[nn.Module, HFTokenizer]:
    """The network (eval mode, CPU) and tokenizer a package describes; LoRA adapters are
    merged into the base weights."""
    hf = hf_section(package)
    directory = Confinement([package.path]).require(
        package.path / str(hf["directory"]), what="the folder hf.directory of foundry.json names,"
    )
    if not directory.is_dir():
        raise ModelError(f"model package {package.path} is missing its {hf['directory']}/ folder")
    # transformers and PEFT read folders by path: an encrypted one is decrypted into a
    # private temporary folder for the load and deleted after (foundry.crypto).
    with crypto.plain_directory(directory) as plain:
        return _load_hf_network(package, hf, plain)


def _load_hf_network(
    package: Package, hf: dict[str, Any], directory: Path
) -> tuple[nn.Module, HFTokenizer]:
    tokenizer = HFTokenizer(load_tokenizer(str(directory)), chat_template=hf.get("chat_template"))
    task, head = hf["task"], hf.get("head", "pooled")
    kind = {"causal_lm": "causal_lm", "embedding": "encoder"}.get(task) or (
        "encoder" if head == "pooled" else "sequence_classification"
    )
    extra: dict[str, Any] = {}
    if kind == "sequence_classification":
        extra["num_labels"] = int(package.manifest["n_outputs"])
    if hf["weights"] == "adapter":
        from foundry.models.hf_lora import load_adapter

        base_source = hf["source"]
        if not Path(base_source).is_absolute() or Path(base_source).exists():
            base = load_pretrained(
                base_source, kind, revision=hf.get("commit") or hf.get("revision"), **extra
            )
        else:
            raise ModelError(
                f"model package {package.path} holds a LoRA adapter whose base model "
                f"directory {base_source} no longer exists",
                hint="restore that directory (the adapter needs the base weights)",
            )
        model = load_adapter(base, directory, merge=True)
    else:
        model = load_pretrained(str(directory), kind, **extra)
    if kind == "sequence_classification":
        if model.config.pad_token_id is None:  # as in training: GPT-2 finds its last token
            model.config.pad_token_id = tokenizer.pad_id
        model = SequenceClassifier(model)
    elif task in ("classification", "regression"):
        model = PooledClassifier(
            model,
            hidden_size=int(hf["hidden_size"]),
            n_outputs=int(package.manifest["n_outputs"]),
            pooling=hf.get("pooling", "mean"),
        )
        try:
            model.load_head(package.weights)
        except RuntimeError as exc:
            raise ModelError(
                f"{package.path}/model.safetensors does not fit the head: {exc}"
            ) from None
    return model.eval(), tokenizer


# ------------------------------------------------------------------- classification


class HFTextPredictor:
    """A fine-tuned text classifier or regressor: texts → labels + probabilities, or
    values (the same dicts `/v1/models/{name}/predict` returns for tabular models)."""

    def __init__(
        self,
        ref: str,
        model: nn.Module,
        tokenizer: HFTokenizer,
        hf: dict[str, Any],
        task: TaskInfo,
        scrubber: Any = None,
    ) -> None:
        self.ref = ref
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.scrubber = scrubber
        """The training data's `PIIScrubber` (`data.pii`), applied to every input text."""
        self.text_column: str = hf["text_column"]
        self.max_length: int = int(hf["max_length"])

    @property
    def name(self) -> str:
        return self.ref.split(":")[0]

    @property
    def input_columns(self) -> list[str]:
        return [self.text_column]

    def labelled_outputs(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(encoded targets [N], raw outputs [N, n_outputs]) of a labelled frame, as
        `foundry.predictor.Predictor.labelled_outputs`."""
        self._require_text(df)
        target = TargetEncoder(
            name=self.task.target,
            task=self.task.task,
            classes=[str(c) for c in self.task.classes],
            mean=self.task.target_mean,
            std=self.task.target_std,
        )
        return target.transform(df[self.task.target]), self.outputs(self._texts(df))

    def _require_text(self, df: pd.DataFrame) -> None:
        if self.text_column not in df.columns:
            raise DataError(
                f"input data lacks column '{self.text_column}' that model '{self.ref}' needs "
                f"(columns: {', '.join(map(str, df.columns))})"
            )

    def _texts(self, df: pd.DataFrame) -> list[str]:
        """The text column as the model saw it in training: PII scrubbed the same way."""
        if self.scrubber is not None:
            df = self.scrubber.transform(df[[self.text_column]])
        return texts_of(df[self.text_column])

    def outputs(self, texts: list[str]) -> np.ndarray:
        """Raw outputs float32 [N, n_outputs] (logits, or the standardised value)."""
        ids = self.tokenizer.encode_inputs(list(texts), max_length=self.max_length)
        return text_model_outputs(self.model, ids, self.tokenizer.pad_id, batch_size=BATCH)

    def predict_texts(self, texts: list[str]) -> list[dict[str, Any]]:
        """One dict per text: `{"label", "probabilities": {class: p}}` or `{"value"}`."""
        outputs = self.outputs(texts)
        if not self.task.is_classification:
            values = outputs[:, 0].astype(np.float64) * self.task.target_std + self.task.target_mean
            return [{"value": v if math.isfinite(v) else None} for v in values.tolist()]
        proba = probabilities(outputs, self.task)  # float64 [N, n_classes]
        classes = [str(c) for c in self.task.classes]
        return [
            {
                "label": classes[int(row.argmax())],
                "probabilities": dict(zip(classes, row.tolist(), strict=True)),
            }
            for row in proba
        ]

    def predict_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Records keyed by the text column (what the predict route receives)."""
        missing = [i for i, r in enumerate(records) if self.text_column not in r]
        if missing:
            raise DataError(
                f"record {missing[0]} lacks '{self.text_column}', the text input of "
                f"model '{self.ref}'"
            )
        column = pd.Series([r[self.text_column] for r in records])
        return self.predict_texts(self._texts(pd.DataFrame({self.text_column: column})))

    def table_outputs(self, df: pd.DataFrame) -> np.ndarray:
        """`outputs` of the text column of `df` (as `Predictor.outputs(df)` reads a table);
        a table without the column is refused, naming it."""
        self._require_text(df)
        return self.outputs(self._texts(df))

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """Like `foundry.predictor.Predictor.predict`: `<target>` and one
        `probability_<class>` column per class (classifiers)."""
        outputs = self.table_outputs(df)
        target = self.task.target
        if not self.task.is_classification:
            values = outputs[:, 0].astype(np.float64) * self.task.target_std + self.task.target_mean
            return pd.DataFrame({target: values}, index=df.index)
        proba = probabilities(outputs, self.task)
        classes = np.asarray(self.task.classes, dtype=object)
        frame: dict[str, Any] = {target: classes[proba.argmax(axis=1)]}
        for i, cls in enumerate(self.task.classes):
            frame[f"probability_{cls}"] = proba[:, i]
        return pd.DataFrame(frame, index=df.index)


# ------------------------------------------------------------------------ embeddings


class HFEmbedder:
    """Sentence embeddings: pooled token states (mean by default), L2-normalised —
    sentence-transformers' recipe for checkpoints such as all-MiniLM-L6-v2."""

    def __init__(
        self, ref: str, model: nn.Module, tokenizer: HFTokenizer, hf: dict[str, Any]
    ) -> None:
        self.ref = ref
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = hf.get("pooling", "mean")
        self.max_length: int = int(hf["max_length"])
        self.dimensions: int = int(hf["hidden_size"])

    def count_tokens(self, text: str) -> int:
        """Tokens `embed` reads of `text` (special tokens included, after truncation)."""
        return len(self.tokenizer.encode_inputs([text], max_length=self.max_length)[0])

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """([N, dimensions] float32, unit length; input tokens per text, after truncation)."""
        ids = self.tokenizer.encode_inputs(list(texts), max_length=self.max_length)
        vectors = np.zeros((len(ids), self.dimensions), dtype=np.float32)
        for rows in length_batches(ids, BATCH):
            batch, mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_id)
            device = next(self.model.parameters()).device
            vectors[rows] = (
                embed_batch(self.model, batch.to(device), mask.to(device), self.pooling)
                .cpu()
                .numpy()
            )
        return vectors, [len(i) for i in ids]


# ------------------------------------------------------------------- generation


class HFLanguageModel:
    """A causal LM behind the `LanguageModel` protocol, generating through foundry's
    engine (`foundry.lm.generate`) with the transformers step adapter."""

    def __init__(
        self,
        ref: str,
        model: nn.Module,
        tokenizer: HFTokenizer,
        hf: dict[str, Any],
        *,
        generation: GenerationConfig | None = None,
    ) -> None:
        from foundry.lm.generate import GenerationEngine
        from foundry.lm.hf_step import HFCausalLMStep

        self.ref = ref
        self.model = model
        self.tokenizer = tokenizer
        self.context_length: int = int(hf["context_length"])
        self.generation = generation or GenerationConfig()
        """The defaults the config's `lm.generation` set."""
        self.engine = GenerationEngine(
            HFCausalLMStep(model),
            tokenizer,
            context_length=self.context_length,
            device=next(model.parameters()).device,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.render_chat(messages, add_generation_prompt=True)

    def generate(self, prompts: list[str], params: GenerationConfig) -> list[Completion]:
        return self.engine.generate(prompts, self._params(params))

    def stream(self, prompt: str, params: GenerationConfig) -> Iterator[Delta]:
        return self.engine.stream(prompt, self._params(params))

    def continuous_batcher(self, **settings: Any) -> Any:
        """A continuous-batching engine over this model (`foundry.lm.continuous`);
        `settings` are ContinuousBatcher's keyword arguments."""
        from foundry.lm.continuous import ContinuousBatcher
        from foundry.lm.hf_step import HFCacheIO, batch_invariant_attention

        # Plain matmul + softmax attention: the SDPA kernel on CPU splits its work by
        # batch size, so a row would get other low bits alone than among others (see
        # foundry.lm.continuous). This model object then serves the batcher only.
        batch_invariant_attention(self.model)
        return ContinuousBatcher(self.engine, HFCacheIO(), adjust=self._params, **settings)

    @functools.cached_property
    def _end_of_turn_is_a_token(self) -> bool:
        """`get_vocab()` copies the whole vocabulary (~0.4 ms): asked once, not per request."""
        from foundry.lm.tokenizer import END_OF_TURN

        return END_OF_TURN in self.tokenizer.hf.get_vocab()

    def _params(self, params: GenerationConfig) -> GenerationConfig:
        """With foundry's default chat layout on a tokenizer that lacks its `<|end|>`
        as one token, the marker is text: stop on it as a string."""
        from foundry.lm.tokenizer import END_OF_TURN

        if self.tokenizer.chat_template is not None or END_OF_TURN in params.stop:
            return params
        if self._end_of_turn_is_a_token:  # one token: a stop id already
            return params
        return params.model_copy(update={"stop": [*params.stop, END_OF_TURN]})
