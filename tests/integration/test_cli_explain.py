"""`foundry explain MODEL DATA`: tables per row, JSON with --output, permutation
importance with --importance, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import foundry


@pytest.fixture
def trained(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "c1": rng.choice(["a", "b", "c"], n),
        }
    )
    df["y"] = np.where(df.x1 + 2 * (df.c1 == "a") > 0.7, "yes", "no")
    df.to_csv(tmp_path / "train.csv", index=False)
    config = {
        "name": "toy",
        "data": {"path": str(tmp_path / "train.csv")},
        "features": {"target": "y"},
        "train": {"epochs": 5, "batch_size": 32},
        "output_dir": str(tmp_path / "runs"),
    }
    ref = foundry.train(config, progress=False, quiet=True).model_ref
    return ref, tmp_path


def test_explain_prints_tables_and_writes_json(cli, trained):
    ref, root = trained
    r = cli(
        "explain",
        ref,
        "train.csv",
        "--rows",
        "3",
        "--steps",
        "10",
        "--importance",
        "-o",
        "out/e.json",
        cwd=root,
    )
    assert r.code == 0, r.err
    assert r.out.count("row ") >= 3 and "attribution" in r.out
    assert "permutation importance: drop in accuracy" in r.out
    assert "wrote out/e.json" in r.out
    written = json.loads((root / "out" / "e.json").read_text())
    assert written["model"] == ref and written["steps"] == 10
    assert [set(row["attributions"]) for row in written["rows"]] == [{"x1", "noise", "c1"}] * 3
    assert {f["feature"] for f in written["importance"]["features"]} == {"x1", "noise", "c1"}

    r = cli("explain", ref, "train.csv", "--rows", "2", "--target", "yes", "--json", cwd=root)
    assert r.code == 0, r.err
    body = json.loads(r.out)
    assert [row["target_class"] for row in body["rows"]] == ["yes", "yes"]
    assert "importance" not in body


def test_explain_errors_are_one_line_and_exit_non_zero(cli, trained):
    ref, root = trained
    pd.read_csv(root / "train.csv").drop(columns=["c1"]).to_csv(root / "partial.csv")
    cases = {
        ("explain", "nope:1", "train.csv"): "nope",
        ("explain", ref, "partial.csv"): "['c1']",
        ("explain", ref, "train.csv", "--target", "maybe"): "classes: no, yes",
        ("explain", ref, "missing.csv"): "not found",
    }
    for args, expected in cases.items():
        r = cli(*args, cwd=root)
        assert r.code == 2, (args, r.out)
        assert r.err.startswith("error: ") and expected in r.err, (args, r.err)
        assert "Traceback" not in r.err
    r = cli("explain", ref, "train.csv", "--importance", cwd=root)
    assert r.code == 0  # labelled: fine
    pd.read_csv(root / "train.csv").drop(columns=["y"]).to_csv(root / "unlabelled.csv")
    r = cli("explain", ref, "unlabelled.csv", "--importance", cwd=root)
    assert r.code == 2 and "target column 'y'" in r.err
