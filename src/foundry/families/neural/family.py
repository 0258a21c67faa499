"""Neural networks over encoded columns: `model.type` mlp, cnn, text (any architecture
registered with `foundry.models.register_model`).

prepare   data.load_splits → Preprocessor fitted on train → encoded train / val tensors
fit       models.build_model (seeded) → DP-SGD layers if `train.privacy` → training.fit
evaluate  evaluation.trust.assess: metrics, calibration, fairness, explanations
package   weights (safetensors) + manifest (preprocessing state, schema, task) + card
load      predictor.Predictor.from_package
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import data_section, provenance, training_section
from foundry.families.registry import register_family
from foundry.families.table import evaluate_table, summarize_table, table_package
from foundry.models.registry import registered_models

__all__ = ["NeuralFamily", "image_augmenter"]


@dataclass
class NeuralData:
    splits: Any
    """`data.dataset.Splits`: the scrubbed train / val / test frames."""
    resolved: Any
    """`ResolvedFeatures`: the inputs and target with their types."""
    preprocessor: Any
    train: Any
    """Encoded training tensors (`data.schema.Encoded`), or a `data.stream.StreamedTable`
    when the data is streamed."""
    val: dict[str, Any] | None
    fingerprint: str
    leakage: dict[str, Any] | None = None
    """The manifest's `leakage` section (`data.dataset.check_leakage`); rank 0 only."""


@register_family("neural", model_types=registered_models)
class NeuralFamily:
    """Tabular MLP, image CNN, text networks: one family, the architecture picked by
    `model.type` from `foundry.models`' registry."""

    name = "neural"
    supports = frozenset({"explain", "calibration", "fairness", "compress", "privacy"})
    """Optional hooks the conformance suite checks (see interface.py)."""

    def prepare(self, run: Run) -> NeuralData:
        from foundry.data import Preprocessor, fingerprint
        from foundry.data.dataset import check_leakage, load_splits
        from foundry.data.lazy_images import release_unused_memory, use_lazy
        from foundry.training import distributed

        loaded, say = run.loaded, run.say
        splits, resolved = load_splits(loaded, say)
        # rank 0 alone: every rank reads the same rows and would print the same warnings
        leakage = (
            check_leakage(loaded.config, splits, resolved, say) if distributed.is_main() else None
        )
        rows = splits.rows
        say.info(
            f"features: {len(resolved.inputs)} inputs → target '{resolved.target}' "
            f"({resolved.target_type}); rows train/val/test = "
            f"{rows['train']}/{rows['val']}/{rows['test']}"
        )
        if splits.stream is not None:  # fitted in the streaming pass; trains from disk
            _start_first_epoch(splits.stream, run)
            data_fingerprint = splits.stream.fingerprint
            preprocessor, train_enc = splits.stream.preprocessor, splits.stream
            encode, lazy = preprocessor.transform, False
        else:
            image_columns = [f.name for f in resolved.inputs if f.type == "image"]
            data_fingerprint = fingerprint(
                pd.concat([splits.train, splits.val, splits.test], ignore_index=True),
                image_columns=image_columns,
                base_dir=loaded.base_dir,
            )
            preprocessor = Preprocessor.fit(splits.train, resolved, base_dir=loaded.base_dir)
            train_df = preprocessor.prepare(splits.train)
            images = loaded.config.data.images
            lazy = use_lazy(images.loading, preprocessor.image_encoders, len(train_df))
            if lazy:
                say.info("images: decoded per batch by DataLoader workers (data.images.loading)")
            encode = partial(preprocessor.transform, lazy_images=lazy, image_workers=images.workers)
            train_enc = encode(train_df)
        # streamed: validation runs on the split's uniform sample
        val_enc = encode(splits.val) if len(splits.val) else None
        if lazy:
            release_unused_memory()  # what preparing left behind (lazy: memory flat in N)
        return NeuralData(
            splits, resolved, preprocessor, train_enc, val_enc, data_fingerprint, leakage
        )

    def fit(self, data: NeuralData, train: Any, run: Run) -> Fitted:
        import torch

        from foundry.evaluation import compute_metrics
        from foundry.models import build_model
        from foundry.predictor import Predictor
        from foundry.training import fit, n_outputs_for

        cfg, say = run.config, run.say
        task, schema = data.preprocessor.task, data.preprocessor.schema
        n_outputs = n_outputs_for(train.loss, task)
        torch.manual_seed(train.seed)  # weights are initialised from this seed
        model = build_model(cfg.model, schema, n_outputs)
        fixed_layers: list[str] = []
        if train.privacy is not None:
            from foundry.training.privacy import make_private_model

            model, fixed_layers = make_private_model(model)
            for change in fixed_layers:
                say.warn(f"differential privacy: {change} (Opacus cannot train the original)")
        result = fit(
            model,
            data.train,
            data.val,
            train,
            task,
            run.out_dir,
            n_outputs=n_outputs,
            resume=run.resume,
            progress=run.progress and not say.quiet,
            augment=image_augmenter(cfg, data.resolved),
            metric_fn=lambda y, out: compute_metrics(task, y, out),
            log=None if say.quiet else say.info,
            on_epoch_end=run.on_epoch_end,
        )
        # The splits are scrubbed already, so this in-memory predictor has no scrubber.
        predictor = Predictor(
            model, data.preprocessor, task, {"features": data.resolved.to_dict()}, cfg.name
        )
        return Fitted(predictor, result, {"n_outputs": n_outputs, "fixed_layers": fixed_layers})

    def evaluate(self, fitted: Fitted, data: NeuralData, run: Run) -> Evaluation:
        return evaluate_table(fitted, data.splits, run)

    def package(
        self, fitted: Fitted, data: NeuralData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        from foundry.training import distributed

        cfg, say, result = run.config, run.say, fitted.result
        preprocessor, splits = data.preprocessor, data.splits
        manifest = {
            **provenance(cfg),
            "features": data.resolved.to_dict(),
            "preprocessing": preprocessor.state_dict(),
            "schema": preprocessor.schema.to_dict(),
            "task": preprocessor.task.to_dict(),
            "n_outputs": fitted.state["n_outputs"],
            "fingerprint": data.fingerprint,
            "data": data_section(run, splits),
            "training": {
                **training_section(result),
                # what the run occupied: its cost is seconds x machines x the hourly price
                "processes": distributed.world_size(),
                "machines": distributed.machines(),
                "run_dir": str(run.out_dir),  # curves for `foundry report`, dashboard
            },
        }
        if result.privacy is not None:
            manifest["privacy"] = {**result.privacy, "fixed_layers": fitted.state["fixed_layers"]}
            say.info(
                f"differential privacy: ε = {result.privacy['epsilon']:.3f} "
                f"(δ = {result.privacy['delta']:.2g}) spent"
            )
        return table_package(
            manifest, splits, data.leakage, evaluation, run, weights=result.state_dict
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        from foundry.training import distributed

        summarize_table(ref, fitted, evaluation, run, machines=distributed.machines())

    def load(self, package: Any, ref: str) -> Any:
        from foundry.predictor import Predictor

        return Predictor.from_package(package, ref=ref)

    def outputs(self, model: Any, batch: pd.DataFrame) -> Any:
        return model.outputs(batch)


def _start_first_epoch(stream: Any, run: Run) -> None:
    """Fork the first epoch's DataLoader workers now, so that they read and encode their
    first blocks while this process checks for leakage, encodes the validation sample
    and builds the model (`StreamedTable.prefetch`; `fit` takes them over, or stops them
    when its first epoch is another). Not for a resumed run, whose first epoch is only
    known from its checkpoint, nor under train.privacy, which cannot stream."""
    from foundry.training import distributed

    train = run.config.train
    if run.resume or train.privacy is not None or not stream.stream.workers:
        return
    world, rank = (distributed.world_size(), distributed.rank()) if distributed.active() else (1, 0)
    if train.batch_size % world == 0:  # else fit refuses the batch size
        stream.prefetch(1, train.batch_size // world, rank=rank, world=world)


def image_augmenter(cfg: Any, resolved: Any):
    """The training-batch hook for image augmentation, or None when nothing is enabled."""
    from foundry.data import augment_images

    images = [
        f
        for f in resolved.inputs
        if f.type == "image"
        and (f.image.augment.flip or f.image.augment.crop or f.image.augment.rotate)
    ]
    if not images:
        return None

    def augment(batch: dict, generator) -> dict:
        out = dict(batch)
        for f in images:
            key = f"image:{f.name}"
            out[key] = augment_images(batch[key], f.image.augment, generator)
        return out

    return augment
