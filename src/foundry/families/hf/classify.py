"""Hugging Face family, task classification / regression: one text column → a label
or a number, on foundry's data loading, splits, target encoding and metrics.

prepare   data.load_splits → the one text column, the target encoded, tokenized
fit       pretrained body + head (pooled, or the checkpoint's sequence-classification
          head), LoRA adapters if asked → `lm.hf_finetune.finetune`
evaluate  `compute_metrics` on the evaluation split
package   the adapter (LoRA) or the whole fine-tuned model + tokenizer, the head weights
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from foundry.config.schema import HFModelConfig
from foundry.errors import ConfigError, DataError
from foundry.families.hf.package import (
    hf_card_section,
    hf_contents,
    hf_manifest_section,
    manifest_base,
)
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import table_card, training_section

__all__ = ["evaluate", "fit", "package", "prepare", "summarize"]


@dataclass
class ClassifyData:
    splits: Any
    resolved: Any
    text_column: str
    target: Any
    """The fitted `TargetEncoder` (labels → class indices, or numbers)."""
    tokenizer: Any
    train: Any
    """`TokenizedSplit` of the training rows."""
    val: Any
    fingerprint: str

    def tokenized(self, frame: pd.DataFrame, max_length: int) -> Any:
        import torch

        from foundry.data.encoders.text import texts_of
        from foundry.lm.hf_finetune import TokenizedSplit

        ids = self.tokenizer.encode_inputs(texts_of(frame[self.text_column]), max_length=max_length)
        target = torch.from_numpy(self.target.transform(frame[self.target.info.target]))
        return TokenizedSplit(ids, target)


def prepare(run: Run, source: str, hf_config: Any) -> ClassifyData:
    from foundry.data import fingerprint
    from foundry.data.dataset import load_splits
    from foundry.data.encoders.target import TargetEncoder
    from foundry.models.hf import HFTokenizer, load_tokenizer

    cfg, say = run.config, run.say
    spec = cfg.model
    assert isinstance(spec, HFModelConfig)
    splits, resolved = load_splits(run.loaded, say)
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
        base_dir=run.loaded.base_dir,
    )
    tokenizer = HFTokenizer(load_tokenizer(source, spec.revision))
    data = ClassifyData(
        splits, resolved, text_column, target, tokenizer, None, None, data_fingerprint
    )
    data.train = data.tokenized(splits.train, spec.max_length)
    data.val = data.tokenized(splits.val, spec.max_length)
    return data


def fit(data: Any, train: Any, run: Run) -> Fitted:
    """The pretrained body + head, LoRA adapters if asked (seeded: new weights)."""
    import torch

    from foundry.evaluation import compute_metrics
    from foundry.lm.hf_finetune import finetune, finetune_defaults
    from foundry.lm.hf_model import HFTextPredictor
    from foundry.models.hf import PooledClassifier, SequenceClassifier, load_pretrained
    from foundry.models.hf_lora import apply_lora, parameter_counts
    from foundry.training import n_outputs_for

    cfg, say = run.config, run.say
    spec = cfg.model
    assert isinstance(spec, HFModelConfig)
    own: ClassifyData = data.data
    task, tokenizer = own.target.info, own.tokenizer
    train_cfg, filled = finetune_defaults(train, lora=spec.lora is not None)
    if filled:
        say.info(f"fine-tuning defaults for train keys not set: {', '.join(filled)}")
    n_outputs = n_outputs_for(train_cfg.loss, task)
    torch.manual_seed(train_cfg.seed)
    if spec.head == "sequence_classification":
        body = load_pretrained(
            data.source, "sequence_classification", revision=spec.revision, num_labels=n_outputs
        )
        if body.config.pad_token_id is None:  # GPT-2 style: finds the last real token by it
            body.config.pad_token_id = tokenizer.pad_id
        if spec.lora is not None:
            body = apply_lora(body, spec.lora, "SEQ_CLS")
        model: PooledClassifier | SequenceClassifier = SequenceClassifier(body)
    else:
        body = load_pretrained(data.source, "encoder", revision=spec.revision)
        hidden_size = int(body.config.hidden_size)
        if spec.lora is not None:
            body = apply_lora(body, spec.lora, "FEATURE_EXTRACTION")
        model = PooledClassifier(
            body, hidden_size=hidden_size, n_outputs=n_outputs, pooling=spec.pooling
        )
    trainable, total = parameter_counts(model)
    say.info(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")

    result = finetune(
        model,
        own.train,
        own.val,
        train_cfg,
        task,
        run.out_dir,
        n_outputs=n_outputs,
        pad_id=tokenizer.pad_id,
        resume=run.resume,
        metric_fn=lambda y, out: compute_metrics(task, y, out),
        log=None if not run.progress else say.info,
        on_epoch_end=run.on_epoch_end,
    )
    say.info(f"training throughput: {result.train_examples_per_second:.1f} examples/s")
    hf = hf_manifest_section(
        spec,
        data.source,
        data.hf_config,
        task="regression" if task.task == "regression" else "classification",
    )
    hf.update(
        text_column=own.text_column,
        hidden_size=int(getattr(data.hf_config, "hidden_size", 0)),
        parameters={"trainable": trainable, "total": total},
        train_defaults_filled=filled,
        train_examples_per_second=round(result.train_examples_per_second, 3),
    )
    # The splits are scrubbed already, so this in-memory predictor has no scrubber.
    predictor = HFTextPredictor(cfg.name, model.eval(), tokenizer, hf, task)
    state = {"hf": hf, "n_outputs": n_outputs, "train": train_cfg}
    return Fitted(predictor, result, state)


def evaluate(fitted: Fitted, data: Any, run: Run) -> Evaluation:
    from foundry.evaluation import compute_metrics
    from foundry.models.hf import text_model_outputs

    cfg, own = run.config, data.data
    eval_df, eval_name = own.splits.evaluation(cfg.evaluate.split)
    if eval_name != cfg.evaluate.split:
        run.say.warn(f"evaluate.split '{cfg.evaluate.split}' is empty; evaluating on {eval_name}")
    eval_data = own.tokenized(eval_df, cfg.model.max_length)
    outputs = text_model_outputs(fitted.model.model, eval_data.ids, own.tokenizer.pad_id)
    return Evaluation(compute_metrics(own.target.info, eval_data.target.numpy(), outputs))


def package(fitted: Fitted, data: Any, evaluation: Evaluation, run: Run) -> PackageContents:
    """The adapter (LoRA) or the whole fine-tuned model, plus the head."""
    cfg, own, hf = run.config, data.data, fitted.state["hf"]
    splits = own.splits
    manifest = {
        **manifest_base(cfg, hf),
        "features": own.resolved.to_dict(),
        "task": own.target.info.to_dict(),
        "target_encoder": own.target.state(),
        "n_outputs": fitted.state["n_outputs"],
        "fingerprint": own.fingerprint,
        "data": {
            "path": cfg.data.path,
            "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        },
        "training": {
            **training_section(fitted.result),
            "train": fitted.state["train"].model_dump(mode="json"),
        },
    }
    if splits.pii is not None:  # the scrubber runs again on every text predicted
        manifest["pii"] = splits.pii
        manifest["pii_scrubber"] = splits.scrubber.state_dict()
    card = table_card(cfg, manifest, evaluation.metrics) + hf_card_section(hf)
    model = fitted.model.model
    return hf_contents(
        model.encoder, own.tokenizer, hf, manifest, card, head=model.head_state_dict()
    )


def summarize(ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
    title = f"{ref or run.config.name} — {run.config.evaluate.split} metrics"
    run.say.metrics(evaluation.metrics, fitted.model.task, title=title)


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
