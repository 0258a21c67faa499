"""`foundry --version`, shell completion, and what the Python API prints (nothing, unless
asked: its status lines go to the `foundry` logger) against the CLI (as before)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import foundry
from foundry.cli import app
from foundry.extras import DISTRIBUTION

runner = CliRunner()


def test_version_prints_the_version_and_the_distribution():
    result = runner.invoke(app, ["--version"], prog_name="foundry")
    assert result.exit_code == 0
    assert result.output.strip() == f"foundry {foundry.__version__} ({DISTRIBUTION})"


def test_show_completion_prints_a_bash_script_that_completes_commands(monkeypatch):
    # typer picks the shell from the parent processes (shellingham): make it bash here,
    # whatever runs the tests
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: "bash")
    result = runner.invoke(app, ["--show-completion"], prog_name="foundry")
    assert result.exit_code == 0, result.output
    assert "complete -o default -F _foundry_completion foundry" in result.output
    assert "_FOUNDRY_COMPLETE=complete_bash" in result.output
    # what that script asks the program when the user presses TAB after `foundry models `
    env = {"_FOUNDRY_COMPLETE": "complete_bash", "COMP_WORDS": "foundry models ", "COMP_CWORD": "2"}
    asked = runner.invoke(app, [], prog_name="foundry", env=env)
    offered = asked.output.split()
    assert {"list", "show", "verify", "tag", "alias", "delete", "export", "import"} <= set(offered)
    assert "predict" not in offered  # a top-level command, not one of models'



@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a config given as a dict writes its run under the cwd
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=120), "c": rng.choice(["a", "b"], 120)})
    df["y"] = np.where(df.x > 0, "yes", "no")
    df.to_csv(tmp_path / "t.csv", index=False)
    return {
        "name": "quiet",
        "data": {"path": str(tmp_path / "t.csv")},
        "features": {"target": "y"},
        "model": {"type": "gbm", "n_estimators": 5},
    }


def test_the_python_api_is_quiet_and_logs_to_the_foundry_logger(config, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="foundry"):
        result = foundry.train(config)
    assert result.model_ref == "quiet:1"
    assert capsys.readouterr() == ("", "")
    messages = [r.getMessage() for r in caplog.records if r.name == "foundry"]
    assert any(m.startswith("run directory: ") for m in messages)
    assert any("accuracy" in m for m in messages)  # the metrics table, as text


def test_verbose_prints_as_the_cli_does(config, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="foundry"):
        foundry.train(config, verbose=True)
    err = capsys.readouterr().err
    assert "run directory: " in err and "accuracy" in err
    assert not [r for r in caplog.records if r.name == "foundry"]
