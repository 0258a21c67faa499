"""Pretrained Hugging Face models: loading, pooled heads, embeddings, a tokenizer adapter.

Every load in foundry goes through `load_pretrained` / `load_tokenizer` here, so the
rules hold everywhere:

- **safetensors only** (`use_safetensors=True`): a checkpoint that has only
  `pytorch_model.bin` (a pickle, which can run code when read) is refused, never read;
- **no remote code**: `trust_remote_code` stays off, so only architectures that ship
  with transformers run;
- `name_or_path` is a local directory when it exists (relative paths are resolved
  against the config file's folder) or starts like a path (`./`, `../`, `/`, `~`), and a
  hub id otherwise; `revision` pins a hub branch, tag or commit.

Shapes: token ids and attention masks are int64 `[B, L]` (mask 1 = real token); hidden
states `[B, L, H]`; pooled vectors `[B, H]`; classifier outputs `[B, n_outputs]`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from foundry.errors import ModelError
from foundry.extras import require

__all__ = [
    "HFTokenizer",
    "PooledClassifier",
    "SequenceClassifier",
    "check_local_model_dir",
    "embed_batch",
    "is_causal_lm",
    "length_batches",
    "load_pretrained",
    "load_pretrained_config",
    "load_tokenizer",
    "pad_batch",
    "pool",
    "quiet_transformers",
    "resolve_source",
    "text_model_outputs",
]

ModelKind = Literal["encoder", "causal_lm", "sequence_classification"]
Pooling = Literal["mean", "cls"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files that are pickles: foundry never opens them."""

_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


# ------------------------------------------------------------------------ locating


def resolve_source(name_or_path: str, base_dir: Path | None = None) -> str:
    """A local model directory as an absolute path, or the hub id unchanged.

    A relative path is looked up under `base_dir` (the config file's folder) first; a
    name that only starts like a path but does not exist is an error rather than a hub
    lookup that would fail later with a confusing message.
    """
    candidate = Path(name_or_path).expanduser()
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    if candidate.exists():
        return str(candidate.resolve())
    if name_or_path.startswith(_PATH_PREFIXES) or Path(name_or_path).expanduser().exists():
        raise ModelError(
            f"model.name_or_path: no directory {candidate}",
            hint="pass a directory holding config.json, *.safetensors and tokenizer files, "
            "or a hub id such as sentence-transformers/all-MiniLM-L6-v2",
        )
    return name_or_path


def is_local(source: str) -> bool:
    return Path(source).is_dir()


def check_local_model_dir(path: Path, *, weights: bool = True) -> None:
    """Refuse a local directory that is not a safetensors transformers checkpoint,
    naming what is wrong (before transformers fails with a less direct message)."""
    if not path.is_dir():
        raise ModelError(f"model.name_or_path: {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model.name_or_path: {path} has no config.json, so it is not a saved "
            "transformers model (save one with model.save_pretrained(directory))"
        )
    if not weights:
        return
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ModelError(
            f"model.name_or_path: {path} has only pickle weights ({', '.join(pickles)}); "
            "foundry loads safetensors only, because unpickling can run arbitrary code",
            hint="convert once where you trust the file: "
            "AutoModel.from_pretrained(dir).save_pretrained(dir) writes model.safetensors",
        )
    raise ModelError(
        f"model.name_or_path: {path} has no weights (no *.safetensors file)",
        hint="save the model with model.save_pretrained(directory)",
    )


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers draws a progress bar per model loaded or saved and notes every newly
    initialised head: keep the console for foundry's own lines (the global settings are
    restored afterwards)."""
    require("llm", "transformers", "pretrained Hugging Face models (model.type hf)")
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # "newly initialised weights" notes: we know
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (its host does not resolve), or None.

    Asked once per process before a hub id is loaded: offline, transformers retries each
    file five times with back-off (~50 s) before failing; this answers in milliseconds,
    and the load then reads the local cache only (`local_files_only`), which still finds
    a model downloaded before."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.getaddrinfo(host or "huggingface.co", 443)
    except OSError as exc:
        return f"{host} does not resolve: {exc.strerror or exc}"
    return None


def _hub_options(source: str) -> dict[str, Any]:
    return {} if is_local(source) or hub_unreachable() is None else {"local_files_only": True}


def _download_error(source: str, what: str, exc: BaseException) -> ModelError:
    reason = " ".join(str(exc).split())[:300]
    if is_local(source):
        return ModelError(f"model.name_or_path: cannot load the {what} from {source}: {reason}")
    offline = hub_unreachable()
    if offline is not None:
        return ModelError(
            f"model.name_or_path: '{source}' is not a local directory and the Hugging Face "
            f"hub cannot be reached ({offline}); it is not in the local cache either",
            hint="pass a local directory holding config.json, *.safetensors weights and the "
            "tokenizer files, or load it once where the hub is reachable",
        )
    return ModelError(
        f"model.name_or_path: could not download {what} '{source}' from the Hugging Face "
        f"hub ({reason})",
        hint="check the id and the network, or pass a local directory holding config.json, "
        "*.safetensors weights and the tokenizer files",
    )


# ------------------------------------------------------------------------- loading


def load_pretrained_config(source: str, revision: str | None = None) -> Any:
    """The transformers `PretrainedConfig` of a hub id or local directory."""
    require("llm", "transformers", "pretrained Hugging Face models (model.type hf)")
    from transformers import AutoConfig

    if is_local(source):
        check_local_model_dir(Path(source), weights=False)
    try:
        return AutoConfig.from_pretrained(
            source, revision=revision, trust_remote_code=False, **_hub_options(source)
        )
    except (OSError, ValueError, KeyError) as exc:
        raise _download_error(source, "the model config", exc) from None


def is_causal_lm(config: Any) -> bool:
    """Whether a checkpoint is a decoder-only language model (GPT-2, Llama...), judged
    by the architecture it was saved with."""
    names = getattr(config, "architectures", None) or []
    return any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names)


def load_pretrained(
    source: str,
    kind: ModelKind,
    *,
    revision: str | None = None,
    **kwargs: Any,
) -> Any:
    """A `PreTrainedModel` from a hub id or local directory, safetensors only.

    kind: `encoder` (AutoModel: hidden states), `causal_lm` (AutoModelForCausalLM),
    `sequence_classification` (AutoModelForSequenceClassification; pass `num_labels`).
    The model comes back in eval mode, float32, on the CPU.
    """
    require("llm", "transformers", "pretrained Hugging Face models (model.type hf)")
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    auto = {
        "encoder": AutoModel,
        "causal_lm": AutoModelForCausalLM,
        "sequence_classification": AutoModelForSequenceClassification,
    }[kind]
    if is_local(source):
        check_local_model_dir(Path(source))
    try:
        with quiet_transformers():
            model = auto.from_pretrained(
                source,
                revision=revision,
                use_safetensors=True,  # never unpickle
                trust_remote_code=False,  # never run code from the checkpoint
                dtype=torch.float32,
                **_hub_options(source),
                **kwargs,
            )
    except (OSError, ValueError, KeyError) as exc:
        raise _download_error(source, "model", exc) from None
    return model.eval()


def load_tokenizer(source: str, revision: str | None = None) -> Any:
    """The checkpoint's tokenizer (a `PreTrainedTokenizerBase`)."""
    require("llm", "transformers", "pretrained Hugging Face models (model.type hf)")
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(
                source, revision=revision, trust_remote_code=False, **_hub_options(source)
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _download_error(source, "the tokenizer of", exc) from None


# ------------------------------------------------------------------------- pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Token states `[B, L, H]` → one vector per row `[B, H]`.

    `mean`: average over real tokens (sentence-transformers' mean pooling, padding
    ignored); `cls`: the first token's state (BERT's [CLS]).
    """
    if how == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), int64 [B, L]."""
    length = max(1, max((len(s) for s in sequences), default=1))
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


def length_batches(ids: list[list[int]], size: int) -> Iterator[list[int]]:
    """Row indices in batches of similar length, so that a batch pads little."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


@torch.inference_mode()
def text_model_outputs(
    model: nn.Module, ids: list[list[int]], pad_id: int, *, batch_size: int = 32
) -> np.ndarray:
    """Outputs float32 `[N, n_outputs]` of a `(input_ids, attention_mask) → [B, n_outputs]`
    model, in row order (batched by length, then put back in order)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(ids), 0), dtype=np.float32)
    for rows in length_batches(ids, batch_size):
        batch, mask = pad_batch([ids[i] for i in rows], pad_id)
        result = model(batch.to(device), mask.to(device)).float().cpu().numpy()
        if out.shape[1] == 0:
            out = np.zeros((len(ids), result.shape[1]), dtype=np.float32)
        out[rows] = result
    return out if len(ids) else np.zeros((0, 1), dtype=np.float32)


def embed_batch(
    encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, how: Pooling
) -> torch.Tensor:
    """L2-normalised sentence embeddings `[B, H]` from an encoder (AutoModel)."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return F.normalize(pool(hidden, attention_mask, how), p=2, dim=-1)


# ------------------------------------------------------------------------- classifiers


class PooledClassifier(nn.Module):
    """Any encoder (`self.encoder`, an AutoModel, possibly wrapped by peft) → pooled
    hidden state → dropout → linear head (`self.head`) → `[B, n_outputs]`.

    Works on checkpoints that have no classification head of their own, such as
    sentence-transformers models; the head is new and always trained.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        hidden_size: int,
        n_outputs: int,
        pooling: Pooling,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling: Pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, n_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights foundry saves itself (`head.*`); the encoder goes through
        `save_pretrained`."""
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}

    def load_head(self, weights: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items()})


class SequenceClassifier(nn.Module):
    """AutoModelForSequenceClassification (`self.encoder`, its own head included) with
    the same call as `PooledClassifier`: `(input_ids, attention_mask) → [B, n_outputs]`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).logits

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {}  # the head is part of the transformers model and saved with it

    def load_head(self, weights: dict[str, torch.Tensor]) -> None:
        if weights:
            raise ModelError(f"unexpected head weights {sorted(weights)[:3]}")


# ----------------------------------------------------------------------- tokenizer


class HFTokenizer:
    """A transformers tokenizer behind foundry's `TokenizerLike` contract
    (`foundry.lm.tokenizer`), so LM data loading, training and generation use it as
    they use our own BPE tokenizer.

    Chat: `chat_template` is the config's `lm.chat_template` when given, else the
    tokenizer's own template, else None (foundry's default `<|role|>` layout). Templates
    are rendered by `foundry.lm.data.render_chat` in training and serving alike, with the
    variables Hugging Face templates expect (`bos_token`, `eos_token`...), so a prompt
    at inference is tokenized exactly as in training.
    """

    END_OF_TURN_TOKENS = ("<|end|>", "<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|eot|>")
    """End-of-turn markers of common chat templates: when one is a single token of the
    vocabulary, generation stops on it as on EOS."""

    def __init__(
        self, tokenizer: Any, *, chat_template: str | None = None, eos_ids: tuple[int, ...] = ()
    ) -> None:
        self.hf = tokenizer
        # transformers sets truncation on the shared Rust tokenizer per call, and threads
        # doing so at once have failed with "Already borrowed" (huggingface/tokenizers
        # #537, transformers #47085); the API calls from several threads.
        self._lock = threading.Lock()
        self.chat_template: str | None = chat_template or getattr(tokenizer, "chat_template", None)
        # Encoders (BERT) have no EOS; their [SEP] ends a text. Causal LMs need a real
        # EOS: foundry.families.hf.causal refuses a tokenizer without one.
        eos = next(
            (i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id) if i is not None), 0
        )
        self.eos_id: int = int(eos)
        # Models without a padding token (GPT-2) pad with EOS: padded positions are
        # masked from attention and never targets, so the id itself does not matter.
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad) if pad is not None else self.eos_id
        vocab = tokenizer.get_vocab()
        markers = [vocab[t] for t in self.END_OF_TURN_TOKENS if t in vocab]
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys([self.eos_id, *eos_ids, *markers]))
        self.vocab_size: int = len(tokenizer)

    @property
    def template_variables(self) -> dict[str, str]:
        """What Hugging Face's `apply_chat_template` hands a template besides messages."""
        names = ("bos_token", "eos_token", "pad_token", "unk_token")
        return {n: str(getattr(self.hf, n)) for n in names if getattr(self.hf, n, None)}

    def encode(self, text: str) -> list[int]:
        """Token ids, no BOS/EOS added (special-token strings in `text` map to their ids)."""
        with self._lock:
            return list(self.hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        with self._lock:
            out = self.hf(list(texts), add_special_tokens=False)
        return [list(ids) for ids in out["input_ids"]]

    def encode_inputs(self, texts: list[str], *, max_length: int) -> list[list[int]]:
        """Encoder inputs: special tokens added (`[CLS] ... [SEP]`), truncated to
        `max_length` tokens, not padded."""
        with self._lock:
            out = self.hf(list(texts), truncation=True, max_length=max_length)
        return [list(ids) for ids in out["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        # Special tokens kept and spaces not "cleaned up": the text is exactly what the
        # ids say, and a prefix of the ids decodes to a prefix of the text (streaming).
        with self._lock:
            return self.hf.decode(
                list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )

    def render_chat(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """Chat messages → prompt text, ending where the assistant's reply starts."""
        from foundry.lm.data import render_chat

        return render_chat(
            messages,
            self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.template_variables,
        )

    def info(self) -> dict[str, Any]:
        """What a model manifest records about this tokenizer."""
        return {
            "type": "hf",
            "class": type(self.hf).__name__,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "stop_ids": list(self.stop_ids),
            "chat_template": "custom" if self.chat_template else "default",
        }
