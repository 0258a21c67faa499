"""Issue 14 items 7 and 8 on a COMPAS-shaped table: `foundry init` leaves out the
defendants' names, birth dates, address and id, and the columns that record the outcome,
and says why (console and YAML comments); `train` warns loudly about a leak the config
still uses; the card lists the leaks; no name, date or address reaches the package."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from tests.data.compas_like import LEAKS, PERSONAL, compas_like

from foundry.config.init import init_config
from foundry.console import Reporter
from foundry.data.dataset import Splits, check_leakage
from foundry.data.infer import ResolvedFeatures
from foundry.evaluation.card import build_card, render_card

TARGET = "two_year_recid"


def _inputs(path) -> list[str]:
    return [f["name"] for f in yaml.safe_load(path.read_text())["features"]["inputs"]]


def test_init_leaves_out_personal_and_leaky_columns_and_says_why(tmp_path, capsys):
    compas_like(n=600).to_csv(tmp_path / "compas.csv", index=False)
    path = init_config(tmp_path / "compas.csv", TARGET, output=tmp_path / "c.yaml",
                       say=Reporter())  # fmt: skip
    inputs = set(_inputs(path))
    assert not inputs & (PERSONAL | LEAKS), inputs & (PERSONAL | LEAKS)
    assert {"age", "priors_count", "juv_fel_count", "sex", "race", "decile_score"} <= inputs
    text = path.read_text()
    comments = [line for line in text.splitlines() if line.startswith("#   ")]
    for column in PERSONAL | LEAKS:
        assert any(line.startswith(f"#   {column}: ") for line in comments), column
    assert "#   dob: personal data (birth date: column name 'dob')." in text
    assert "#   end: possible target leakage (alone it predicts" in text
    err = capsys.readouterr().err
    assert "'first' left out of features.inputs: personal data" in err
    assert "'is_recid' left out of features.inputs: possible target leakage" in err


def test_init_leaves_nothing_out_of_an_ordinary_table(tmp_path):
    from palmerpenguins import load_penguins

    load_penguins().to_csv(tmp_path / "penguins.csv", index=False)
    path = init_config(tmp_path / "penguins.csv", "species", output=tmp_path / "c.yaml")
    assert len(_inputs(path)) == 7
    assert "Left out" not in path.read_text()


def test_train_warns_loudly_about_a_leak_still_among_the_inputs(capsys):
    from foundry.config.schema import FeatureConfig, FoundryConfig

    df = compas_like(n=600).drop(columns=list(PERSONAL))
    inputs = [FeatureConfig(name=c, type="number") for c in ("age", "priors_count", "event")]
    resolved = ResolvedFeatures(inputs=inputs, target=TARGET, target_type="binary")
    splits = Splits(train=df.iloc[:500], val=df.iloc[500:550], test=df.iloc[550:])
    cfg = FoundryConfig.model_validate(
        {"data": {"path": "x.csv"}, "features": {"target": TARGET}}
    )
    section = check_leakage(cfg, splits, resolved, Reporter())
    err = capsys.readouterr().err
    assert "LEAKAGE: input 'event' gives the target away" in " ".join(err.split())
    assert "'is_recid' (not an input)" in " ".join(err.split())
    used = {d["column"]: d["input"] for d in section["columns"]}
    assert used["event"] is True and used["is_recid"] is False

    allowed = FoundryConfig.model_validate(
        {"data": {"path": "x.csv"},
         "features": {"target": TARGET, "leakage": {"allow": ["event"]}}}  # fmt: skip
    )
    check_leakage(allowed, splits, resolved, Reporter())
    assert "LEAKAGE" not in capsys.readouterr().err


def test_the_card_lists_leaks_and_warns_about_a_used_one():
    manifest = {
        "config": {"name": "m"},
        "features": {"target": TARGET, "inputs": [{"name": "event", "type": "number"}]},
        "task": {"task": "binary", "target": TARGET, "classes": ["0", "1"]},
        "leakage": {"threshold": 0.98, "columns": [
            {"column": "event", "rule": "alone", "reason": "alone it predicts ...",
             "score": 0.99, "input": True, "allowed": False},
            {"column": "is_recid", "rule": "name", "reason": "its name shares 'recid'",
             "score": None, "input": False, "allowed": False},
        ]},
    }  # fmt: skip
    card = build_card(manifest, {"accuracy": 0.97})
    assert [d["column"] for d in card["leakage"]["columns"]] == ["event", "is_recid"]
    assert any("event give the target away" in w for w in card["warnings"])
    md = render_card(card)
    assert "## Target leakage" in md and "| event | alone it predicts ... | **yes** |" in md
    assert "| is_recid | its name shares 'recid' | no |" in md


@pytest.mark.slow
def test_compas_like_table_through_the_cli(tmp_path, foundry_home, cli):
    """init + train through the real command: honest accuracy, the leak the user put back
    is warned about and carded, and no planted name, birth date or address is anywhere in
    the package folder."""
    df = compas_like(n=800, seed=3)
    df.to_csv(tmp_path / "compas.csv", index=False)
    r = cli("init", "compas.csv", "--target", TARGET, cwd=tmp_path)
    assert r.code == 0, r.err
    assert "'dob' left out of features.inputs" in r.err
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    # the user puts one leak back: train must say so, loudly
    config["features"]["inputs"].append({"name": "event", "type": "number"})
    assert config["model"] == {"type": "gbm"}  # a table: trains in about a second
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    r = cli("train", "config.yaml", cwd=tmp_path)
    assert r.code == 0, r.err
    out = " ".join((r.out + r.err).split())
    assert "LEAKAGE: input 'event' gives the target away" in out
    assert "identifier column 'first' dropped (person name" in out
    assert "identifier column 'dob' dropped (birth date" in out
    assert "none found" not in out  # the defect: "PII: none found in 27 columns"

    folder = next(foundry_home.rglob("foundry.json")).parent
    text = "\n".join(p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file())
    lowered = text.lower()
    planted = set(df["name"]) | set(df["dob"]) | set(df["residence"])
    assert not [v for v in planted if v.lower() in lowered]
    # single names as whole words (short ones like "ed" are parts of ordinary words)
    words = set(re.findall(r"[a-z]+", lowered))
    assert not {v for v in set(df["first"]) | set(df["last"]) if len(v) >= 5} & words
    card = json.loads((folder / "card.json").read_text())
    leaks = {d["column"]: d["input"] for d in card["leakage"]["columns"]}
    assert leaks["event"] is True and leaks["is_recid"] is False and "end" in leaks
    assert {d["column"] for d in card["pii"]["identifier_columns"]} >= PERSONAL
