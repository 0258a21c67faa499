"""The search space: `tune.params` → Optuna `suggest_*` calls → `key=value` overrides.

A trial's params are applied to the config exactly as `foundry train CONFIG key=value`
applies overrides (`foundry.config.apply_override`), then the whole config is validated
again, so a searched value obeys every rule a hand-written one does.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from foundry.config import LoadedConfig, apply_override
from foundry.config.load import validate_config
from foundry.config.schema import ParamSpec
from foundry.errors import ConfigError

__all__ = [
    "TrialSeededRandomSampler",
    "apply_params",
    "check_compatible",
    "check_space",
    "config_values",
    "grid_space",
    "suggest",
    "trial_config",
]

_OPTUNA_SCALARS = (type(None), bool, int, float, str)
"""What `suggest_categorical` stores as is; other choices (lists of layer sizes...) are
stored as their JSON text."""


def _encode(value: Any) -> Any:
    return value if isinstance(value, _OPTUNA_SCALARS) else json.dumps(value)


def _choices(spec: ParamSpec) -> list[Any]:
    return [_encode(v) for v in spec.values or []]


def suggest(trial: optuna.Trial, params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Draw one value for each searched key; returns `{dotted key: config value}`."""
    drawn: dict[str, Any] = {}
    for key, spec in params.items():
        if spec.type == "choice":
            drawn[key] = trial.suggest_categorical(key, _choices(spec))
        elif spec.type == "int":
            low, high, step = int(spec.low), int(spec.high), int(spec.step or 1)
            drawn[key] = trial.suggest_int(key, low, high, step=step)
        else:
            log = spec.type == "log_float"
            drawn[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=log)
    return config_values(params, drawn)


def config_values(params: dict[str, ParamSpec], stored: dict[str, Any]) -> dict[str, Any]:
    """Trial params as Optuna stores them → config values (JSON-encoded choices decoded)."""
    values: dict[str, Any] = {}
    for key, value in stored.items():
        spec = params.get(key)
        if spec is not None and spec.type == "choice" and value in _choices(spec):
            value = spec.values[_choices(spec).index(value)]  # the value as written
        elif spec is not None and spec.type == "int":
            value = int(value)
        values[key] = value
    return values


def check_compatible(study: optuna.Study, params: dict[str, ParamSpec], where: str) -> None:
    """A study keeps the kind of each param (and a choice's list) from its first trial;
    a changed space fails here with the key, not deep inside the first new trial."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
        check_distribution_compatibility,
    )

    new: dict[str, Any] = {}
    for key, spec in params.items():
        if spec.type == "choice":
            new[key] = CategoricalDistribution(_choices(spec))
        elif spec.type == "int":
            new[key] = IntDistribution(int(spec.low), int(spec.high), step=int(spec.step or 1))
        else:
            log = spec.type == "log_float"
            new[key] = FloatDistribution(spec.low, spec.high, log=log, step=spec.step)
    for trial in study.get_trials(deepcopy=False):
        for key, old in trial.distributions.items():
            if key not in new:
                continue
            try:
                check_distribution_compatibility(old, new[key])
            except ValueError as exc:
                raise ConfigError(
                    f"tune.params.{key}: study '{study.study_name}' in {where} searched it "
                    f"differently ({old}): {exc}",
                    hint="keep the param's type and choices, or set tune.study_name to start "
                    "a new study",
                ) from None


def grid_space(params: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """Every value of each param for `GridSampler` (the config allows choice and int only)."""
    space: dict[str, list[Any]] = {}
    for key, spec in params.items():
        if spec.type == "choice":
            space[key] = _choices(spec)
        else:
            space[key] = list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    return space


def apply_params(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with each `key: value` applied as a `key=value` override."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        apply_override(out, f"{key}={json.dumps(value)}")  # JSON is YAML: read back as is
    return out


def trial_config(raw: dict[str, Any], values: dict[str, Any], base_dir: Path) -> LoadedConfig:
    """The validated config of one trial: `raw` (no tune section) with `values` applied."""
    return LoadedConfig(validate_config(apply_params(raw, values), origin="trial"), base_dir)


def check_space(raw: dict[str, Any], params: dict[str, ParamSpec]) -> None:
    """Fail before the first trial when a searched value makes an invalid config: each
    choice, and both ends of each range, are applied and validated one at a time."""
    for key, spec in params.items():
        if spec.type == "choice":
            candidates = list(spec.values or [])
        elif spec.type == "int":
            candidates = [int(spec.low), int(spec.high)]
        else:
            candidates = [spec.low, spec.high]
        for value in candidates:
            try:
                validate_config(apply_params(raw, {key: value}), origin="trial")
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.params.{key}: the value {value!r} makes an invalid config: "
                    f"{exc.message.removeprefix('trial: ')}"
                ) from None


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search whose draws depend only on (seed, trial number, param name).

    Trial 7 gets the same params however many processes share the study, and two
    processes started at once with the same seed never draw the same trials.
    """

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        # SeedSequence mixes the three well: nearby trial numbers give unrelated draws
        entropy = [self._base_seed % 2**32, trial.number, zlib.crc32(param_name.encode())]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        one_draw = optuna.samplers.RandomSampler(seed=seed)
        return one_draw.sample_independent(study, trial, param_name, param_distribution)


class TrialSeededTPESampler(optuna.samplers.TPESampler):
    """TPE whose random start-up trials are those of `TrialSeededRandomSampler` and whose
    candidate draws are seeded by (seed, trial number): two processes that share a
    study and a seed explore different points instead of the same ones twice."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._base_seed = seed
        self._random_sampler = TrialSeededRandomSampler(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        entropy = [self._base_seed % 2**32, trial.number]
        self._rng.rng.seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        super().before_trial(study, trial)
