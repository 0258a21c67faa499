"""`foundry runs list` and `foundry runs compare` on runs foundry trained."""

from __future__ import annotations

import json

import pytest
from tests.tracking.test_tracking import _config
from typer.testing import CliRunner

import foundry
from foundry.cli import app


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    """Two registered runs of one config that differ in two keys, and cwd beside them."""
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, {"type": "mlp", "layers": [8]}, {})
    config["output_dir"] = "runs"
    first = foundry.train(config, progress=False, quiet=True)
    config["model"]["layers"], config["train"]["epochs"] = [4], 2
    second = foundry.train(config, progress=False, quiet=True)
    return first, second


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})  # rich tables
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_list_and_compare(two_runs, tmp_path):
    first, second = two_runs
    listed = json.loads(_cli("runs", "list", "--json"))
    assert [r["model"] for r in listed] == ["tracked:2", "tracked:1"]  # newest first
    assert [r["epochs"] for r in listed] == [2, 3]
    assert listed[1]["metrics"]["accuracy"] == pytest.approx(first.metrics["accuracy"])
    assert first.run_dir.name in _cli("runs", "list")

    # by model ref and by folder name
    compared = json.loads(_cli("runs", "compare", "tracked:1", second.run_dir.name, "--json"))
    assert compared["differing"] == ["model.layers", "train.epochs"]
    assert [r["config"]["train.epochs"] for r in compared["runs"]] == ["3", "2"]
    table = _cli("runs", "compare", str(first.run_dir), "tracked:2")
    assert "2 of" in table and "model.layers" in table and "[8]" in table and "[4]" in table
    assert "train.batch_size" not in table  # the same in both: shown only with --all
    assert "train.batch_size" in _cli("runs", "compare", "tracked:1", "tracked:2", "--all")

    # from another folder: the registry still knows the runs of registered versions
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import os

    os.chdir(elsewhere)
    assert {r["model"] for r in json.loads(_cli("runs", "list", "--json"))} == {
        "tracked:1",
        "tracked:2",
    }
    missing = CliRunner().invoke(app, ["runs", "compare", "tracked:1", "nope"])
    assert missing.exit_code != 0 and "no run 'nope'" in str(missing.exception)
