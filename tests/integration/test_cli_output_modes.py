"""Output modes through the real entry point: `--json` prints one JSON document on
stdout and nothing else, `--quiet` prints only the result, and progress (forced on with
FOUNDRY_PROGRESS=1, as in CI logs) goes to stderr, never to stdout."""

from __future__ import annotations

import io
import json
import shutil

import pandas as pd
import pytest
import yaml
from tests.serve.serve_app_support import shared_toy

import foundry.predictor as predictor_module


@pytest.fixture(scope="module")
def toy_home(tmp_path_factory):
    """A copy of the shared toy's registry (compress, cost and run write into theirs)."""
    toy = shared_toy(tmp_path_factory)
    home = tmp_path_factory.mktemp("modes") / "home"
    shutil.copytree(toy.home, home)
    return toy, home


@pytest.fixture
def toy(toy_home, monkeypatch):
    toy, home = toy_home
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    monkeypatch.setenv("FOUNDRY_PROGRESS", "1")  # progress on although stderr is captured
    return toy


def _json(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)  # the whole of stdout is one document


def test_predict_json_quiet_and_progress(cli, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(predictor_module, "PREDICT_CHUNK", 50)  # 160 rows: 4 chunks
    plain = cli("predict", toy.ref, toy.csv)
    assert plain.code == 0, plain.err
    table = pd.read_csv(io.StringIO(plain.out))  # stdout is the CSV alone
    assert len(table) == 160 and "tier" in table
    assert "predicting with" in plain.err and "rows/s" in plain.err and "eta" in plain.err

    doc = _json(cli("predict", toy.ref, toy.csv, "--json"))
    assert doc["model"] == toy.ref and doc["rows"] == 160 and doc["seconds"] >= 0
    assert [p["tier"] for p in doc["predictions"]] == table["tier"].tolist()

    out = tmp_path / "p.csv"
    doc = _json(cli("predict", toy.ref, toy.csv, "--json", "-o", out))
    assert doc["output"] == str(out) and "predictions" not in doc and out.is_file()

    quiet = cli("predict", toy.ref, toy.csv, "-q", "-o", out)
    assert quiet.code == 0 and quiet.out == "" and quiet.err == ""


def test_evaluate_json_and_quiet(cli, toy):
    doc = _json(cli("evaluate", toy.ref, "--data", toy.csv, "--json"))
    assert 0 <= doc["accuracy"] <= 1
    quiet = cli("evaluate", toy.ref, "--data", toy.csv, "-q")
    assert quiet.code == 0 and "accuracy" in quiet.out and quiet.err == ""


def test_init_json_and_quiet(cli, toy, tmp_path):
    config = tmp_path / "c.yaml"
    doc = _json(cli("init", toy.csv, "-t", "tier", "-o", config, "--json"))
    assert doc["config"] == str(config) and doc["settings"]["features"]["target"] == "tier"
    assert yaml.safe_load(config.read_text()) == doc["settings"]
    quiet = cli("init", toy.csv, "-t", "tier", "-o", config, "--force", "-q")
    assert quiet.code == 0 and quiet.out == f"{config}\n"


def test_report_json_and_quiet(cli, toy, tmp_path):
    page = tmp_path / "r.html"
    doc = _json(cli("report", toy.ref, "-o", page, "--json"))
    assert doc["path"] == str(page) and page.is_file() and doc["sections"]
    assert isinstance(doc["omitted"], dict)
    quiet = cli("report", toy.ref, "-o", page, "-q")
    assert quiet.code == 0 and quiet.out == f"{page}\n" and quiet.err == ""


def test_compress_shows_its_steps_and_json_stays_clean(cli, toy, tmp_path):
    settings = tmp_path / "compress.yaml"
    settings.write_text(yaml.safe_dump({"compress": {"methods": ["int8"], "repeats": 3}}))
    plain = cli("compress", toy.ref, "--config", settings)
    assert plain.code == 0, plain.err
    # steps: build int8, score 2 networks, warm up + 3 timing rounds, register int8
    assert f"compressed {toy.ref}" in plain.err and "8/8 steps" in plain.err
    assert "steps/s" in plain.err and "eta" in plain.err
    assert plain.out.startswith("report: ")  # status and tables on stderr

    doc = _json(cli("compress", toy.ref, "--config", settings, "--json"))
    assert [v["method"] for v in doc["variants"]] == ["parent", "int8"]


def test_cost_json_stays_clean_with_progress_forced(cli, toy):
    doc = _json(cli("cost", toy.ref, "--throughput", "100", "--json"))
    assert doc["ref"] == toy.ref


def test_run_json(cli, toy, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "modes", "data": {"path": str(toy.csv)}, "features": {"target": "tier"},
        "train": {"epochs": 1, "batch_size": 64}, "output_dir": str(tmp_path / "runs"),
    }))
    result = cli("run", config, "--json")
    doc = _json(result)
    assert doc["model"] == "modes:1" and "accuracy" in doc["metrics"]
    assert doc["compression"] is None
    assert "epoch" not in result.err  # --json implies --quiet


def test_generate_json(cli, tmp_path, monkeypatch):
    import foundry

    monkeypatch.setenv("FOUNDRY_PROGRESS", "1")
    (tmp_path / "c.txt").write_text("\n\n".join(["The cat sat on the mat."] * 30))
    foundry.train({
        "name": "tinyg", "data": {"path": str(tmp_path / "c.txt")},
        "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                  "context_length": 64, "vocab_size": 300},
        "train": {"epochs": 1, "batch_size": 8}, "output_dir": str(tmp_path / "runs"),
    }, progress=False, quiet=True)
    text = cli("generate", "tinyg", "The cat", "--max-tokens", "6", "--temperature", "0", "-q")
    assert text.code == 0, text.err
    doc = _json(cli("generate", "tinyg", "The cat", "--max-tokens", "6", "--temperature", "0",
                    "--json"))
    assert doc["text"] + "\n" == text.out and doc["model"] == "tinyg:1"
    assert doc["prompt_tokens"] > 0 and 0 < doc["completion_tokens"] <= 6
    assert doc["finish_reason"] in ("length", "stop")
