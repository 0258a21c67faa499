"""The model-family interface: what every family implements and the pipeline calls.

A *family* is one kind of model with its own way to fit (the neural networks over
encoded columns, our GPT, Hugging Face checkpoints; next gbm, n-gram text). The
pipeline (`foundry.pipeline.train`) drives every family through the same five stages,
in this order, and knows nothing else about it:

    data      = family.prepare(run)                     # read, split, fit what is fitted
                                                        # on train (preprocessing, tokenizer)
    fitted    = family.fit(data, run.config.train, run) # -> Fitted (model + FitResult)
    evaluated = family.evaluate(fitted, data, run)      # -> Evaluation (metrics, sections)
    contents  = family.package(fitted, data, evaluated, run)  # -> PackageContents
    ...registry stores `contents`...
    family.summarize(ref, fitted, evaluated, run)       # the run's last lines

and, after training, what serving and `foundry.load` use:

    model  = family.load(package, ref)                  # state from a package
    scores = family.outputs(model, batch)               # raw scores for a batch

`fitted.model` is the in-memory counterpart of `family.load(...)`'s result (the same
kind of object), so "fit → package → load gives the same outputs" is one comparison.
The conformance suite (tests/models/test_family_conformance.py) checks this for every
registered family.

Optional hooks are declared, not inherited: `supports`, a frozenset naming what the
family does beyond the stages above (`explain`, `calibration`, `fairness`, `compress`,
`privacy`, `generate`); `foundry run` reads it instead of model type names, and the
conformance suite checks each declared hook. A family is a plain class, not a subclass
of anything: there is no base class to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from foundry.config import LoadedConfig
from foundry.config.schema import FoundryConfig
from foundry.console import Reporter

__all__ = ["Evaluation", "Fitted", "ModelFamily", "PackageContents", "Run"]


@dataclass
class Run:
    """What the pipeline hands every stage of a family: the config, where the run
    writes, how it reports, and what the caller asked for."""

    loaded: LoadedConfig
    out_dir: Path
    """The run directory (checkpoints, metrics.jsonl, metrics.json); it exists from
    `fit` on."""
    say: Reporter
    resume: bool = False
    progress: bool = True
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None
    """Each epoch's (gbm: every few rounds') metrics (what `foundry tune` prunes on);
    raising stops the run, except `training.epochs.StopTraining`, which ends training
    as early stopping does, keeping the best epoch (a model search's time budget)."""
    register: bool = True
    """False: the package goes to `<out_dir>/package`, not the registry (tuning)."""

    @property
    def config(self) -> FoundryConfig:
        return self.loaded.config


@dataclass
class Fitted:
    """A trained model. `model` is what `family.load` would return for its package
    (a `Predictor`, `HFTextPredictor`, language model or embedder), in memory."""

    model: Any
    result: Any = None
    """The `FitResult` (history, best epoch, seconds, state_dict); None when the family
    trains nothing (a pretrained embedder packaged as it is)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Whatever else the family's later stages need (tokenizer, counts, ...)."""
    holdout: Any = None
    """When `model` also trained on the validation rows (gbm refits on train + val), the
    same fit before that, which did not: whatever is fitted or scored on the validation
    split (temperature, fairness thresholds, `auto`'s ranking) uses it. None: `model`
    never saw the validation rows."""


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    """On the evaluation split; written to metrics.json and registered."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Manifest sections the evaluation adds (calibration, fairness, explanations)."""
    model: Any = None
    """`Fitted.model` as evaluation adjusted it (a calibration temperature, fairness
    thresholds): what the package will load as. None: `Fitted.model` unchanged."""


@dataclass
class PackageContents:
    """What goes into the registry, as `Registry.register` / `write_package` take it."""

    weights: dict[str, Any]
    """name → tensor, stored as model.safetensors."""
    manifest: dict[str, Any]
    """foundry.json: everything `family.load` needs, without the config file."""
    card: str | None = None
    """model card markdown; None: rendered from the manifest at registration."""
    files: dict[str, Any] = field(default_factory=dict)
    """extra files: name → str / bytes / a folder to copy (tokenizer.json, hf/)."""
    cleanup: Callable[[], None] | None = None
    """Called once the package is stored (a temporary folder in `files`)."""


class ModelFamily(Protocol):
    """One kind of model. Register an implementation with `@register_family(name)`."""

    name: str
    """The `model.type` values it trains are registered with it (see registry.py)."""

    def prepare(self, run: Run) -> Any:
        """Read and split the data; fit what is fitted on the training split only.
        Bad data should fail here: the run directory is created after this returns
        (a family that writes into it here, e.g. a tokenizer to resume with, creates it)."""
        ...

    def fit(self, data: Any, train: Any, run: Run) -> Fitted:
        """Train on `data` under `train` (the config's `TrainConfig`)."""
        ...

    def evaluate(self, fitted: Fitted, data: Any, run: Run) -> Evaluation:
        """Metrics on `evaluate.split` (and the trust sections the family supports)."""
        ...

    def package(
        self, fitted: Fitted, data: Any, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        """The weights, manifest, card and files that `load` rebuilds the model from."""
        ...

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        """The run's closing lines (metric table, perplexity...)."""
        ...

    def load(self, package: Any, ref: str) -> Any:
        """The model a registered package holds (what `foundry.load` returns)."""
        ...

    def outputs(self, model: Any, batch: Any) -> Any:
        """Raw scores of `model` (`load`'s result or `Fitted.model`) for one batch:
        logits / values `[rows, n_outputs]`, embeddings, or greedy continuations."""
        ...
