"""What the families over a table (neural, gbm, ngram) share: per-row class weights
(`model.class_weight`), the evaluation on `evaluate.split` with the trust sections, the
manifest sections the data stage found (PII, leakage), the package and summary they end
with, and the view of a fitted `Preprocessor` that gbm and ngram inputs build on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from foundry.errors import ConfigError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import table_card

__all__ = [
    "PreprocessorView",
    "class_weights",
    "data_sections",
    "evaluate_table",
    "summarize_table",
    "table_package",
]


def evaluate_table(fitted: Fitted, splits: Any, run: Run) -> Evaluation:
    """Metrics, calibration, fairness and explanations (`evaluation.trust.assess`) of
    `fitted.model` on `evaluate.split` (or the first non-empty split after it); the
    validation-fitted parts use `fitted.holdout`'s outputs where there is one."""
    from foundry.evaluation.trust import assess

    cfg, say = run.config, run.say
    eval_df, eval_name = splits.evaluation(cfg.evaluate.split)
    if eval_name != cfg.evaluate.split:
        say.warn(f"evaluate.split '{cfg.evaluate.split}' is empty; evaluating on {eval_name}")
    assessment = assess(fitted.model, splits.val, eval_df, cfg, say, holdout=fitted.holdout)
    return Evaluation(assessment.metrics, assessment.sections, assessment.predictor)


def data_sections(splits: Any, leakage: dict[str, Any] | None) -> dict[str, Any]:
    """foundry.json's `pii` report and `pii_scrubber` state (the scrubber runs again on
    every served record) and the `leakage` section (`data.dataset.check_leakage`)."""
    sections: dict[str, Any] = {}
    if splits.pii is not None:
        sections["pii"] = splits.pii
        sections["pii_scrubber"] = splits.scrubber.state_dict()
    if leakage is not None:
        sections["leakage"] = leakage
    return sections


def class_weights(setting: Any, y: np.ndarray, task: Any) -> np.ndarray | None:
    """Per-row training weights from `model.class_weight` (None: unweighted)."""
    if setting is None:
        return None
    if not task.is_classification:
        raise ConfigError(
            "model.class_weight needs a classification target; "
            f"'{task.target}' is a number", hint="remove model.class_weight",
        )
    classes = [str(c) for c in task.classes]
    if setting == "balanced":
        counts = np.bincount(y.astype(np.int64), minlength=len(classes)).astype(np.float64)
        per_class = len(y) / (len(classes) * np.maximum(counts, 1.0))
    else:
        unknown = sorted(set(setting) - set(classes))
        if unknown:
            raise ConfigError(
                f"model.class_weight: {unknown} are not classes of '{task.target}' "
                f"(classes: {', '.join(classes)})"
            )
        per_class = np.array([float(setting.get(c, 1.0)) for c in classes])
    return per_class[y.astype(np.int64)]


def table_package(
    manifest: dict[str, Any],
    splits: Any,
    leakage: dict[str, Any] | None,
    evaluation: Evaluation,
    run: Run,
    *,
    weights: dict[str, Any],
    files: dict[str, Any] | None = None,
) -> PackageContents:
    """The package of a table model: `manifest` plus the data stage's sections
    (`data_sections`) and the evaluation's; a card only for an unregistered (tuning
    trial) package, since a registered one's card is rendered from the manifest."""
    manifest.update(data_sections(splits, leakage))
    manifest.update(evaluation.sections)
    return PackageContents(
        weights=weights,
        manifest=manifest,
        card=None if run.register else table_card(run.config, manifest, evaluation.metrics),
        files=files or {},
    )


def summarize_table(
    ref: str, fitted: Fitted, evaluation: Evaluation, run: Run, machines: int = 1
) -> None:
    """The metrics table on `evaluate.split` and the training cost line."""
    from foundry.economics import training_cost_line

    cfg, say = run.config, run.say
    title = f"{ref or cfg.name} — {cfg.evaluate.split} metrics"
    say.metrics(evaluation.metrics, fitted.model.task, title=title)
    say.info(training_cost_line(fitted.result.seconds, cfg.cost, machines=machines))


class PreprocessorView:
    """Inputs built on a fitted shared `Preprocessor` (`self.base`): what `Predictor`,
    the API and the evaluation read from a preprocessor, delegated to it. Subclasses
    set `base` and add their own encoding (`transform`, `transform_records`)."""

    base: Any

    @property
    def target(self) -> Any:
        return self.base.target

    @property
    def task(self) -> Any:
        return self.base.task

    @property
    def schema(self) -> Any:
        return self.base.schema

    def prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.base.prepare(df)

    def decode_labels(self, indices: np.ndarray) -> np.ndarray:
        return self.base.decode_labels(indices)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        return self.base.denormalize(values)
