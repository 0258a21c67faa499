"""Gradient-boosted trees on LightGBM: `model.type: gbm`.

prepare   data.load_splits → Preprocessor fitted on train (vocabularies, target) →
          NativeInputs: one float64 matrix, categories as codes, missing numbers NaN
fit       lgb.train on the training split, early stopping on the validation split's
          loss; per-round records in metrics.jsonl (what `foundry tune` prunes on)
evaluate  evaluation.trust.assess: metrics, calibration, fairness, importance
package   model.txt (LightGBM's text format) with its sha256 in foundry.json, plus the
          preprocessing state, schema and task a neural package has (no weights)
load      Predictor(BoosterModel, NativeInputs): predict / predict_proba / labelled
          outputs / serving / explanations (TreeSHAP) as for any table model
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import ConfigError, ModelError
from foundry.families.gbm.booster import MODEL_FILE, BoosterModel, sha256_text, threads_for
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import data_section, provenance, training_section
from foundry.families.registry import register_family
from foundry.families.table import (
    class_weights,
    evaluate_table,
    summarize_table,
    table_package,
)

__all__ = ["GBMFamily", "lightgbm_params"]

_LOSS = {
    "binary": ("binary_logloss", "binary_error"),
    "multiclass": ("multi_logloss", "multi_error"),
}
"""objective → (the loss early stopping watches, the error rate logged beside it);
regression objectives watch l2 (`val_loss` is then the MSE on the standardised target,
as the neural family's)."""


@dataclass
class GBMData:
    splits: Any
    resolved: Any
    inputs: Any
    """`NativeInputs` fitted on the training split."""
    train: dict[str, Any]
    val: dict[str, Any] | None
    fingerprint: str
    leakage: dict[str, Any] | None = None
    """The manifest's `leakage` section (`data.dataset.check_leakage`)."""


@register_family("gbm")
class GBMFamily:
    """LightGBM boosters over number, binary and category columns."""

    name = "gbm"
    supports = frozenset({"explain", "calibration", "fairness"})
    """No `compress` (`why_not_compress`); no `privacy`: DP-SGD trains networks."""
    why_not_compress = (
        "foundry compress's methods act on a network's layers (int8 Linear layers, an "
        "ONNX export of the PyTorch graph, pruning neurons, distilling into a smaller "
        "network) and a LightGBM booster has none; an ONNX Runtime tree-ensemble variant "
        "is not built because it has not been measured to be faster"
    )
    smaller_model_hint = (
        "a smaller, faster booster has fewer or smaller trees: train again with a lower "
        "model.n_estimators or model.num_leaves, or a larger model.learning_rate"
    )

    def prepare(self, run: Run) -> GBMData:
        from foundry.data import Preprocessor, fingerprint
        from foundry.data.dataset import check_leakage, load_splits
        from foundry.families.gbm.inputs import NativeInputs, check_inputs

        say = run.say
        splits, resolved = load_splits(run.loaded, say)
        if splits.stream is not None:  # LightGBM trains in memory: on the uniform sample
            say.warn(
                f"gbm does not stream: it trains on a uniform sample of {len(splits.train)} "
                f"of the {splits.rows['train']} training rows (raise data.stream.sample_rows "
                "for more, as memory allows; docs/DATA.md)"
            )
        check_inputs(resolved)  # before fitting anything on a text or image column
        leakage = check_leakage(run.config, splits, resolved, say)
        data_fingerprint = fingerprint(
            pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
        )
        say.info(
            f"features: {len(resolved.inputs)} inputs → target '{resolved.target}' "
            f"({resolved.target_type}); rows train/val/test = "
            f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}"
        )
        inputs = NativeInputs(Preprocessor.fit(splits.train, resolved))
        train = inputs.transform(inputs.prepare(splits.train))
        val = inputs.transform(splits.val) if len(splits.val) else None
        return GBMData(splits, resolved, inputs, train, val, data_fingerprint, leakage)

    def fit(self, data: GBMData, train: Any, run: Run) -> Fitted:
        import lightgbm as lgb

        from foundry.predictor import Predictor
        from foundry.training.loop import FitResult

        cfg, say = run.config, run.say
        task = data.inputs.task
        x, y = data.train["features"].numpy(), data.train["target"].numpy()
        params, n_outputs = lightgbm_params(cfg.model, train, task, len(x))
        weight = class_weights(cfg.model.class_weight, y, task)
        # Generic feature names: LightGBM refuses some characters in names, and column j
        # is input j of the manifest anyway.
        names = [f"f{j}" for j in range(x.shape[1])]
        dataset = lgb.Dataset(
            x, label=y, weight=weight, feature_name=names,
            categorical_feature=data.inputs.categorical, free_raw_data=False,
        )
        valid_sets, valid_names, callbacks = [dataset], ["train"], []
        if data.val is not None:
            val = lgb.Dataset(
                data.val["features"].numpy(), label=data.val["target"].numpy(),
                reference=dataset,
            )
            valid_sets, valid_names = [dataset, val], ["train", "val"]
            if cfg.model.early_stopping_rounds is not None:
                callbacks.append(
                    lgb.early_stopping(
                        cfg.model.early_stopping_rounds, first_metric_only=True, verbose=False
                    )
                )
        else:
            say.warn("gbm: no validation split, so no early stopping: every round is trained")
        history: list[dict[str, Any]] = []
        callbacks.append(_recorder(history, task, run))
        started = time.perf_counter()
        booster = lgb.train(
            params,
            dataset,
            num_boost_round=cfg.model.n_estimators,
            valid_sets=valid_sets,
            valid_names=valid_names,
            callbacks=callbacks,
        )
        rounds = len(history)  # the booster keeps only the best round's trees
        best = booster.best_iteration or rounds
        say.info(
            f"gbm: {rounds} rounds trained, best {best} kept ({booster.num_trees()} trees) "
            f"in {time.perf_counter() - started:.2f} s on {params['num_threads']} thread(s)"
        )
        meta = {"features": data.resolved.to_dict(), "n_outputs": n_outputs}

        def predictor_of(fitted_booster: Any) -> Any:
            # The in-memory model is the packaged text read back: "fit → package → load
            # gives the same outputs" holds by construction (the text keeps the best
            # round's trees). The splits are scrubbed already, so no scrubber here.
            model = BoosterModel.from_string(fitted_booster.model_to_string(), n_outputs)
            return Predictor(model, data.inputs, task, meta, cfg.name)

        predictor, holdout, refit = predictor_of(booster), None, None
        if cfg.model.refit and data.val is not None:
            holdout = predictor
            refit = _refit_rounds(
                cfg.model, best, len(x), len(data.val["target"]), task.is_classification
            )
            predictor = predictor_of(_train_on_all(
                lgb, params, data, refit["rounds"], cfg.model.class_weight, names
            ))
            say.info(
                f"gbm: refitted on train + val ({refit['rows']} rows) for "
                f"{refit['rounds']} rounds (best {best}, scaled by {refit['rows']}/{len(x)} "
                "rows)"
            )
        seconds = time.perf_counter() - started
        result = FitResult(
            history=history,
            best_epoch=best,
            best_metrics=history[best - 1] if history else {},
            stopped_early=rounds < cfg.model.n_estimators,
            state_dict={},
            seconds=seconds,
            epochs_run=rounds,
        )
        state = {"n_outputs": n_outputs, "params": params, "refit": refit}
        return Fitted(predictor, result, state, holdout=holdout)

    def evaluate(self, fitted: Fitted, data: GBMData, run: Run) -> Evaluation:
        # A refitted booster trained on the validation rows: evaluate_table fits the
        # temperature and fairness thresholds on fitted.holdout's outputs there.
        return evaluate_table(fitted, data.splits, run)

    def package(
        self, fitted: Fitted, data: GBMData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        import lightgbm as lgb

        cfg, result, splits = run.config, fitted.result, data.splits
        text = fitted.model.model.to_string()
        manifest = {
            **provenance(cfg, lightgbm=lgb.__version__),
            "features": data.resolved.to_dict(),
            "preprocessing": data.inputs.state_dict(),
            "schema": data.inputs.schema.to_dict(),
            "task": data.inputs.task.to_dict(),
            "n_outputs": fitted.state["n_outputs"],
            "fingerprint": data.fingerprint,
            "data": data_section(run, splits),
            "training": {
                **training_section(result),
                "processes": 1,  # LightGBM's threads, on one machine
                "machines": 1,
                "run_dir": str(run.out_dir),
                # the card's training table: boosting settings, in rounds (not epochs)
                "unit": "round",
                "settings": _card_settings(cfg.model, fitted.state["params"]),
            },
            "gbm": {
                "file": MODEL_FILE,
                "sha256": sha256_text(text),
                "trees": fitted.model.model.booster.num_trees(),
                "best_iteration": result.best_epoch,
                # {"rounds", "rows"} of the packaged booster's train + val fit; None:
                # the packaged booster is the early-stopped one (model.refit false)
                "refit": fitted.state["refit"],
                "params": fitted.state["params"],
            },
        }
        return table_package(
            manifest, splits, data.leakage, evaluation, run,
            weights={}, files={MODEL_FILE: text.encode("utf-8")},
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        summarize_table(ref, fitted, evaluation, run)

    def load(self, package: Any, ref: str) -> Any:
        from foundry.families.gbm.inputs import NativeInputs
        from foundry.predictor import Predictor, trust_state
        from foundry.registry.integrity import Confinement

        manifest = package.manifest
        try:
            from foundry.data.schema import TaskInfo

            entry = manifest["gbm"]
            task = TaskInfo.from_dict(manifest["task"])
            inputs = NativeInputs.from_state(manifest["preprocessing"])
            n_outputs = int(manifest["n_outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{package.path}/foundry.json is not a gbm model manifest ({exc})"
            ) from None
        path = Confinement([package.path]).require(
            package.path / str(entry.get("file", MODEL_FILE)),
            what="the booster file gbm.file of foundry.json names,",
        )
        if not path.is_file():
            raise ModelError(f"model package {package.path} is missing {path.name}")
        text = path.read_bytes().decode("utf-8")
        if sha256_text(text) != entry.get("sha256"):
            raise ModelError(
                f"{path} does not match the sha256 in foundry.json: the package was "
                "changed or damaged after it was written",
                hint="register the model again (foundry train) or restore the package",
            )
        model = BoosterModel.from_string(text, n_outputs)
        name = manifest.get("name") or (manifest.get("config") or {}).get("name", "model")
        return Predictor(
            model, inputs, task, manifest, ref or f"{name}:{manifest.get('version')}",
            **trust_state(manifest),
        )

    def outputs(self, model: Any, batch: pd.DataFrame) -> Any:
        return model.outputs(batch)


def lightgbm_params(
    model: Any, train: Any, task: Any, n_rows: int
) -> tuple[dict[str, Any], int]:
    """LightGBM's parameters for a `GBMConfig` (and the train section's seed and
    threads) on `task` with `n_rows` training rows, and the raw scores per row the
    booster will give."""
    objective = model.objective
    if objective == "auto":
        objective = (
            "regression" if not task.is_classification
            else "binary" if task.n_classes == 2 else "multiclass"
        )
    if task.is_classification != (objective in _LOSS):
        kind = f"classification ({task.n_classes} classes)" if task.is_classification \
            else "regression"
        raise ConfigError(
            f"model.objective '{objective}' does not fit target '{task.target}', a "
            f"{kind} task",
            hint="leave model.objective at auto to pick it from the target",
        )
    if objective == "binary" and task.n_classes != 2:
        raise ConfigError(
            f"model.objective binary needs two classes; '{task.target}' has "
            f"{task.n_classes}",
            hint="use multiclass, or auto",
        )
    loss, error = _LOSS.get(objective, ("l2", None))
    params: dict[str, Any] = {
        "objective": objective,
        "metric": [loss, *([error] if error else [])],
        "learning_rate": model.learning_rate,
        "num_leaves": model.num_leaves,
        "max_depth": model.max_depth,
        "min_data_in_leaf": model.min_child_samples,
        "feature_fraction": model.feature_fraction,
        "bagging_fraction": model.bagging_fraction,
        "bagging_freq": model.bagging_freq,
        "lambda_l1": model.lambda_l1,
        "lambda_l2": model.lambda_l2,
        "max_cat_to_onehot": model.max_cat_to_onehot,
        "seed": model.seed if model.seed is not None else train.seed,
        "verbosity": -1,
    }
    if objective == "multiclass":
        params["num_class"] = task.n_classes
    params["num_threads"] = train.num_threads or threads_for(n_rows)
    if train.deterministic:
        # LightGBM's documented recipe for repeatable results: fixed row-wise histograms.
        params.update(deterministic=True, force_row_wise=True)
    return params, task.n_classes if objective == "multiclass" else 1


_CLASSIFIER_MIN_ROUNDS = 100
"""Fewest rounds of a classifier's refit (LightGBM's default round count). Early stopping
watches the log loss, which on a small validation split turns up (over-confidence)
rounds before the error rate stops falling: wine's best rounds were 53-195 over split
seeds, and its refits at 60 rounds missed a test row that 90+ rounds got right;
digits 0.9667 scaled-best vs 0.9711 at 100 (`benchmarks/gbm_defaults.py`). Regression
has no such gap (diabetes: R² 0.39 at the scaled best round, 0.34 at 100), so no floor."""


def _refit_rounds(
    model: Any, best: int, n_train: int, n_val: int, classifier: bool
) -> dict[str, int]:
    """The refit's rows and rounds: the best round count scaled by the rows, since a
    booster fitted on more rows takes about proportionally more rounds to reach the same
    fit, at least `_CLASSIFIER_MIN_ROUNDS` for a classifier, and at most
    model.n_estimators; all rounds when early stopping is off."""
    rows = n_train + n_val
    if model.early_stopping_rounds is None:
        return {"rows": rows, "rounds": model.n_estimators}
    rounds = max(1, round(best * rows / n_train))
    if classifier:
        rounds = max(rounds, _CLASSIFIER_MIN_ROUNDS)
    return {"rows": rows, "rounds": min(model.n_estimators, rounds)}


def _train_on_all(
    lgb: Any, params: dict[str, Any], data: GBMData, rounds: int, class_weight: Any,
    names: list[str],
) -> Any:
    """A booster of `rounds` rounds on the train and validation rows together (no
    validation set left to watch, so no early stopping)."""
    x = np.concatenate([data.train["features"].numpy(), data.val["features"].numpy()])
    y = np.concatenate([data.train["target"].numpy(), data.val["target"].numpy()])
    dataset = lgb.Dataset(
        x, label=y, weight=class_weights(class_weight, y, data.inputs.task),
        feature_name=names, categorical_feature=data.inputs.categorical,
    )
    return lgb.train(params, dataset, num_boost_round=rounds)


def _card_settings(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    keys = ("n_estimators", "early_stopping_rounds", "learning_rate", "num_leaves",
            "min_child_samples", "feature_fraction", "lambda_l1", "lambda_l2", "class_weight")
    settings = {k: getattr(model, k) for k in keys}
    settings["class_weight"] = json.dumps(settings["class_weight"]) \
        if isinstance(settings["class_weight"], dict) else settings["class_weight"]
    return {"objective": params["objective"], **settings, "seed": params["seed"],
            "threads": params["num_threads"]}


def _recorder(history: list[dict[str, Any]], task: Any, run: Run):
    """A LightGBM callback: one record per round in `history` and metrics.jsonl, as the
    neural loop writes per epoch (`epoch` = round, `train_loss`, `val_loss`,
    `val_accuracy` or `val_rmse`), every `every`-th handed to `run.on_epoch_end`
    (tune's pruner)."""
    import lightgbm as lgb

    from foundry.training.epochs import StopTraining

    # A tune trial reports to Optuna's database in on_epoch_end (~55 ms a report here on
    # SQLite): every round of a 1,000-round ceiling made a penguins trial take 40 s
    # instead of 1 s, so at most ~50 reports per run, every `every` rounds.
    every = max(1, run.config.model.n_estimators // 50)
    path = run.out_dir / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    started = time.perf_counter()

    def record(env: Any) -> None:
        entry: dict[str, Any] = {"epoch": env.iteration + 1}
        for split, metric, value, _ in env.evaluation_result_list:
            if metric.endswith("error"):
                entry[f"{split}_accuracy"] = 1.0 - value
            elif split + "_loss" not in entry:  # the first metric is the loss
                entry[f"{split}_loss"] = value
                if metric == "l2":
                    entry[f"{split}_rmse"] = math.sqrt(value) * task.target_std
        entry.pop("train_accuracy", None)
        entry.pop("train_rmse", None)
        entry["seconds"] = round(time.perf_counter() - started, 4)
        history.append(entry)
        with path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if run.on_epoch_end is not None and entry["epoch"] % every == 0:
            try:
                run.on_epoch_end(entry)
            except StopTraining:  # a search's time budget: keep the best round so far
                key = "val_loss" if "val_loss" in entry else "train_loss"
                best = min(range(len(history)), key=lambda i: history[i][key])
                raise lgb.callback.EarlyStopException(best, env.evaluation_result_list) from None

    # LightGBM runs callbacks by `order`: this one (20, as its record_evaluation) before
    # early stopping (30), so the round that ends training is recorded too.
    record.order = 20  # type: ignore[attr-defined]
    return record
