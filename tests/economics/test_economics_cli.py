"""`foundry cost MODEL` through the real entry point (`foundry.cli.main`): tables on
stdout, the JSON saved under FOUNDRY_HOME, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import statistics
import sys

import pytest
from tests.serve.serve_app_support import shared_toy

from foundry.cli import main
from foundry.economics import format_money, load_saved


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)


@pytest.fixture
def home(toy, tmp_path, monkeypatch):
    """A copy of the toy's registry: `foundry cost` saves its JSON into the home."""
    copy = tmp_path / "home"
    shutil.copytree(toy.home, copy)
    monkeypatch.setenv("FOUNDRY_HOME", str(copy))
    return copy


@pytest.fixture
def foundry(monkeypatch, capsys):
    """Run `foundry ARGS...`: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["foundry", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr()
        return exit_.value.code or 0, out.out, out.err

    return run


PRICES = """
cost:
  serve_machine_per_hour: 0.5
  serve_utilization: 0.25
  markup: 4
  value_per_1k: 2.0
  competitor_prices_per_1k: {acme: 0.05, globex: 0.07}
serve:
  plans:
    mini: {price_cents: 900, included_units: 20000}
"""


def test_cost_prints_tables_and_saves_the_json(toy, home, foundry, tmp_path):
    config = tmp_path / "prices.yaml"
    config.write_text(PRICES)
    code, out, _ = foundry("cost", toy.name, "--config", str(config), "--throughput", "250")
    assert code == 0, out
    per_1k = 0.5 / (3600 * 250.0 * 0.25) * 1000
    assert f"cost per 1k predictions │ {format_money(per_1k)}" in out
    for text in ("training run", "mini", "never", "cost-plus", "value-based", "competitive",
                 "break-even", "supplied", "$365.00"):  # one $0.50/h machine × 730 h
        assert text in out, text
    saved = home / "economics" / "toy" / f"{toy.ref.split(':')[1]}.json"
    assert f"saved: {saved}" in out
    data = load_saved(toy.name)
    assert data == json.loads(saved.read_text())
    assert data["cost_per_1k"] == per_1k and data["ref"] == toy.ref
    mini = next(p for p in data["plans"] if p["name"] == "mini")
    assert mini["margin"] == 9.0 - 20 * per_1k
    pricing = {s["method"]: s["price_per_1k"] for s in data["pricing"]}
    assert pricing == {"cost_plus": per_1k * 4, "value_based": 2.0 * 0.2,
                       "competitive": max(statistics.median([0.05, 0.07]) * 0.9, per_1k)}


def test_json_output_and_an_in_process_throughput(toy, home, foundry, tmp_path):
    out_file = tmp_path / "out" / "cost.json"
    code, out, err = foundry("cost", toy.ref, "--measure", "model", "--seconds", "0.05",
                             "--json", "-o", str(out_file))
    assert code == 0, err
    data = json.loads(out)
    assert json.loads(out_file.read_text()) == data
    t = data["throughput"]
    assert t["measure"] == "model" and t["server"] is None and t["server_cases"] == []
    assert t["basis"] == "single" and t["single"] > 0 and t["serving"] > 0
    assert t["per_machine"] == t["single"]
    assert data["cost_per_1k"] == 0.10 / (3600 * t["single"] * 0.5) * 1000  # the defaults
    assert data["settings"]["measure_seconds"] == 0.05
    assert data["training"]["seconds"] > 0
    assert "timing" not in err  # --json: nothing but the JSON


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--throughput", "1"], "error: no model named 'nope'"),
        (["toy", "--throughput", "0"], "--throughput must be a positive number of predictions"),
        (["toy", "--throughput", "-2"], "--throughput must be a positive number"),
        (["toy", "--seconds", "0"], "cost.measure_seconds: Input should be greater than 0"),
        (["toy", "--measure", "fast"], "--measure must be server or model, got 'fast'"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(home, foundry, args, message):
    code, out, err = foundry("cost", *args)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_bad_data_and_config_files(toy, home, foundry, tmp_path):
    data = tmp_path / "other.csv"
    data.write_text("height,weight\n1,2\n")
    code, _, err = foundry("cost", "toy", "--data", str(data))
    assert code == 2 and "missing column(s) 'age', 'income', 'color', 'member'" in err
    config = tmp_path / "c.yaml"
    config.write_text("cost:\n  serve_utilisation: 0.5\n")
    code, _, err = foundry("cost", "toy", "--config", str(config), "--throughput", "1")
    assert code == 2 and "unknown key 'cost.serve_utilisation'; did you mean" in err
    config.write_text("cost:\n  competitor_prices_per_1k: {a: -1}\n")
    code, _, err = foundry("cost", "toy", "--config", str(config), "--throughput", "1")
    assert code == 2 and "competitor_prices_per_1k.a must be >= 0" in err
    code, _, err = foundry("cost", "toy", "--throughput", "fast")
    assert code == 2 and "Invalid value for '--throughput'" in err  # click's usage error
