"""Our GPT, trained from scratch on your text: `model.type: gpt`.

prepare   data (corpus or instructions, split by document) → byte-level BPE tokenizer
          trained on the train split → token rows
fit       GPT (seeded) → `lm.train.fit_lm` (next-token loss, completion tokens only for
          instructions)
evaluate  held-out loss, perplexity and the unigram baseline on the same tokens
package   weights (safetensors, tied head once) + tokenizer.json + manifest + card, and
          hf/: the same model as a transformers checkpoint (`lm.export`) that other
          engines (vLLM, TGI, llama.cpp's converters) load
load      `lm.gpt_model.load_gpt_package` → a `GPTLanguageModel`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import foundry.crypto as crypto
from foundry.config import LoadedConfig
from foundry.config.schema import FoundryConfig, GPTConfig
from foundry.errors import ConfigError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import card_header, provenance, training_section
from foundry.families.registry import register_family

__all__ = ["GPTFamily"]

TASK = "language_modeling"
"""The task a GPT package records (registry index and manifest)."""


@dataclass
class GPTData:
    data: Any
    """`lm.data.LMData`: documents or conversations per split; for a corpus file,
    `lm.token_shards.StreamedCorpus` (documents counted, not held)."""
    tokenizer: Any
    """The `BPETokenizer` learned on the training split."""
    splits: dict[str, Any]
    """split name → `TokenData` (token rows with loss masks), or `TokenWindows` read
    from the corpus's token shards."""
    block_size: int


@register_family("gpt")
class GPTFamily:
    name = "gpt"
    supports = frozenset({"compress", "generate"})

    def prepare(self, run: Run) -> GPTData:
        from foundry.lm.data import encode_splits, load_lm_data, tokenizer_texts
        from foundry.lm.token_shards import open_corpus_splits, prepare_corpus, streamable_corpus
        from foundry.lm.tokenizer import BPETokenizer

        cfg, say = run.config, run.say
        gpt, lm = cfg.model, cfg.lm
        assert isinstance(gpt, GPTConfig)
        block_size = lm.block_size or gpt.context_length
        if block_size > gpt.context_length:
            raise ConfigError(
                f"lm.block_size ({block_size}) is longer than model.context_length "
                f"({gpt.context_length}); the model cannot attend over it"
            )

        # ---- data, split by document / conversation. A corpus file is streamed into
        # token shards beside the runs (reused while corpus and tokenizer are unchanged);
        # instruction data is read whole.
        path = run.loaded.resolve(cfg.data.path)
        assert path is not None
        tokenizer_file = run.out_dir / "tokenizer.json"
        resumed = run.resume and tokenizer_file.is_file()  # a resumed run keeps its own
        if streamable_corpus(cfg, path):
            if lm.loss_on == "completion":
                raise ConfigError(
                    "lm.loss_on is 'completion' but the data is a corpus (no prompts or "
                    "completions); use auto or all"
                )

            def learn(train_texts: Any) -> BPETokenizer:
                if resumed:
                    return BPETokenizer.from_json(crypto.read_text(tokenizer_file))
                return BPETokenizer.train(train_texts(), gpt.vocab_size)

            data, tokenizer = prepare_corpus(
                path, cfg, run.loaded.resolve(cfg.output_dir) / "token_shards",  # type: ignore[operator]
                learn, BPETokenizer.to_json,
                tokenizer_key=None if resumed else {"bpe_vocab_size": gpt.vocab_size},
                load_tokenizer=BPETokenizer.from_json,
            )  # fmt: skip
            say.info(data.summary(cfg.data.path))
            say.info(f"token shards: {'reused' if data.reused else 'built'} {data.folder}")
            splits = open_corpus_splits(data, block_size)
        else:
            data = load_lm_data(run.loaded)
            say.info(data.summary(cfg.data.path))
            # tokenizer: learned on the training split only
            if resumed:
                tokenizer = BPETokenizer.from_json(crypto.read_text(tokenizer_file))
            else:
                tokenizer = BPETokenizer.train(
                    tokenizer_texts(data.train, lm.chat_template), gpt.vocab_size
                )
            splits = encode_splits(
                data,
                tokenizer,
                block_size=block_size,
                loss_on=lm.loss_on,
                chat_template=lm.chat_template,
            )
        run.out_dir.mkdir(parents=True, exist_ok=True)  # the data are good: the run starts
        if not resumed:
            crypto.write_text(tokenizer_file, tokenizer.to_json(), fsync=False)
        say.info(
            f"tokenizer: {tokenizer.vocab_size} tokens; target tokens train/val/test = "
            + "/".join(str(splits[name].n_targets) for name in ("train", "val", "test"))
            + f"; block_size {block_size}"
        )
        return GPTData(data, tokenizer, splits, block_size)

    def fit(self, data: GPTData, train: Any, run: Run) -> Fitted:
        import torch

        from foundry.lm.gpt_model import GPTLanguageModel
        from foundry.lm.train import fit_lm
        from foundry.models.gpt import GPT

        cfg, say = run.config, run.say
        gpt = cfg.model
        assert isinstance(gpt, GPTConfig)
        torch.manual_seed(train.seed)  # weights are initialised from this seed
        model = GPT(gpt, vocab_size=data.tokenizer.vocab_size)
        say.info(
            f"model: GPT {gpt.n_layers} layers x {gpt.d_model}, "
            f"{model.num_parameters():,} parameters"
        )
        result = fit_lm(
            model,
            data.splits["train"],
            data.splits["val"],
            train,
            run.out_dir,
            resume=run.resume,
            progress=run.progress and not say.quiet,
            log=None if say.quiet else say.info,
            on_epoch_end=run.on_epoch_end,
        )
        language_model = GPTLanguageModel(
            model,
            data.tokenizer,
            ref=cfg.name,
            chat_template=cfg.lm.chat_template,
            generation=cfg.lm.generation,  # as the package loads (its hf/ records them)
        )
        return Fitted(language_model, result)

    def evaluate(self, fitted: Fitted, data: GPTData, run: Run) -> Evaluation:
        from foundry.lm.metrics import lm_metrics

        cfg = run.config
        metrics = lm_metrics(
            fitted.model.model,
            data.splits,
            evaluate_split=cfg.evaluate.split,
            vocab_size=data.tokenizer.vocab_size,
            batch_size=cfg.train.batch_size,
        )
        if metrics["split"] != cfg.evaluate.split:
            run.say.warn(
                f"evaluate.split '{cfg.evaluate.split}' is empty; evaluated on {metrics['split']}"
            )
        return Evaluation(metrics)

    def package(
        self, fitted: Fitted, data: GPTData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        from foundry.lm.export import HF_FOLDER, hf_files

        cfg = run.config
        model = fitted.model.model
        manifest = build_manifest(cfg, run.loaded, data, model, fitted.result)
        if data.data.pii is not None:
            manifest["pii"] = data.data.pii
        return PackageContents(
            weights=model.package_weights(fitted.result.state_dict),
            manifest=manifest,
            card=model_card(cfg, manifest, evaluation.metrics),
            # the package loads without the run directory, so it carries its tokenizer
            files={
                "tokenizer.json": data.tokenizer.to_json(),
                **{
                    f"{HF_FOLDER}/{name}": content
                    for name, content in hf_files(fitted.model).items()
                },
            },
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        metrics = evaluation.metrics
        run.say.info(
            f"{ref or run.config.name} — {metrics['split']} perplexity "
            f"{metrics['perplexity']:.2f} (unigram baseline "
            f"{metrics['unigram_perplexity']:.2f}, {metrics['tokens']} tokens)"
        )

    def load(self, package: Any, ref: str) -> Any:
        from foundry.lm.gpt_model import load_gpt_package

        return load_gpt_package(package, ref)

    def outputs(self, model: Any, batch: list[str]) -> Any:
        """Greedy continuations (8 tokens) of each prompt: what a language model scores."""
        from foundry.lm.generate import greedy_texts

        return greedy_texts(model, batch)


def build_manifest(
    cfg: FoundryConfig, loaded: LoadedConfig, data: GPTData, model: Any, fitted: Any
) -> dict[str, Any]:
    """foundry.json of a GPT package: what `load_gpt_package` needs to rebuild the model
    (`model`, `tokenizer`, `lm`), plus provenance."""
    from foundry.data.fingerprint import file_fingerprint
    from foundry.lm.data import DEFAULT_CHAT_TEMPLATE

    assert isinstance(cfg.model, GPTConfig)
    examples, tokenizer = data.data, data.tokenizer
    return {
        **provenance(cfg),
        "task": TASK,
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
            "kind": examples.kind,
            "examples": examples.sizes,
            "target_tokens": {n: data.splits[n].n_targets for n in ("train", "val", "test")},
            "block_size": data.block_size,
            # relative data paths in `config` resolve against this (foundry compress
            # reads the held-out split again)
            "base_dir": str(loaded.base_dir),
        },
        "training": training_section(fitted),
    }


def model_card(cfg: FoundryConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short human-readable card."""
    gpt, data, training = manifest["model"], manifest["data"], manifest["training"]
    g = gpt["config"]
    ex, tok = data["examples"], data["target_tokens"]
    lines = [
        *card_header(cfg),
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
        "- `hf/` holds the same model as a Hugging Face transformers checkpoint "
        f"({'GPT-2' if g['positions'] == 'learned' else 'GPT-NeoX'} architecture): "
        '`AutoModelForCausalLM.from_pretrained("hf")` loads it, as do vLLM and TGI',
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
