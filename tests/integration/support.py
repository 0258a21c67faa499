"""Plain helpers for the integration tests (data makers, config writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def adult_like(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A small census-like table: numbers, categories, a binary input, missing values."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    hours = rng.normal(40, 10, n).round(1)
    education = rng.choice(["hs", "college", "bachelors", "masters", "phd"], n)
    sex = rng.choice(["male", "female"], n)
    workclass = rng.choice(["private", "gov", "self", None], n, p=[0.6, 0.2, 0.15, 0.05])
    edu_level = (
        pd.Series(education)
        .map({"hs": 0, "college": 1, "bachelors": 2, "masters": 3, "phd": 4})
        .to_numpy()
    )
    logit = 0.04 * (age - 40) + 0.05 * (hours - 40) + 0.8 * edu_level - 1.5
    income = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    age[rng.random(n) < 0.03] = np.nan
    return pd.DataFrame(
        {
            "age": age,
            "hours": hours,
            "education": education,
            "sex": sex,
            "workclass": workclass,
            "income": income,
        }
    )


def write_config(path: Path, data: str, target: str, **sections) -> Path:
    config = {
        "name": sections.pop("name", "m"),
        "data": {"path": data},
        "features": {"target": target},
        **sections,
    }
    config.setdefault("train", {}).setdefault("epochs", 3)
    path.write_text(yaml.safe_dump(config))
    return path
