"""Shared by the app, batching, errors and process tests: a small real model, an app
around it, and an HTTP client on the app (ASGI, no sockets); `run_cli` for the tests
that drive the `foundry` command (the server itself runs in a subprocess:
`foundry.serve.loadtest.Server`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from foundry.config.schema import PlanConfig, ServeConfig

PLANS = {
    "test": PlanConfig(
        included_units=1_000_000, requests_per_minute=100_000, max_records_per_request=50
    ),
    "capped": PlanConfig(included_units=3, hard_limit=True, requests_per_minute=1_000),
    "slow": PlanConfig(included_units=1_000, requests_per_minute=2),
    "only_other": PlanConfig(models=["other"], requests_per_minute=1_000),
}


@dataclass(frozen=True)
class Toy:
    """A trained, registered model: its reference, registry home and input rows."""

    ref: str
    home: Path
    csv: Path
    rows: pd.DataFrame
    """The input columns, as `foundry predict` reads them from the CSV."""

    @property
    def name(self) -> str:
        return self.ref.split(":")[0]

    def records(self, n: int | None = None) -> list[dict]:
        """Rows as JSON records (null for missing values), as a client would send them."""
        rows = self.rows if n is None else self.rows.head(n)
        return json.loads(rows.to_json(orient="records"))

    def expected(self, records: list[dict]) -> pd.DataFrame:
        """`Predictor.predict` on the same rows (the reference answer)."""
        from foundry.predictor import load
        from foundry.registry import Registry

        predictor = load(self.ref, registry=Registry(self.home))
        return predictor.predict(pd.DataFrame.from_records(records, columns=list(self.rows)))


def train_toy(root: Path, *, regression: bool = False, name: str = "toy") -> Toy:
    """Train a 2-epoch MLP on a generated table (numbers with a gap, a category, a binary)."""
    import foundry

    rng = np.random.default_rng(0)
    n = 160
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.normal(50, 20, n).round(2),
            "color": rng.choice(["red", "green", "blue"], n),
            "member": rng.choice(["yes", "no"], n),
        }
    )
    df.loc[3, "income"] = np.nan
    if regression:
        df["spend"] = df.age * 2 + (df.color == "red") * 5 + rng.normal(0, 1, n)
        target = "spend"
    else:
        df["tier"] = np.where(df.age + (df.color == "red") * 10 > 45, "high", "low")
        target = "tier"
    root.mkdir(parents=True, exist_ok=True)
    csv = root / f"{name}.csv"
    df.to_csv(csv, index=False)
    home = root / "home"
    config = {
        "name": name,
        "data": {"path": str(csv)},
        "features": {"target": target},
        "train": {"epochs": 2, "batch_size": 32},
        "output_dir": str(root / "runs"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        result = foundry.train(config, progress=False, quiet=True)
    rows = pd.read_csv(csv).drop(columns=[target])
    return Toy(result.model_ref, home, csv, rows)


_TRAINED: dict[tuple[Path, bool], Toy] = {}


def shared_toy(tmp_path_factory, *, regression: bool = False) -> Toy:
    """`train_toy` once per test session (the four serve test modules share it; tests
    never write to its registry)."""
    key = (tmp_path_factory.getbasetemp(), regression)
    if key not in _TRAINED:
        name = "spend" if regression else "toy"
        _TRAINED[key] = train_toy(tmp_path_factory.mktemp(name), regression=regression, name=name)
    return _TRAINED[key]


def make_app(toy: Toy, gate_home: Path, *, admin_token: str | None = None, **config):
    """An app serving `toy` with a Gate on its own database (`gate_home`), PLANS."""
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    serve_config = ServeConfig(plans=PLANS, **config)
    gate = Gate(serve_config.all_plans(), home=gate_home)
    app = create_app(serve_config, [toy.ref], gate=gate, home=toy.home, admin_token=admin_token)
    return app, gate


@asynccontextmanager
async def serving(app) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (models loaded) and a client on it; errors stay responses."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def run_cli(root: Path, env: dict, *args: str) -> str:
    """`foundry ARGS` run in `root` with `env` as the whole environment: its stdout,
    stripped (a non-zero exit fails the test with its stderr)."""
    return foundry_cli(root, env, *args).stdout.strip()


def foundry_cli(
    root: Path, env: dict, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """`foundry ARGS` through the console script's `main()`, in this process, in `root`
    with `env` as the whole environment (restored afterwards): a `python -m foundry`
    subprocess would spend 1-2 s of CPU importing before each command (~30 in the e2e
    tests). With `check`, a non-zero exit fails the test with its stderr; an exception
    that escapes `main()` (a user would see a traceback) fails it in any case. Servers
    are the exception: they run in subprocesses (`foundry.serve.loadtest.Server`)."""
    from foundry.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in set(os.environ) - set(env):
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setattr(sys, "argv", ["foundry", *map(str, args)])
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as done:
            code = done.code or 0
    if isinstance(code, str):  # sys.exit("message"): the interpreter prints it, exit 1
        err.write(f"{code}\n")
        code = 1
    result = subprocess.CompletedProcess(["foundry", *args], code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, f"foundry {' '.join(map(str, args))} exited {code}:\n{result.stderr}"
    return result


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_matches(predictions: list[dict], expected: pd.DataFrame, target: str) -> None:
    """Served predictions == Predictor.predict: same labels, probabilities within 1e-6."""
    assert len(predictions) == len(expected)
    for pred, (_, row) in zip(predictions, expected.iterrows(), strict=True):
        if "value" in pred:
            assert pred["value"] == pytest.approx(float(row[target]), abs=1e-6)
            continue
        assert pred["label"] == row[target]
        for cls, p in pred["probabilities"].items():
            assert p == pytest.approx(float(row[f"probability_{cls}"]), abs=1e-6)
