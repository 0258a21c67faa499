"""The project's real tables, for false-positive checks: scikit-learn's bundled data
sets, Palmer penguins and the tables the examples train on (examples/make_data.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def real_tables(tmp_path: Path) -> dict[str, tuple[pd.DataFrame, str]]:
    """name -> (table, target column). The examples' tables are written under `tmp_path`."""
    from palmerpenguins import load_penguins
    from sklearn import datasets

    tables = {}
    for name in ("iris", "wine", "breast_cancer", "digits", "diabetes"):
        tables[name] = (getattr(datasets, f"load_{name}")(as_frame=True).frame, "target")
    linnerud = datasets.load_linnerud(as_frame=True)
    tables["linnerud"] = (pd.concat([linnerud.data, linnerud.target], axis=1), "Weight")
    penguins = load_penguins()
    for target in ("species", "sex", "island"):
        tables[f"penguins/{target}"] = (penguins, target)

    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "make_data.py")
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.DATA = tmp_path  # this module's own copy: the examples' folder is untouched
    for maker, target in (("binary10", "label"), ("line", "y"), ("reviews", "sentiment")):
        tables[maker] = (pd.read_csv(getattr(make_data, maker)()), target)
    return tables
