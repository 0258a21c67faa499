"""Fine-tuning a pretrained causal LM (GPT-2, Llama, Qwen...) on a corpus or on
instructions, fully or with LoRA adapters.

data (corpus or instructions, split by document) → the checkpoint's own tokenizer and
chat template → token rows with loss masks (`foundry.lm.data`: completion tokens only
for instructions) → `fit_lm` (`foundry.lm.train`) → held-out loss and perplexity →
package (adapter or full model + tokenizer; see `foundry.lm.hf_model`).

Read top to bottom; the data and training steps are the ones our own GPT uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from foundry.config import LoadedConfig
from foundry.config.schema import HFModelConfig
from foundry.console import Reporter
from foundry.data.fingerprint import file_fingerprint
from foundry.errors import ConfigError, ModelError
from foundry.lm.data import DEFAULT_CHAT_TEMPLATE, encode_examples, load_lm_data
from foundry.lm.hf_finetune import finetune_defaults
from foundry.lm.hf_pipeline import hf_card_section, hf_manifest_section, register_hf
from foundry.lm.metrics import lm_metrics
from foundry.lm.train import fit_lm
from foundry.models.hf import HFTokenizer, load_pretrained, load_tokenizer
from foundry.pipeline import TrainResult

__all__ = ["TASK", "context_length_of", "train_causal_lm"]

TASK = "language_modeling"
"""The task a causal LM package records in the registry (as our GPT's do)."""


def train_causal_lm(
    loaded: LoadedConfig,
    source: str,
    hf_config: Any,
    *,
    resume: bool,
    out_dir: Path,
    progress: bool,
    say: Reporter,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Fine-tune the causal LM at `source` on the config's LM data and register it
    (`register=False`: write the package to `out_dir/package`, for a tuning trial)."""
    from foundry.models.hf_lora import apply_lora, parameter_counts

    started = time.perf_counter()
    cfg = loaded.config
    spec, lm = cfg.model, cfg.lm
    assert isinstance(spec, HFModelConfig)

    # ---- tokenizer and sequence length
    tokenizer = HFTokenizer(load_tokenizer(source, spec.revision), chat_template=lm.chat_template)
    if tokenizer.hf.eos_token_id is None:
        raise ModelError(
            f"the tokenizer of {spec.name_or_path} has no end-of-sequence token (eos_token): "
            "a language model needs one to learn where a text or a reply ends"
        )
    context_length = context_length_of(hf_config)
    block_size = lm.block_size or spec.max_length
    if block_size > context_length:
        raise ConfigError(
            f"lm.block_size / model.max_length is {block_size} but {spec.name_or_path} "
            f"attends over at most {context_length} tokens"
        )

    # ---- data: documents or conversations, split, tokenized with loss masks
    data = load_lm_data(loaded)
    unit = "documents" if data.kind == "corpus" else "conversations"
    say.info(
        f"data: {cfg.data.path} ({data.kind}; {unit} train/val/test = "
        f"{len(data.train)}/{len(data.val)}/{len(data.test)}); chat template: "
        + ("the tokenizer's" if tokenizer.chat_template else "foundry's default")
    )
    splits = {
        name: encode_examples(
            getattr(data, name),
            tokenizer,
            block_size=block_size,
            loss_on=lm.loss_on,
            chat_template=tokenizer.chat_template,
            **tokenizer.template_variables,
        )
        for name in ("train", "val", "test")
    }
    say.info(
        "target tokens train/val/test = "
        + "/".join(str(splits[n].n_targets) for n in ("train", "val", "test"))
        + f"; block_size {block_size}"
    )

    # ---- model: pretrained weights, LoRA adapters if asked (seeded: A is random)
    train_cfg, filled = finetune_defaults(cfg.train, lora=spec.lora is not None)
    if filled:
        say.info(f"fine-tuning defaults for train keys not set: {', '.join(filled)}")
    torch.manual_seed(train_cfg.seed)
    model = load_pretrained(source, "causal_lm", revision=spec.revision)
    if spec.lora is not None:
        model = apply_lora(model, spec.lora, "CAUSAL_LM")
    trainable, total = parameter_counts(model)
    say.info(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")

    # ---- train: next-token loss over the masked targets
    fitted = fit_lm(
        model,
        splits["train"],
        splits["val"],
        train_cfg,
        out_dir,
        resume=resume,
        progress=progress and not say.quiet,
        log=None if say.quiet else say.info,
        on_epoch_end=on_epoch_end,
    )

    # ---- evaluate: loss, perplexity and the unigram baseline on held-out tokens
    model.eval()
    metrics = lm_metrics(
        model,
        splits,
        evaluate_split=cfg.evaluate.split,
        vocab_size=tokenizer.vocab_size,
        batch_size=train_cfg.batch_size,
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # ---- package
    hf = hf_manifest_section(spec, source, hf_config, task="causal_lm")
    hf.update(
        context_length=context_length,
        chat_template=lm.chat_template,
        parameters={"trainable": trainable, "total": total},
        train_defaults_filled=filled,
    )
    manifest = _manifest(loaded, hf, data, splits, block_size, fitted, train_cfg, tokenizer)
    if data.pii is not None:
        manifest["pii"] = data.pii
    card = _card(cfg.name, cfg.description, manifest, metrics) + hf_card_section(hf)
    ref, path = register_hf(
        cfg,
        model,
        tokenizer,
        hf,
        manifest,
        metrics,
        card,
        head={},
        out_dir=out_dir,
        say=say,
        register=register,
    )
    say.info(
        f"{ref or cfg.name} — {metrics['split']} perplexity {metrics['perplexity']:.2f} "
        f"(unigram baseline {metrics['unigram_perplexity']:.2f}, {metrics['tokens']} tokens)"
    )
    return TrainResult(
        model_ref=ref,
        run_dir=out_dir,
        metrics=metrics,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        seconds=time.perf_counter() - started,
        package_path=path,
    )


def context_length_of(hf_config: Any) -> int:
    """Most positions the checkpoint attends over (GPT-2: n_positions; Llama:
    max_position_embeddings)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(
        f"cannot tell the context length of this {hf_config.model_type} checkpoint "
        "(no max_position_embeddings in config.json)"
    )


def _manifest(
    loaded: LoadedConfig,
    hf: dict[str, Any],
    data: Any,
    splits: dict[str, Any],
    block_size: int,
    fitted: Any,
    train_cfg: Any,
    tokenizer: HFTokenizer,
) -> dict[str, Any]:
    from foundry.lm.hf_pipeline import manifest_base

    cfg = loaded.config
    paths = [loaded.resolve(p) for p in (cfg.data.path, cfg.data.val_path, cfg.data.test_path)]
    return {
        **manifest_base(cfg, hf),
        "task": TASK,
        "context_length": hf["context_length"],
        "lm": cfg.lm.model_dump(mode="json"),
        "tokenizer": {
            **tokenizer.info(),
            "chat_template": tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE,
        },
        "fingerprint": file_fingerprint(paths),
        "data": {
            "path": cfg.data.path,
            "kind": data.kind,
            "examples": {n: len(getattr(data, n)) for n in ("train", "val", "test")},
            "target_tokens": {n: splits[n].n_targets for n in ("train", "val", "test")},
            "block_size": block_size,
        },
        "training": {
            "best_epoch": fitted.best_epoch,
            "epochs_run": fitted.epochs_run,
            "seconds": round(fitted.seconds, 3),
            "stopped_early": fitted.stopped_early,
            "best_metrics": fitted.best_metrics,
            "train": train_cfg.model_dump(mode="json"),
        },
    }


def _card(name: str, description: str, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    data, training = manifest["data"], manifest["training"]
    ex, tok = data["examples"], data["target_tokens"]
    lines = [
        f"# {name}",
        "",
        description or "_No description given (set `description` in the config)._",
        "",
        "## Data",
        f"- source: `{data['path']}` ({data['kind']})",
        f"- fingerprint: `{manifest['fingerprint']}`",
        f"- examples: train {ex['train']}, val {ex['val']}, test {ex['test']}",
        f"- target tokens: train {tok['train']}, val {tok['val']}, test {tok['test']}"
        + (" (completion tokens only)" if data["kind"] == "instructions" else ""),
        "",
        "## Training",
        f"- {training['epochs_run']} epochs (best {training['best_epoch']}) in "
        f"{training['seconds']:.1f} s, block size {data['block_size']} tokens",
        "",
        f"## Metrics ({metrics['split']} split, {metrics['tokens']} tokens)",
        f"- perplexity: {metrics['perplexity']:.3f} (unigram baseline "
        f"{metrics['unigram_perplexity']:.3f})",
        f"- loss: {metrics['loss']:.4f} nats/token",
    ]
    return "\n".join(lines) + "\n"
