"""Hyper-parameter search (`foundry tune`): Optuna studies over any config key.

tune(config, overrides) -> TuneResult      the config's `tune:` section says what to search

Trials train through `foundry.pipeline.train`; studies live in an Optuna RDB storage
(a SQLite file by default, PostgreSQL to spread trials over machines).
"""

from foundry.tuning.study import TuneResult, tune

__all__ = ["TuneResult", "tune"]
