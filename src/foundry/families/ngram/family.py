"""A linear model over TF-IDF n-grams: `model.type: ngram`, the fast text default.

prepare   data.load_splits → NGramInputs fitted on train (the shared Preprocessor for
          non-text inputs and the target; word + char n-gram vocabularies and idf per
          text input) → the training matrix, the validation matrix
fit       a linear SVM / logistic regression (ridge for a number target) from scikit-
          learn; one record in metrics.jsonl (val_loss, val_accuracy...: what `foundry
          tune` reads)
evaluate  evaluation.trust.assess: metrics, calibration (temperature), fairness
package   model.safetensors: idf vectors, linear.weight [n_outputs, F], linear.bias;
          ngram_vocabulary.json: settings and vocabularies; foundry.json: the shared
          preprocessing state, schema and task. No pickle: `load` rebuilds the counting
          from the vocabulary, not from a scikit-learn object
load      Predictor(LinearModel, NGramInputs): predict / predict_proba / serving /
          explanations (weight x tf-idf per n-gram) as for any table model
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import DataError, ModelError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import data_section, provenance, training_section
from foundry.families.registry import register_family
from foundry.families.table import (
    class_weights,
    evaluate_table,
    summarize_table,
    table_package,
)

__all__ = ["VOCABULARY_FILE", "NGramFamily"]

VOCABULARY_FILE = "ngram_vocabulary.json"
"""The text inputs' n-gram settings and vocabularies inside a package (JSON)."""


@dataclass
class NGramData:
    splits: Any
    resolved: Any
    inputs: Any
    """`NGramInputs` fitted on the training split."""
    train: dict[str, Any]
    val: dict[str, Any] | None
    fingerprint: str
    leakage: dict[str, Any] | None = None
    vectorise_seconds: float = 0.0
    """Fitting the vocabularies and idf and counting the training rows' n-grams."""


@register_family("ngram")
class NGramFamily:
    """A linear head over text n-grams (and one-hot / standardised table columns)."""

    name = "ngram"
    supports = frozenset({"explain", "calibration", "fairness"})
    """No `compress` (`why_not_compress`); no `privacy`: DP-SGD trains networks."""
    why_not_compress = (
        "foundry compress's methods act on a network's layers (int8 Linear layers, an "
        "ONNX export of the PyTorch graph, pruning neurons, distilling into a smaller "
        "network); an ngram model is one sparse matrix product whose time goes into "
        "counting n-grams, which none of them speeds up"
    )
    smaller_model_hint = (
        "a smaller package has fewer n-gram columns: train again with model.max_features, "
        "a higher model.min_df, or model.hash_features"
    )

    def prepare(self, run: Run) -> NGramData:
        from foundry.data import fingerprint
        from foundry.data.dataset import check_leakage, load_splits
        from foundry.families.ngram.inputs import NGramInputs, check_inputs

        say, model = run.say, run.config.model
        splits, resolved = load_splits(run.loaded, say)
        check_inputs(resolved)  # before counting any n-gram
        leakage = check_leakage(run.config, splits, resolved, say)
        data_fingerprint = fingerprint(
            pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
        )
        started = time.perf_counter()
        inputs, train = NGramInputs.fit(splits.train, resolved, model)
        vectorise = time.perf_counter() - started
        val = inputs.transform(splits.val) if len(splits.val) else None
        texts = (
            ", ".join(f"{g.column} {g.kind} {g.n_columns}" for g in inputs.texts)
            or "no text inputs"
        )
        say.info(
            f"features: {len(resolved.inputs)} inputs → target '{resolved.target}' "
            f"({resolved.target_type}); rows train/val/test = "
            f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}; n-gram columns: "
            f"{texts} ({inputs.n_columns} in all, fitted in {vectorise:.2f} s)"
        )
        return NGramData(splits, resolved, inputs, train, val, data_fingerprint, leakage, vectorise)

    def fit(self, data: NGramData, train: Any, run: Run) -> Fitted:
        from foundry.evaluation.metrics import compute_metrics
        from foundry.families.ngram.linear import LinearModel, fit_head
        from foundry.predictor import Predictor
        from foundry.training.loop import FitResult

        cfg, say = run.config, run.say
        model_cfg, task = cfg.model, data.inputs.task
        x, y = data.train["features"].matrix, data.train["target"].numpy()
        if task.is_classification and len(np.unique(y)) < 2:
            raise DataError(
                f"the training split has one class of '{task.target}' only: a classifier "
                "needs at least two",
                hint="use more rows or a stratified split",
            )
        weight = class_weights(model_cfg.class_weight, y, task)
        started = time.perf_counter()
        w, b = fit_head(x, y, model_cfg, task, weight, train.seed)
        head_seconds = time.perf_counter() - started
        # the fit is the vocabulary and the head: what `foundry cost` and the card time
        seconds = data.vectorise_seconds + head_seconds
        linear = LinearModel(w, b)
        entry: dict[str, Any] = {"epoch": 1, "train_loss": _loss(task, y, linear.scores(x))}
        if data.val is not None:
            y_val = data.val["target"].numpy()
            scores = linear.scores(data.val["features"].matrix)
            entry["val_loss"] = _loss(task, y_val, scores)
            metrics = compute_metrics(task, y_val, scores)
            entry.update(
                {
                    f"val_{k}": v
                    for k, v in metrics.items()
                    if isinstance(v, float) and k != "log_loss"
                }
            )
        entry["seconds"] = round(seconds, 4)
        path = run.out_dir / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry) + "\n")
        if run.on_epoch_end is not None:
            from contextlib import suppress

            from foundry.training.epochs import StopTraining

            # e.g. auto's budget: a stop after the one pass there is changes nothing
            with suppress(StopTraining):
                run.on_epoch_end(entry)
        head = "ridge" if not task.is_classification else model_cfg.head
        say.info(f"ngram: {head} head over {x.shape[1]} columns fitted in {head_seconds:.2f} s")
        result = FitResult(
            history=[entry],
            best_epoch=1,
            best_metrics=entry,
            stopped_early=False,
            state_dict={},
            seconds=seconds,
            epochs_run=1,
        )
        # The splits are scrubbed already, so this in-memory predictor has no scrubber.
        predictor = Predictor(
            linear,
            data.inputs,
            task,
            {"features": data.resolved.to_dict(), "n_outputs": linear.n_outputs},
            cfg.name,
        )
        return Fitted(predictor, result, {"head": head, "head_seconds": head_seconds})

    def evaluate(self, fitted: Fitted, data: NGramData, run: Run) -> Evaluation:
        return evaluate_table(fitted, data.splits, run)

    def package(
        self, fitted: Fitted, data: NGramData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        import sklearn
        import torch

        cfg, result, splits = run.config, fitted.result, data.splits
        linear, inputs = fitted.model.model, data.inputs
        state = inputs.state_dict()
        vocabulary = json.dumps(state.pop("text"), ensure_ascii=False)
        manifest = {
            **provenance(cfg, sklearn=sklearn.__version__),
            "features": data.resolved.to_dict(),
            "preprocessing": state.pop("preprocessing"),
            "schema": inputs.schema.to_dict(),
            "task": inputs.task.to_dict(),
            "n_outputs": linear.n_outputs,
            "fingerprint": data.fingerprint,
            "data": data_section(run, splits),
            "training": {
                **training_section(result),
                "processes": 1,
                "machines": 1,
                "run_dir": str(run.out_dir),
                "unit": "fit",
                "settings": _card_settings(cfg.model, fitted.state["head"]),
            },
            "ngram": {
                "file": VOCABULARY_FILE,
                "head": fitted.state["head"],
                "columns": inputs.n_columns,
                # seconds: vectorising the training rows (vocabulary, idf), the head
                "fit_seconds": round(result.seconds, 3),
                "head_seconds": round(fitted.state["head_seconds"], 3),
                "blocks": [
                    {"input": b.name, "kind": b.kind, "columns": b.stop - b.start}
                    for b in inputs.blocks
                ],
            },
        }
        weights = {
            **inputs.idf_tensors(),
            "linear.weight": torch.from_numpy(linear.weight),
            "linear.bias": torch.from_numpy(linear.bias),
        }
        return table_package(
            manifest,
            splits,
            data.leakage,
            evaluation,
            run,
            weights=weights,
            files={VOCABULARY_FILE: vocabulary.encode("utf-8")},
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        summarize_table(ref, fitted, evaluation, run)

    def load(self, package: Any, ref: str) -> Any:
        from foundry.data.schema import TaskInfo
        from foundry.families.ngram.inputs import NGramInputs
        from foundry.families.ngram.linear import LinearModel
        from foundry.predictor import Predictor, trust_state

        manifest = package.manifest
        path = package.path / VOCABULARY_FILE
        if not path.is_file():
            raise ModelError(f"model package {package.path} is missing {VOCABULARY_FILE}")
        try:
            text = json.loads(path.read_text(encoding="utf-8"))
            state = {
                "features": manifest["features"],
                "text": text,
                "preprocessing": manifest["preprocessing"],
            }
            inputs = NGramInputs.from_state(state, package.weights)
            task = TaskInfo.from_dict(manifest["task"])
            model = LinearModel(
                package.weights["linear.weight"].numpy(), package.weights["linear.bias"].numpy()
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{package.path} is not an ngram model package ({type(exc).__name__}: {exc})"
            ) from None
        if model.weight.shape[1] != inputs.n_columns:
            raise ModelError(
                f"{package.path}: linear.weight has {model.weight.shape[1]} columns, the "
                f"inputs give {inputs.n_columns}"
            )
        name = manifest.get("name") or (manifest.get("config") or {}).get("name", "model")
        return Predictor(
            model,
            inputs,
            task,
            manifest,
            ref or f"{name}:{manifest.get('version')}",
            **trust_state(manifest),
        )

    def outputs(self, model: Any, batch: pd.DataFrame) -> Any:
        return model.outputs(batch)


def _loss(task: Any, y: np.ndarray, scores: np.ndarray) -> float:
    """Cross-entropy of the raw scores' probabilities (classification), or the mean
    squared error in standardised units (regression): the neural family's losses."""
    from foundry.evaluation.metrics import probabilities

    if not task.is_classification:
        return float(np.mean((scores[:, 0] - y) ** 2))
    proba = probabilities(scores, task)
    picked = proba[np.arange(len(y)), y.astype(np.int64)]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))


def _card_settings(model: Any, head: str) -> dict[str, Any]:
    keys = (
        "word_ngrams",
        "char_ngrams",
        "min_df",
        "max_features",
        "hash_features",
        "C",
        "max_iter",
        "class_weight",
    )
    settings = {k: getattr(model, k) for k in keys}
    for k, v in settings.items():
        if isinstance(v, dict | tuple | list):
            settings[k] = json.dumps(v)
    return {"head": head, **settings}
