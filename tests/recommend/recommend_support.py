"""Shared by the recommender tests: a run config on planted interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundry.recommend.planted import planted_interactions


def planted_config(
    root: Path, name: str, model: dict[str, Any], *, n_users: int, seed: int
) -> dict[str, Any]:
    """Writes `planted_interactions(n_users, seed=seed)` to root/events.csv and returns a
    config that trains `model` on it (weighted, time-split), its runs under root/runs."""
    planted_interactions(n_users, seed=seed).to_csv(root / "events.csv", index=False)
    return {
        "name": name,
        "data": {"path": str(root / "events.csv")},
        "recommend": {"user": "user", "item": "item", "weight": "weight", "time": "ts"},
        "model": model,
        "output_dir": str(root / "runs"),
    }


def recommend_app(ref: str, home: Path, gate_home: Path) -> tuple[Any, Any]:
    """(the real serving app for `ref` from registry `home`, its gate): a key from
    `gate.create_key("acme", "test")` calls it."""
    from foundry.config.schema import PlanConfig, ServeConfig
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    config = ServeConfig(plans={"test": PlanConfig(included_units=1000, requests_per_minute=1000)})
    gate = Gate(config.all_plans(), home=gate_home)
    return create_app(config, [ref], gate=gate, home=home), gate
