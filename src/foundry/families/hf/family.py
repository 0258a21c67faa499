"""Hugging Face checkpoints: `model: {type: hf}`, fine-tuned or packaged as they are.

    task classification / regression   text column → label or number: foundry's data
                                       loading, splits, target encoding and metrics; a
                                       pooled head (or the checkpoint's own
                                       sequence-classification head); full or LoRA
                                       fine-tuning (`foundry.lm.hf_finetune`)   classify.py
    task causal_lm                     a corpus or instruction data, next-token loss
                                       (completion tokens only for instructions), full
                                       or LoRA                                  causal.py
    task embedding                     no training: the encoder packaged for sentence
                                       embeddings (mean or cls pooling, L2)     embedding.py

One family, three tasks: `prepare` resolves the checkpoint and `model.task` (refusing
combinations that cannot work) and hands every later stage to that task's module, which
implements the same stages (see `foundry.families.interface`). Each package's manifest
says everything `foundry.lm.hf_model` needs to load it without the original config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from foundry.config.schema import FoundryConfig, HFModelConfig
from foundry.errors import ConfigError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.registry import register_family

__all__ = ["HFFamily", "resolve_task"]

RunKind = Literal["predict", "causal_lm", "embedding"]


@dataclass
class HFData:
    kind: Any
    """The task's module (classify, causal, embedding): it runs the later stages."""
    source: str
    """The resolved hub id or absolute directory."""
    hf_config: Any
    data: Any
    """What the task's `prepare` returned."""


@register_family("hf")
class HFFamily:
    name = "hf"
    supports = frozenset({"explain"})
    """Integrated gradients over tokens, for the classify task (`evaluation.explain`)."""

    def prepare(self, run: Run) -> HFData:
        from foundry.models.hf import load_pretrained_config, resolve_source

        cfg, say = run.config, run.say
        spec = cfg.model
        assert isinstance(spec, HFModelConfig)
        source = resolve_source(spec.name_or_path, run.loaded.base_dir)
        hf_config = load_pretrained_config(source, spec.revision)
        kind = resolve_task(cfg, hf_config)
        say.info(
            f"model: {spec.name_or_path} ({hf_config.model_type}, "
            f"{', '.join(hf_config.architectures or ['?'])}) → {kind}"
            + (f", LoRA r={spec.lora.r}" if spec.lora else "")
        )
        if kind == "embedding" and (run.on_epoch_end is not None or not run.register):
            raise ConfigError(
                "model.task embedding trains nothing (the pretrained encoder is packaged as "
                "it is), so there is nothing to tune",
                hint="tune a classification, regression or causal_lm model; package an "
                "embedder with foundry train",
            )
        module = _task_module(kind)
        return HFData(module, source, hf_config, module.prepare(run, source, hf_config))

    def fit(self, data: HFData, train: Any, run: Run) -> Fitted:
        fitted = data.kind.fit(data, train, run)
        fitted.state["task"] = data.kind  # summarize gets no data: it finds its task here
        return fitted

    def evaluate(self, fitted: Fitted, data: HFData, run: Run) -> Evaluation:
        return data.kind.evaluate(fitted, data, run)

    def package(
        self, fitted: Fitted, data: HFData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        return data.kind.package(fitted, data, evaluation, run)

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        fitted.state["task"].summarize(ref, fitted, evaluation, run)

    def load(self, package: Any, ref: str) -> Any:
        from foundry.lm.hf_model import load_hf_package

        return load_hf_package(package, ref)

    def outputs(self, model: Any, batch: Any) -> Any:
        """Logits / values of a classifier or regressor for a table of texts, embeddings
        of a list of texts, greedy continuations of a language model's prompts."""
        if hasattr(model, "table_outputs"):
            return model.table_outputs(batch)
        if hasattr(model, "embed"):
            return model.embed(list(batch))[0]
        from foundry.lm.generate import greedy_texts

        return greedy_texts(model, batch)


def _task_module(kind: RunKind) -> Any:
    if kind == "causal_lm":
        import foundry.families.hf.causal as causal

        return causal
    if kind == "embedding":
        import foundry.families.hf.embedding as embedding

        return embedding
    import foundry.families.hf.classify as classify

    return classify


def resolve_task(cfg: FoundryConfig, hf_config: Any) -> RunKind:
    """What kind of run `model.task` asks for on this checkpoint; refuses combinations
    that cannot work, naming the key to change."""
    from foundry.models.hf import is_causal_lm

    spec = cfg.model
    assert isinstance(spec, HFModelConfig)
    decoder = is_causal_lm(hf_config)
    arch = ", ".join(getattr(hf_config, "architectures", None) or [hf_config.model_type])
    task = spec.task
    if task == "auto":
        if cfg.features.target is not None:
            return "predict"
        if decoder:
            return "causal_lm"
        raise ConfigError(
            f"model.task is auto, features.target is not set and {spec.name_or_path} is "
            f"not a causal language model ({arch})",
            hint="set features.target to fine-tune a classifier or regressor on it, or "
            "model.task: embedding to package it for sentence embeddings",
        )
    if task == "causal_lm":
        if not decoder:
            raise ConfigError(
                f"model.task is causal_lm but {spec.name_or_path} is not a causal language "
                f"model ({arch}); use a decoder checkpoint (GPT-2, Llama, Qwen...)"
            )
        return "causal_lm"
    if task == "embedding":
        return "embedding"
    if cfg.features.target is None:
        raise ConfigError(f"model.task is {task}: set features.target, the column to predict")
    return "predict"
