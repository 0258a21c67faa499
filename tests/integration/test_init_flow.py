"""`foundry init` + `foundry train` with no edits, on the tables issue 15 names: a text
table whose unique package names carry the label trains an n-gram model on them; a plain
table trains gradient-boosted trees."""

from __future__ import annotations

import json
import random

import pandas as pd
import yaml
from tests.config.init_tables import WORDS, package_table


def test_init_keeps_unique_package_names_as_text_and_the_ngram_model_learns_from_them(
    cli, tmp_path
):
    """The description is noise drawn alike for every section: only the package name
    (`python3-...`, `lib...-perl`, `golang-...`, `node-...`) tells the section, so a test
    accuracy far above chance means the name was an input, read as text."""
    rng = random.Random(3)
    df = package_table(400)
    df["description"] = [" ".join(rng.choices(WORDS, k=6)) for _ in range(len(df))]
    df = df.drop(columns="size")
    df.to_csv(tmp_path / "packages.csv", index=False)
    r = cli("init", "packages.csv", "--target", "section", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "init: model ngram:" in r.err and "left out" not in r.err
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["model"] == {"type": "ngram"}
    inputs = {f["name"]: f["type"] for f in config["features"]["inputs"]}
    assert inputs == {"package": "text", "description": "text"}
    r = cli("train", "config.yaml", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["metrics"]["accuracy"] >= 0.9  # chance: 0.25


def test_init_on_a_table_trains_gradient_boosted_trees(cli, tmp_path):
    rng = random.Random(0)
    rows = [(rng.gauss(0, 1), rng.choice("abc")) for _ in range(300)]
    df = pd.DataFrame(
        {
            "x": [x for x, _ in rows],
            "group": [g for _, g in rows],
            "y": ["hi" if x + (g == "a") > 0.5 else "lo" for x, g in rows],
        }
    )
    df.to_csv(tmp_path / "t.csv", index=False)
    r = cli("init", "t.csv", "--target", "y", cwd=tmp_path)
    assert r.code == 0 and "init: model gbm:" in r.err, r.err
    r = cli("train", "config.yaml", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["metrics"]["accuracy"] >= 0.85
