"""Hugging Face family, task causal_lm: a pretrained causal LM (GPT-2, Llama, Qwen...)
fine-tuned on a corpus or on instructions, fully or with LoRA adapters.

prepare   the checkpoint's own tokenizer and chat template → data (corpus or
          instructions, split by document) → token rows with loss masks
          (`foundry.lm.data`: completion tokens only for instructions)
fit       pretrained weights, LoRA if asked → `lm.train.fit_lm` (as our GPT trains)
evaluate  held-out loss, perplexity and the unigram baseline
package   adapter or full model + tokenizer (see `foundry.lm.hf_model`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foundry.config import LoadedConfig
from foundry.config.schema import HFModelConfig
from foundry.errors import ConfigError, ModelError
from foundry.families.hf.package import (
    hf_card_section,
    hf_contents,
    hf_manifest_section,
    manifest_base,
)
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import training_section

__all__ = ["TASK", "context_length_of", "evaluate", "fit", "package", "prepare", "summarize"]

TASK = "language_modeling"
"""The task a causal LM package records in the registry (as our GPT's do)."""


@dataclass
class CausalData:
    tokenizer: Any
    data: Any
    """`lm.data.LMData`: documents or conversations per split; for a corpus file,
    `lm.token_shards.StreamedCorpus` (documents counted, not held)."""
    splits: dict[str, Any]
    """split name → `TokenData`."""
    block_size: int
    context_length: int


def prepare(run: Run, source: str, hf_config: Any) -> CausalData:
    from foundry.lm.data import encode_splits, load_lm_data
    from foundry.lm.token_shards import open_corpus_splits, prepare_corpus, streamable_corpus
    from foundry.models.hf import HFTokenizer, load_tokenizer

    cfg, say = run.config, run.say
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

    # ---- data: documents or conversations, split, tokenized with loss masks. A corpus
    # file is streamed into token shards beside the runs (lm.token_shards), reused while
    # corpus and tokenizer are unchanged.
    path = run.loaded.resolve(cfg.data.path)
    assert path is not None
    if streamable_corpus(cfg, path):
        if lm.loss_on == "completion":
            raise ConfigError(
                "lm.loss_on is 'completion' but the data is a corpus (no prompts or "
                "completions); use auto or all"
            )
        cache = run.loaded.resolve(cfg.output_dir) / "token_shards"  # type: ignore[operator]
        data, _ = prepare_corpus(path, cfg, cache, lambda _texts: tokenizer, _tokenizer_text)
        say.info(f"{data.summary(cfg.data.path)}; token shards "
                 f"{'reused' if data.reused else 'built'}: {data.folder}")  # fmt: skip
        splits = open_corpus_splits(data, block_size)
    else:
        data = load_lm_data(run.loaded)
        say.info(
            f"{data.summary(cfg.data.path)}; chat template: "
            + ("the tokenizer's" if tokenizer.chat_template else "foundry's default")
        )
        splits = encode_splits(
            data,
            tokenizer,
            block_size=block_size,
            loss_on=lm.loss_on,
            chat_template=tokenizer.chat_template,
            **tokenizer.template_variables,
        )
    say.info(
        "target tokens train/val/test = "
        + "/".join(str(splits[n].n_targets) for n in ("train", "val", "test"))
        + f"; block_size {block_size}"
    )
    return CausalData(tokenizer, data, splits, block_size, context_length)


def fit(data: Any, train: Any, run: Run) -> Fitted:
    """Pretrained weights, LoRA adapters if asked (seeded: A is random), then next-token
    loss over the masked targets."""
    import torch

    from foundry.lm.hf_finetune import finetune_defaults
    from foundry.lm.hf_model import HFLanguageModel
    from foundry.lm.train import fit_lm
    from foundry.models.hf import load_pretrained
    from foundry.models.hf_lora import apply_lora, parameter_counts

    cfg, say, own = run.config, run.say, data.data
    spec, lm = cfg.model, cfg.lm
    assert isinstance(spec, HFModelConfig)
    train_cfg, filled = finetune_defaults(train, lora=spec.lora is not None)
    if filled:
        say.info(f"fine-tuning defaults for train keys not set: {', '.join(filled)}")
    torch.manual_seed(train_cfg.seed)
    model = load_pretrained(data.source, "causal_lm", revision=spec.revision)
    if spec.lora is not None:
        model = apply_lora(model, spec.lora, "CAUSAL_LM")
    trainable, total = parameter_counts(model)
    say.info(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")
    result = fit_lm(
        model,
        own.splits["train"],
        own.splits["val"],
        train_cfg,
        run.out_dir,
        resume=run.resume,
        progress=run.progress and not say.quiet,
        log=None if say.quiet else say.info,
        on_epoch_end=run.on_epoch_end,
    )
    model.eval()
    hf = hf_manifest_section(spec, data.source, data.hf_config, task="causal_lm")
    hf.update(
        context_length=own.context_length,
        chat_template=lm.chat_template,
        parameters={"trainable": trainable, "total": total},
        train_defaults_filled=filled,
    )
    language_model = HFLanguageModel(cfg.name, model, own.tokenizer, hf, generation=lm.generation)
    return Fitted(language_model, result, {"hf": hf, "train": train_cfg})


def evaluate(fitted: Fitted, data: Any, run: Run) -> Evaluation:
    """Loss, perplexity and the unigram baseline on held-out tokens."""
    from foundry.lm.metrics import lm_metrics

    own = data.data
    metrics = lm_metrics(
        fitted.model.model,
        own.splits,
        evaluate_split=run.config.evaluate.split,
        vocab_size=own.tokenizer.vocab_size,
        batch_size=fitted.state["train"].batch_size,
    )
    return Evaluation(metrics)


def package(fitted: Fitted, data: Any, evaluation: Evaluation, run: Run) -> PackageContents:
    cfg, own, hf = run.config, data.data, fitted.state["hf"]
    manifest = _manifest(run.loaded, hf, own, fitted.result, fitted.state["train"])
    if own.data.pii is not None:
        manifest["pii"] = own.data.pii
    card = _card(cfg.name, cfg.description, manifest, evaluation.metrics) + hf_card_section(hf)
    return hf_contents(fitted.model.model, own.tokenizer, hf, manifest, card, head={})


def summarize(ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
    metrics = evaluation.metrics
    run.say.info(
        f"{ref or run.config.name} — {metrics['split']} perplexity {metrics['perplexity']:.2f} "
        f"(unigram baseline {metrics['unigram_perplexity']:.2f}, {metrics['tokens']} tokens)"
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


def _tokenizer_text(tokenizer: Any) -> str:
    """What identifies a checkpoint's tokenizer for the token shard cache: its
    tokenizer.json (fast tokenizers), else its vocabulary and special tokens."""
    import json

    hf = tokenizer.hf
    if getattr(hf, "is_fast", False):
        return hf.backend_tokenizer.to_str()
    return json.dumps([hf.get_vocab(), hf.all_special_tokens], sort_keys=True)


def _manifest(
    loaded: LoadedConfig, hf: dict[str, Any], own: CausalData, fitted: Any, train_cfg: Any
) -> dict[str, Any]:
    from foundry.data.fingerprint import file_fingerprint
    from foundry.lm.data import DEFAULT_CHAT_TEMPLATE

    cfg, data, splits, tokenizer = loaded.config, own.data, own.splits, own.tokenizer
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
            "examples": data.sizes,
            "target_tokens": {n: splits[n].n_targets for n in ("train", "val", "test")},
            "block_size": own.block_size,
        },
        "training": {**training_section(fitted), "train": train_cfg.model_dump(mode="json")},
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
