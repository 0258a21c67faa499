"""Models the report tests read: trained once per session, each in its own registry.

`audited`: a binary classifier whose positive class is the label `<b>x</b>` (it must show
as text, never as markup), with a fairness audit and mitigation, calibration, permutation
importance, an int8 variant from `foundry run`'s compress step, and a saved cost estimate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.serve.serve_app_support import shared_toy

MARKUP_LABEL = "<b>x</b>"


@dataclass(frozen=True)
class Trained:
    ref: str
    home: Path
    run_dir: Path
    csv: Path

    def registry(self):
        from foundry.registry import Registry

        return Registry(self.home)


def _audited(root: Path) -> Trained:
    import foundry
    from foundry.economics import estimate, save

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({
        "age": rng.normal(40, 10, n).round(1),
        "income": rng.normal(50, 20, n).round(2),
        "group": rng.choice(["north", "south"], n),
        "color": rng.choice(["red", "green", "blue"], n),
    })
    score = df.age + (df.color == "red") * 10 + rng.normal(0, 5, n)
    df["label"] = np.where(score > 45, MARKUP_LABEL, "low")
    root.mkdir(parents=True, exist_ok=True)
    csv = root / "audited.csv"
    df.to_csv(csv, index=False)
    config = {
        "name": "audited",
        "data": {"path": str(csv)},
        "features": {"target": "label"},
        "train": {"epochs": 3, "batch_size": 32},
        "evaluate": {"fairness": {"sensitive_features": ["group"],
                                  "mitigation": {"constraint": "demographic_parity"}}},
        "compress": {"methods": ["int8"], "repeats": 3},
        "output_dir": str(root / "runs"),
    }
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.run(config, progress=False, quiet=True)
        registry = Trained(result.model_ref, home, result.run_dir, csv).registry()
        # a supplied throughput: the arithmetic of `foundry cost` without timing anything
        save(estimate(result.model_ref, throughput=500.0, registry=registry), registry)
    return Trained(result.model_ref, home, result.run_dir, csv)


_CACHE: dict[tuple[Path, str], Trained] = {}


@pytest.fixture(scope="session")
def audited(tmp_path_factory) -> Trained:
    key = (tmp_path_factory.getbasetemp(), "audited")
    if key not in _CACHE:
        _CACHE[key] = _audited(tmp_path_factory.mktemp("audited"))
    return _CACHE[key]


@pytest.fixture(scope="session")
def regressor(tmp_path_factory) -> Trained:
    toy = shared_toy(tmp_path_factory, regression=True)
    from foundry.registry import Registry

    record = Registry(toy.home).resolve(toy.ref)
    runs = [p for p in (toy.csv.parent / "runs").iterdir() if (p / "COMPLETED").is_file()]
    return Trained(record.ref, toy.home, runs[0], toy.csv)


@pytest.fixture(scope="session")
def language_model(tmp_path_factory) -> Trained:
    import foundry

    root = tmp_path_factory.mktemp("gpt")
    corpus = root / "c.txt"
    corpus.write_text("\n\n".join(["The cat sat on the mat."] * 30))
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.train({
            "name": "tinyg",
            "data": {"path": str(corpus)},
            "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                      "context_length": 64, "vocab_size": 300},
            "train": {"epochs": 2, "batch_size": 8},
            "output_dir": str(root / "runs"),
        }, progress=False, quiet=True)
    return Trained(result.model_ref, home, result.run_dir, corpus)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `foundry ARGS...` through the `main()` the console script calls."""

    def run(*args: str, home: Path | None = None) -> CliResult:
        from foundry.cli import main

        if home is not None:
            monkeypatch.setenv("FOUNDRY_HOME", str(home))
        monkeypatch.setattr(sys, "argv", ["foundry", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
