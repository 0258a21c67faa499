"""foundry: from raw data to a model you can sell.

    run = foundry.train("config.yaml")          # train, evaluate, register
    model = foundry.load("adult:latest")         # a Predictor
    model.predict(df)                            # labels and probabilities

Submodules import lazily so `import foundry` and `foundry --help` stay fast.

These functions are quiet: what the CLI prints goes to the `foundry` logger (status at
INFO, warnings at WARNING) and progress bars stay off. `verbose=True` prints as the CLI
does, bars included; `logging.basicConfig(level=logging.INFO)` shows the lines in a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundry.version import __version__

__all__ = [
    "ConfigError",
    "DataError",
    "FoundryError",
    "ModelError",
    "TrainError",
    "__version__",
    "compress",
    "evaluate",
    "init",
    "load",
    "run",
    "train",
]

from foundry.console import output as _output
from foundry.errors import ConfigError, DataError, FoundryError, ModelError, TrainError

if TYPE_CHECKING:
    from foundry.evaluation.run import EvaluationResult
    from foundry.pipeline import TrainResult
    from foundry.predictor import Predictor


def train(
    config: Any, overrides: list[str] | None = None, *, verbose: bool = False, **kwargs: Any
) -> TrainResult:
    """Train, evaluate and register the model a config (path, dict) describes."""
    from foundry.pipeline import train as _train

    with _output(console=verbose):
        return _train(config, overrides, **kwargs)


def run(
    config: Any, overrides: list[str] | None = None, *, verbose: bool = False, **kwargs: Any
) -> TrainResult:
    """Run every stage the config describes: train → evaluate → register, and compress
    when the config has a `compress:` section."""
    from foundry.pipeline import run as _run

    with _output(console=verbose):
        return _run(config, overrides, **kwargs)


def compress(ref: str, config: Any = None, *, verbose: bool = False, **kwargs: Any) -> Any:
    """Compressed variants of a registered model, each registered and measured."""
    from foundry.compression import compress as _compress

    with _output(console=verbose):
        return _compress(ref, config, **kwargs)


def load(ref: Any) -> Predictor:
    """Load a registered model (`name`, `name:3`, `name:latest`) or a package directory."""
    from foundry.predictor import load as _load

    return _load(ref)


def evaluate(ref: str, data: Any, *, output: Any = None, verbose: bool = False) -> EvaluationResult:
    """Metrics of a registered model on a labelled data file."""
    from foundry.evaluation.run import evaluate_model

    with _output(console=verbose):
        return evaluate_model(ref, data, output=output)


def init(data: Any, target: str | None, *, verbose: bool = False, **kwargs: Any) -> Any:
    """Write a config with inferred feature types and the model for the data (gbm, ngram,
    cnn; hf with `pretrained=`; a recommender with `task="recommend"`, no target);
    returns its path."""
    from foundry.config.init import init_config

    with _output(console=verbose):
        return init_config(data, target, **kwargs)
