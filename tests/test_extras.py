"""A core install (no extra) trains, predicts and serves a tabular model, and each
feature of an extra fails with one line naming the `pip install` that adds it.

The core install is simulated: tests/without_extras.py hides every extra's modules from
the import system in a subprocess, so this runs in the full dev environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foundry.extras import DISTRIBUTION, EXTRAS, MissingExtraError, install_command, require
from foundry.serve.loadtest import Server, free_port

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "without_extras.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# Modules whose distribution on PyPI has another name.
DISTRIBUTION_OF = {"mlflow": "mlflow-skinny", "tensorboardX": "tensorboardx", "faiss": "faiss-cpu"}


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


# ------------------------------------------------------------------ the declarations


def test_the_extras_in_pyproject_match_foundry_extras():
    project = PYPROJECT["project"]
    optional = project["optional-dependencies"]
    assert project["name"] == DISTRIBUTION
    for extra, modules in EXTRAS.items():
        names = {requirement_name(r) for r in optional[extra]}
        wanted = {DISTRIBUTION_OF.get(m, m) for m in modules}
        assert wanted <= names, f"extra {extra}: {modules} vs {sorted(names)}"
    core = {requirement_name(r) for r in project["dependencies"]}
    optional_modules = {m for modules in EXTRAS.values() for m in modules}
    assert not core & optional_modules, "an extra's library is a core dependency"
    # `all` holds every feature extra (what other extras add must be listed there too)
    in_all = {r.removeprefix(f"{DISTRIBUTION}[").removesuffix("]") for r in optional["all"]}
    assert in_all == set(optional) - {"all", "dev", "examples"}


def test_torch_has_no_upper_bound_in_the_metadata():
    (torch,) = [r for r in PYPROJECT["project"]["dependencies"] if requirement_name(r) == "torch"]
    assert "<" not in torch and "==" not in torch
    assert "torch==" in (ROOT / "constraints" / "cpu.txt").read_text()


def test_require_returns_the_module_or_names_the_install(monkeypatch):
    assert require("tune", "optuna", "search").__name__ == "optuna"
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an absent package looks like
    with pytest.raises(MissingExtraError) as caught:
        require("tune", "optuna", "hyper-parameter search")
    assert str(caught.value) == (
        f"hyper-parameter search needs optuna (not installed); install it with: "
        f"pip install '{DISTRIBUTION}[tune]'"
    )
    assert install_command("llm") == f"pip install '{DISTRIBUTION}[llm]'"


# ------------------------------------------------------ a core install, for real


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """Every command below, run in one subprocess with the extras hidden: the core
    commands first, then one feature of each extra."""
    work = tmp_path_factory.mktemp("core")
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "education": rng.choice(["hs", "bachelors", "masters"], n),
            "hours": rng.integers(10, 60, n),
        }
    )
    df["income"] = np.where(df.age + df.hours / 2 + rng.normal(0, 5, n) > 60, "high", "low")
    df.iloc[:160].to_csv(work / "train.csv", index=False)
    df.iloc[160:].to_csv(work / "test.csv", index=False)
    pd.DataFrame({"review": ["good stuff", "bad thing"] * 10, "label": ["pos", "neg"] * 10}).to_csv(
        work / "reviews.csv", index=False
    )
    (work / "hf.yaml").write_text(
        "name: rev\ndata: {path: reviews.csv}\nfeatures: {target: label}\n"
        "model: {type: hf, name_or_path: bert-base-uncased}\n"
    )
    commands = {
        "version": ["--version"],
        "help": ["--help"],
        "init": ["init", "train.csv", "-t", "income", "--name", "adult", "-q"],
        "train": ["train", "config.yaml", "-q"],
        "predict": ["predict", "adult:latest", "test.csv", "-o", "predictions.csv", "-q"],
        "key": ["keys", "create", "--name", "acme", "--plan", "trial"],
        "init_mlp": [
            "init",
            "train.csv",
            "-t",
            "income",
            "--name",
            "net",
            "--model",
            "mlp",
            "-o",
            "mlp.yaml",
            "-q",
        ],
        "train_mlp": ["train", "mlp.yaml", "train.epochs=1", "-q"],
        # one feature of each extra
        "report": ["report", "adult:1"],
        "tune": ["tune", "config.yaml"],
        "fairness": [
            "train",
            "config.yaml",
            "evaluate.fairness.sensitive_features=[education]",
            "-q",
        ],
        "privacy": ["train", "mlp.yaml", "train.epochs=1", "train.privacy.target_epsilon=3", "-q"],
        "explain": ["explain", "net:1", "test.csv", "--importance"],
        "onnx": ["compress", "net:1"],
        "llm": ["train", "hf.yaml"],
        "postgres": ["models", "list"],
        "s3": ["train", "config.yaml", "data.path=s3://bucket/train.csv", "-q"],
    }
    home = {"FOUNDRY_HOME": str(work / ".foundry")}
    specs = [{"args": args, "env": home} for args in commands.values()]
    specs[list(commands).index("postgres")]["env"] = {
        **home,
        "FOUNDRY_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:9/foundry",
    }
    (work / "commands.json").write_text(json.dumps(specs))
    subprocess.run(
        [sys.executable, str(DRIVER), "batch", "commands.json", "results.json"],
        cwd=work,
        check=True,
        timeout=600,
    )
    *results, modules = json.loads((work / "results.json").read_text())
    return work, dict(zip(commands, results, strict=True)), modules["modules"]


@pytest.mark.slow
def test_core_commands_work_without_any_extra(core):
    work, results, modules = core
    for name in ("version", "help", "init", "train", "predict", "key", "init_mlp", "train_mlp"):
        assert results[name]["code"] == 0, (name, results[name]["err"])
    assert results["version"]["out"].startswith("foundry ")
    assert len(pd.read_csv(work / "predictions.csv")) == 40
    hidden = {m for ms in EXTRAS.values() for m in ms}
    assert not [m for m in modules if m.partition(".")[0] in hidden]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("feature", "extra"),
    [
        ("report", "report"),
        ("tune", "tune"),
        ("fairness", "trust"),
        ("privacy", "trust"),
        ("explain", "trust"),
        ("onnx", "onnx"),
        ("llm", "llm"),
        ("postgres", "postgres"),
        ("s3", "s3"),
    ],
)
def test_each_extra_feature_fails_with_one_line_naming_the_install(core, feature, extra):
    result = core[1][feature]
    err = result["err"].strip()
    assert result["code"] == 2, err
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line == err.splitlines()[-1] and line.endswith(install_command(extra)), err


@pytest.mark.slow
def test_a_missing_training_extra_fails_before_the_run_starts(core):
    """Fairness is audited after training, DP-SGD starts in the loop: the missing extra
    is reported before a run directory exists (one per model: the plain `train`)."""
    work, results, _ = core
    assert results["fairness"]["err"].strip().count("\n") == 0
    assert results["privacy"]["err"].strip().count("\n") == 0
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert [r.split("-")[0] for r in runs] == ["adult", "net"]


@pytest.mark.slow
def test_a_core_install_serves_a_tabular_model(core):
    work, results, _ = core
    key = results["key"]["out"].strip()
    port = free_port()
    env = {**os.environ, "FOUNDRY_HOME": str(work / ".foundry")}
    command = [
        sys.executable,
        str(DRIVER),
        "cli",
        "serve",
        "adult",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with Server(command, env=env, log=work / "serve.log", cwd=work) as server:
        body = json.dumps({"records": [{"age": 40, "education": "hs", "hours": 50}]}).encode()
        request = urllib.request.Request(
            f"{server.url}/v1/models/adult/predict",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = json.loads(answer.read())["predictions"]
    assert predictions[0]["label"] in ("high", "low")
