"""`foundry train` for `model: {type: hf}`: a pretrained Hugging Face model, fine-tuned or
packaged as it is.

    task classification / regression   text column → label or number: foundry's data
                                       loading, splits, target encoding and metrics; a
                                       pooled head (or the checkpoint's own
                                       sequence-classification head); full or LoRA
                                       fine-tuning (`foundry.lm.hf_finetune`)
    task causal_lm                     a corpus or instruction data, next-token loss
                                       (completion tokens only for instructions), full
                                       or LoRA (`foundry.lm.hf_causal`)
    task embedding                     no training: the encoder packaged for sentence
                                       embeddings (mean or cls pooling, L2-normalised)

Read top to bottom: resolve the model and task, then one function per kind of run. Each
ends by registering a package whose manifest says everything `foundry.lm.hf_model`
needs to load it without the original config (see that module for the layout).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from foundry.config import LoadedConfig, dump_config
from foundry.config.schema import FoundryConfig, HFModelConfig
from foundry.console import Reporter
from foundry.errors import ConfigError, DataError
from foundry.models.hf import (
    HFTokenizer,
    PooledClassifier,
    SequenceClassifier,
    is_causal_lm,
    load_pretrained,
    load_pretrained_config,
    load_tokenizer,
    quiet_transformers,
    resolve_source,
    text_model_outputs,
)
from foundry.pipeline import TrainResult, load_splits, model_card, run_directory, store_package

__all__ = ["hf_manifest_section", "manifest_base", "register_hf", "resolve_task", "train_hf"]

RunKind = Literal["predict", "causal_lm", "embedding"]


def train_hf(
    loaded: LoadedConfig,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Fine-tune (or package) the Hugging Face model a config describes, evaluate it and
    register it. Same arguments and result as `foundry.pipeline.train`; an embedding
    package, which trains nothing, refuses `on_epoch_end` and `register=False`."""
    cfg = loaded.config
    spec = cfg.model
    assert isinstance(spec, HFModelConfig)
    say = Reporter(quiet=quiet)
    source = resolve_source(spec.name_or_path, loaded.base_dir)
    hf_config = load_pretrained_config(source, spec.revision)
    kind = resolve_task(cfg, hf_config)
    say.info(
        f"model: {spec.name_or_path} ({hf_config.model_type}, "
        f"{', '.join(hf_config.architectures or ['?'])}) → {kind}"
        + (f", LoRA r={spec.lora.r}" if spec.lora else "")
    )
    if kind == "embedding" and (on_epoch_end is not None or not register):
        raise ConfigError(
            "model.task embedding trains nothing (the pretrained encoder is packaged as it "
            "is), so there is nothing to tune",
            hint="tune a classification, regression or causal_lm model; package an "
            "embedder with foundry train",
        )
    out_dir = run_directory(loaded, run_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(dump_config(cfg), indent=2))
    say.info(f"run directory: {out_dir}")
    options = {"resume": resume, "out_dir": out_dir, "progress": progress, "say": say}
    if kind == "embedding":
        return package_embedder(loaded, source, hf_config, **options)
    options.update(on_epoch_end=on_epoch_end, register=register)
    if kind == "causal_lm":
        from foundry.lm.hf_causal import train_causal_lm

        return train_causal_lm(loaded, source, hf_config, **options)
    return train_text_predictor(loaded, source, hf_config, **options)


def resolve_task(cfg: FoundryConfig, hf_config: Any) -> RunKind:
    """What kind of run `model.task` asks for on this checkpoint; refuses combinations
    that cannot work, naming the key to change."""
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


# ------------------------------------------------------------ classification / regression


def train_text_predictor(
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
    """One text column → a label (classification) or a number (regression).
    `register=False` writes the package to `out_dir/package` instead (a tuning trial)."""
    from foundry.data import fingerprint
    from foundry.data.encoders.target import TargetEncoder
    from foundry.data.encoders.text import texts_of
    from foundry.evaluation import compute_metrics
    from foundry.lm.hf_finetune import TokenizedSplit, finetune, finetune_defaults
    from foundry.models.hf_lora import apply_lora, parameter_counts
    from foundry.training import n_outputs_for

    started = time.perf_counter()
    cfg = loaded.config
    spec = cfg.model
    assert isinstance(spec, HFModelConfig)

    # ---- data: foundry's loading and splits; one text column; the target encoded
    splits, resolved = load_splits(loaded, say)
    text_column = _text_column(resolved)
    target_type = _target_type(spec.task, resolved.target_type, resolved.target)
    target = TargetEncoder.fit(splits.train[resolved.target], resolved.target, target_type)
    task = target.info
    say.info(
        f"text '{text_column}' → target '{task.target}' ({task.task}); rows "
        f"train/val/test = {len(splits.train)}/{len(splits.val)}/{len(splits.test)}"
    )
    data_fingerprint = fingerprint(
        pd.concat([splits.train, splits.val, splits.test], ignore_index=True),
        image_columns=[],
        base_dir=loaded.base_dir,
    )

    tokenizer = HFTokenizer(load_tokenizer(source, spec.revision))

    def tokenized(frame: pd.DataFrame) -> TokenizedSplit:
        ids = tokenizer.encode_inputs(texts_of(frame[text_column]), max_length=spec.max_length)
        return TokenizedSplit(ids, torch.from_numpy(target.transform(frame[task.target])))

    train_data, val_data = tokenized(splits.train), tokenized(splits.val)

    # ---- model: pretrained body + head, LoRA adapters if asked (seeded: new weights)
    train_cfg, filled = finetune_defaults(cfg.train, lora=spec.lora is not None)
    if filled:
        say.info(f"fine-tuning defaults for train keys not set: {', '.join(filled)}")
    n_outputs = n_outputs_for(train_cfg.loss, task)
    torch.manual_seed(train_cfg.seed)
    if spec.head == "sequence_classification":
        body = load_pretrained(
            source, "sequence_classification", revision=spec.revision, num_labels=n_outputs
        )
        if body.config.pad_token_id is None:  # GPT-2 style: finds the last real token by it
            body.config.pad_token_id = tokenizer.pad_id
        if spec.lora is not None:
            body = apply_lora(body, spec.lora, "SEQ_CLS")
        model: PooledClassifier | SequenceClassifier = SequenceClassifier(body)
    else:
        body = load_pretrained(source, "encoder", revision=spec.revision)
        hidden_size = int(body.config.hidden_size)
        if spec.lora is not None:
            body = apply_lora(body, spec.lora, "FEATURE_EXTRACTION")
        model = PooledClassifier(
            body, hidden_size=hidden_size, n_outputs=n_outputs, pooling=spec.pooling
        )
    trainable, total = parameter_counts(model)
    say.info(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")

    # ---- train
    fitted = finetune(
        model,
        train_data,
        val_data,
        train_cfg,
        task,
        out_dir,
        n_outputs=n_outputs,
        pad_id=tokenizer.pad_id,
        resume=resume,
        metric_fn=lambda y, out: compute_metrics(task, y, out),
        log=None if not progress else say.info,
        on_epoch_end=on_epoch_end,
    )
    say.info(f"training throughput: {fitted.train_examples_per_second:.1f} examples/s")

    # ---- evaluate on the evaluation split
    eval_df, eval_name = splits.evaluation(cfg.evaluate.split)
    if eval_name != cfg.evaluate.split:
        say.warn(f"evaluate.split '{cfg.evaluate.split}' is empty; evaluating on {eval_name}")
    eval_data = tokenized(eval_df)
    outputs = text_model_outputs(model, eval_data.ids, tokenizer.pad_id)
    metrics = compute_metrics(task, eval_data.target.numpy(), outputs)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    # ---- package: the adapter (LoRA) or the whole fine-tuned model, plus the head
    hf = hf_manifest_section(
        spec,
        source,
        hf_config,
        task="regression" if task.task == "regression" else "classification",
    )
    hf.update(
        text_column=text_column,
        hidden_size=int(getattr(hf_config, "hidden_size", 0)),
        parameters={"trainable": trainable, "total": total},
        train_defaults_filled=filled,
        train_examples_per_second=round(fitted.train_examples_per_second, 3),
    )
    manifest = {
        **manifest_base(cfg, hf),
        "features": resolved.to_dict(),
        "task": task.to_dict(),
        "target_encoder": target.state(),
        "n_outputs": n_outputs,
        "fingerprint": data_fingerprint,
        "data": {
            "path": cfg.data.path,
            "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
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
    if splits.pii is not None:  # the scrubber runs again on every text predicted
        manifest["pii"] = splits.pii
        manifest["pii_scrubber"] = splits.scrubber.state_dict()
    card = model_card(cfg, manifest, metrics) + hf_card_section(hf)
    ref, path = register_hf(
        cfg,
        model.encoder,
        tokenizer,
        hf,
        manifest,
        metrics,
        card,
        head=model.head_state_dict(),
        out_dir=out_dir,
        say=say,
        register=register,
    )
    say.metrics(metrics, task, title=f"{ref or cfg.name} — {cfg.evaluate.split} metrics")
    return TrainResult(
        model_ref=ref,
        run_dir=out_dir,
        metrics=metrics,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        seconds=time.perf_counter() - started,
        package_path=path,
    )


def _text_column(resolved: Any) -> str:
    names = resolved.input_names
    if len(names) != 1:
        raise ConfigError(
            f"model type hf reads one text column; the inputs are {names}",
            hint="list the text column alone in features.inputs (e.g. inputs: [{name: "
            f"{names[0] if names else 'text'}}}]) or add the others to features.exclude",
        )
    return names[0]


def _target_type(task: str, inferred: str, target: str) -> str:
    """The target type `TargetEncoder` gets: `model.task` wins over what was inferred."""
    if task == "regression":
        if inferred != "number":
            raise DataError(
                f"model.task is regression but target column '{target}' is not numeric ({inferred})"
            )
        return "number"
    if task == "classification" and inferred == "number":
        return "category"  # e.g. star ratings 1-5 taken as classes
    return inferred


# ---------------------------------------------------------------------- embeddings


def package_embedder(
    loaded: LoadedConfig,
    source: str,
    hf_config: Any,
    *,
    resume: bool,
    out_dir: Path,
    progress: bool,
    say: Reporter,
) -> TrainResult:
    """No training: the pretrained encoder and tokenizer, packaged whole (the package
    loads with no network), with a sanity check on texts from the data as metrics."""
    started = time.perf_counter()
    cfg = loaded.config
    spec = cfg.model
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
        say.info(f"max_length {trained_length} from the model's sentence_bert_config.json")

    metrics = embedding_sanity_metrics(loaded, encoder, tokenizer, hf, say)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    manifest = {
        **manifest_base(cfg, hf),
        "task": "embedding",
        "data": {"path": cfg.data.path},
    }
    card = "\n".join(
        [
            f"# {cfg.name}",
            "",
            cfg.description or "_No description given (set `description` in the config)._",
            "",
            "Sentence embeddings: pretrained encoder, "
            f"{spec.pooling} pooling, L2-normalised, {hf['hidden_size']} dimensions.",
            "",
        ]
    ) + hf_card_section(hf)
    ref, path = register_hf(
        cfg, encoder, tokenizer, hf, manifest, metrics, card, head={}, out_dir=out_dir, say=say
    )
    return TrainResult(
        model_ref=ref,
        run_dir=out_dir,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        package_path=path,
    )


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


def embedding_sanity_metrics(
    loaded: LoadedConfig, encoder: Any, tokenizer: HFTokenizer, hf: dict[str, Any], say: Reporter
) -> dict[str, Any]:
    """Embeds up to 256 texts of the data (corpus documents, or prompts of instruction
    data): vectors must be finite and unit length. Reports their mean pairwise cosine
    (near 1 means the encoder barely tells the texts apart)."""
    from foundry.lm.data import read_lm_file
    from foundry.lm.hf_model import HFEmbedder

    cfg = loaded.config
    path = loaded.resolve(cfg.data.path)
    assert path is not None
    examples = read_lm_file(path, cfg.lm, cfg.data.format, cfg.data.delimiter)
    texts = [
        item if examples.kind == "corpus" else item[0]["content"] for item in examples.items[:256]
    ]
    embedder = HFEmbedder("check", encoder, tokenizer, hf)
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


# ------------------------------------------------------------------------- packaging


def hf_manifest_section(
    spec: HFModelConfig, source: str, hf_config: Any, *, task: str
) -> dict[str, Any]:
    """`manifest["hf"]`: what loading needs without the config. `source` is the resolved
    hub id or absolute directory; `commit` the hub commit the files came from (None for a
    local directory), so a LoRA base is reloaded at exactly that commit."""
    return {
        "name_or_path": spec.name_or_path,
        "source": source,
        "revision": spec.revision,
        "commit": getattr(hf_config, "_commit_hash", None),
        "task": task,
        "head": spec.head,
        "pooling": spec.pooling,
        "max_length": spec.max_length,
        "lora": spec.lora.model_dump(mode="json") if spec.lora is not None else None,
        "weights": "adapter" if spec.lora is not None else "full",
        "directory": "adapter" if spec.lora is not None else "hf",
        "model_type": hf_config.model_type,
        "architectures": list(getattr(hf_config, "architectures", None) or []),
    }


def register_hf(
    cfg: FoundryConfig,
    body: Any,
    tokenizer: HFTokenizer,
    hf: dict[str, Any],
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    card: str,
    *,
    head: dict[str, torch.Tensor],
    out_dir: Path,
    say: Reporter,
    register: bool = True,
) -> tuple[str, Path]:
    """Write the transformers side (adapter or full model, plus tokenizer) into a
    temporary folder and store it with the head weights as `model.safetensors`, through
    `store_package`: registered, or (`register=False`, a tuning trial) written to
    `out_dir/package`. Returns the reference (empty when not registered) and the path."""
    from foundry.models.hf_lora import save_adapter

    with tempfile.TemporaryDirectory(prefix="foundry-hf-") as tmp:
        folder = Path(tmp) / hf["directory"]
        with quiet_transformers():
            if hf["weights"] == "adapter":
                save_adapter(body, folder)
            else:
                body.save_pretrained(str(folder))  # safetensors: transformers 5 writes no other
            tokenizer.hf.save_pretrained(str(folder))
        return store_package(  # the folder is copied before it is removed
            cfg,
            out_dir,
            register=register,
            say=say,
            weights={k: v.detach().cpu() for k, v in head.items()},
            manifest=manifest,
            metrics=metrics,
            card=card,
            files={hf["directory"]: folder},
        )


def manifest_base(cfg: FoundryConfig, hf: dict[str, Any]) -> dict[str, Any]:
    import peft
    import transformers

    import foundry

    return {
        "format_version": 1,
        "config": dump_config(cfg),
        "hf": hf,
        "versions": {
            "foundry": foundry.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def hf_card_section(hf: dict[str, Any]) -> str:
    base = hf["source"] if hf["commit"] is None else f"{hf['source']}@{hf['commit'][:12]}"
    lines = ["", "## Pretrained model", f"- base: `{base}` ({', '.join(hf['architectures'])})"]
    if hf["lora"] is not None:
        lora = hf["lora"]
        lines.append(
            f"- LoRA adapter r={lora['r']}, alpha={lora['alpha']}; the package holds only "
            "the adapter: loading needs the base model above"
        )
    else:
        lines.append("- weights: complete (the package loads with no network)")
    if "parameters" in hf:
        p = hf["parameters"]
        lines.append(f"- trained parameters: {p['trainable']:,} of {p['total']:,}")
    return "\n".join(lines) + "\n"
