"""`foundry train` for `model.type: gpt`: a language model from scratch on your text.

data (corpus or instructions, split by document) → BPE tokenizer trained on the train
split → token rows → GPT → `fit_lm` → held-out loss, perplexity and the unigram
baseline → registry package (weights, tokenizer.json, manifest, card).

Read top to bottom; each step is a call into the module that owns it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from foundry.config import LoadedConfig, dump_config
from foundry.config.schema import FoundryConfig, GPTConfig
from foundry.console import Reporter
from foundry.data.fingerprint import file_fingerprint
from foundry.errors import ConfigError
from foundry.lm.data import (
    DEFAULT_CHAT_TEMPLATE,
    LMData,
    encode_examples,
    load_lm_data,
    tokenizer_texts,
)
from foundry.lm.metrics import lm_metrics
from foundry.lm.tokenizer import BPETokenizer
from foundry.lm.train import fit_lm
from foundry.models.gpt import GPT
from foundry.pipeline import TrainResult, run_directory, store_package
from foundry.training.loop import FitResult

__all__ = ["train_gpt"]

TASK = "language_modeling"
"""The task a GPT package records (registry index and manifest)."""


def train_gpt(
    loaded: LoadedConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Train, evaluate and register the GPT a config describes (see `foundry.train`).

    `on_epoch_end(record)` gets each epoch's metrics; `register=False` writes the package
    to `<run_dir>/package` instead of the registry (what `foundry tune` trials do).
    """
    cfg = loaded.config
    gpt = cfg.model
    assert isinstance(gpt, GPTConfig)
    lm = cfg.lm
    say = Reporter(quiet=quiet)
    started = time.perf_counter()

    block_size = lm.block_size or gpt.context_length
    if block_size > gpt.context_length:
        raise ConfigError(
            f"lm.block_size ({block_size}) is longer than model.context_length "
            f"({gpt.context_length}); the model cannot attend over it"
        )

    # ---- data, split by document / conversation
    data = load_lm_data(loaded)
    unit = "documents" if data.kind == "corpus" else "conversations"
    say.info(
        f"data: {cfg.data.path} ({data.kind}; {unit} train/val/test = "
        f"{len(data.train)}/{len(data.val)}/{len(data.test)})"
    )

    out_dir = run_directory(loaded, run_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(dump_config(cfg), indent=2))
    say.info(f"run directory: {out_dir}")

    # ---- tokenizer: learned on the training split only (a resumed run reuses its own)
    tokenizer_file = out_dir / "tokenizer.json"
    if resume and tokenizer_file.is_file():
        tokenizer = BPETokenizer.from_json(tokenizer_file.read_text(encoding="utf-8"))
    else:
        tokenizer = BPETokenizer.train(
            tokenizer_texts(data.train, lm.chat_template), gpt.vocab_size
        )
        tokenizer_file.write_text(tokenizer.to_json(), encoding="utf-8")

    # ---- token rows
    splits = {
        name: encode_examples(
            getattr(data, name),
            tokenizer,
            block_size=block_size,
            loss_on=lm.loss_on,
            chat_template=lm.chat_template,
        )
        for name in ("train", "val", "test")
    }
    say.info(
        f"tokenizer: {tokenizer.vocab_size} tokens; target tokens train/val/test = "
        + "/".join(str(splits[name].n_targets) for name in ("train", "val", "test"))
        + f"; block_size {block_size}"
    )

    # ---- model and training
    torch.manual_seed(cfg.train.seed)  # weights are initialised from this seed
    model = GPT(gpt, vocab_size=tokenizer.vocab_size)
    say.info(
        f"model: GPT {gpt.n_layers} layers x {gpt.d_model}, {model.num_parameters():,} parameters"
    )
    fitted = fit_lm(
        model,
        splits["train"],
        splits["val"],
        cfg.train,
        out_dir,
        resume=resume,
        progress=progress and not quiet,
        log=None if quiet else say.info,
        on_epoch_end=on_epoch_end,
    )

    # ---- evaluation: loss, perplexity, and the unigram baseline on the same tokens
    metrics = lm_metrics(
        model,
        splits,
        evaluate_split=cfg.evaluate.split,
        vocab_size=tokenizer.vocab_size,
        batch_size=cfg.train.batch_size,
    )
    if metrics["split"] != cfg.evaluate.split:
        say.warn(f"evaluate.split '{cfg.evaluate.split}' is empty; evaluated on {metrics['split']}")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # ---- registry
    manifest = build_manifest(cfg, loaded, data, splits, tokenizer, model, fitted, block_size)
    if data.pii is not None:
        manifest["pii"] = data.pii
    ref, path = store_package(
        cfg,
        out_dir,
        register=register,
        say=say,
        weights=model.package_weights(fitted.state_dict),
        manifest=manifest,
        metrics=metrics,
        card=model_card(cfg, manifest, metrics),
        # the package loads without the run directory, so it carries its tokenizer
        files={"tokenizer.json": tokenizer.to_json()},
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


def build_manifest(
    cfg: FoundryConfig,
    loaded: LoadedConfig,
    data: LMData,
    splits: dict[str, Any],
    tokenizer: BPETokenizer,
    model: GPT,
    fitted: FitResult,
    block_size: int,
) -> dict[str, Any]:
    """foundry.json of a GPT package: what `load_gpt_package` needs to rebuild the model
    (`model`, `tokenizer`, `lm`), plus provenance."""
    import foundry

    assert isinstance(cfg.model, GPTConfig)
    return {
        "format_version": 1,
        "task": TASK,
        "config": dump_config(cfg),
        "model": {
            "type": "gpt",
            "config": cfg.model.model_dump(mode="json"),
            "vocab_size": tokenizer.vocab_size,
            "parameters": model.num_parameters(),
        },
        "context_length": cfg.model.context_length,
        "lm": cfg.lm.model_dump(mode="json"),
        "tokenizer": {
            **tokenizer.info(),
            "chat_template": cfg.lm.chat_template or DEFAULT_CHAT_TEMPLATE,
        },
        "fingerprint": file_fingerprint(
            [loaded.resolve(p) for p in (cfg.data.path, cfg.data.val_path, cfg.data.test_path)]
        ),
        "data": {
            "path": cfg.data.path,
            "kind": data.kind,
            "examples": {n: len(getattr(data, n)) for n in ("train", "val", "test")},
            "target_tokens": {n: splits[n].n_targets for n in ("train", "val", "test")},
            "block_size": block_size,
            # relative data paths in `config` resolve against this (foundry compress
            # reads the held-out split again)
            "base_dir": str(loaded.base_dir),
        },
        "training": {
            "best_epoch": fitted.best_epoch,
            "epochs_run": fitted.epochs_run,
            "seconds": round(fitted.seconds, 3),
            "stopped_early": fitted.stopped_early,
            "best_metrics": fitted.best_metrics,
        },
        "versions": {
            "foundry": foundry.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def model_card(cfg: FoundryConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short human-readable card."""
    gpt, data, training = manifest["model"], manifest["data"], manifest["training"]
    g = gpt["config"]
    ex, tok = data["examples"], data["target_tokens"]
    lines = [
        f"# {cfg.name}",
        "",
        cfg.description or "_No description given (set `description` in the config)._",
        "",
        "## Data",
        f"- source: `{cfg.data.path}` ({data['kind']})",
        f"- fingerprint: `{manifest['fingerprint']}`",
        f"- examples: train {ex['train']}, val {ex['val']}, test {ex['test']}",
        f"- target tokens: train {tok['train']}, val {tok['val']}, test {tok['test']}",
        "",
        "## Model",
        f"- GPT: {g['n_layers']} layers, d_model {g['d_model']}, {g['n_heads']} heads, "
        f"{g['positions']} positions, context {g['context_length']} tokens",
        f"- {gpt['parameters']:,} parameters; byte-level BPE vocabulary of "
        f"{gpt['vocab_size']} tokens trained on the train split",
        f"- trained {training['epochs_run']} epochs (best {training['best_epoch']}) "
        f"in {training['seconds']:.1f} s",
        "",
        f"## Metrics ({metrics['split']} split, {metrics['tokens']} tokens)",
        f"- perplexity: {metrics['perplexity']:.3f}",
        f"- unigram baseline perplexity (train-split token frequencies, add-one "
        f"smoothing): {metrics['unigram_perplexity']:.3f}",
        f"- loss: {metrics['loss']:.4f} nats/token",
        "",
        "## Limitations",
        "- A small model trained on this corpus only: it continues text in the corpus's "
        "style and knows nothing else; its output is not checked for facts.",
    ]
    return "\n".join(lines) + "\n"
