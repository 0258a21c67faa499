"""`foundry keys ...` and `foundry usage ...` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from foundry.serve.cli_admin import keys_app, usage_app
from foundry.serve.errors import ApiError
from foundry.serve.gate import Gate

pytestmark = pytest.mark.usefixtures("db_backend")

# The lead mounts the sub-apps the same way in foundry/cli.py.
app = typer.Typer()
app.add_typer(keys_app, name="keys")
app.add_typer(usage_app, name="usage")


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return invoke


def _create(run, *args: str) -> str:
    return run("keys", "create", *args).stdout.strip()


def test_create_prints_the_key_once(run, foundry_home):
    result = run("keys", "create", "--name", "acme", "--plan", "starter")
    key = result.stdout.strip()
    assert key.startswith("fdy_") and len(key) == 36 and "\n" not in key  # stdout: the key only
    assert "cannot be shown again" in result.stderr and key[:12] in result.stderr
    listing = run("keys", "list").stdout
    assert key[:12] in listing and key not in listing and "acme" in listing
    assert "starter" in listing and "active" in listing
    as_json = json.loads(run("keys", "list", "--json").stdout)
    assert [k["prefix"] for k in as_json] == [key[:12]] and key not in json.dumps(as_json)
    assert Gate().authenticate(key).name == "acme"


def test_create_options(run):
    key = _create(
        run, "--name", "t", "--plan", "pro", "--models", "iris, adult", "--expires", "30d"
    )
    info = Gate().authenticate(key)
    assert (info.plan, info.models) == ("pro", ["iris", "adult"])
    data = json.loads(run("keys", "create", "--name", "j", "--plan", "trial", "--json").stdout)
    assert data["key"].startswith("fdy_") and data["plan"] == "trial" and data["expires_at"]


def test_unknown_plan_is_one_line_listing_the_plans(run):
    result = run("keys", "create", "--name", "acme", "--plan", "gold", code=2)
    assert result.stderr == "error: unknown plan 'gold'; plans: trial, starter, pro, enterprise\n"
    assert result.stdout == ""
    result = run("keys", "create", "--name", "a", "--plan", "pro", "--expires", "soon", code=2)
    assert "30d, 12h or 90m" in result.stderr and len(result.stderr.splitlines()) == 1


def test_plans_from_a_config_file(run, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(
        "serve:\n  rotate_grace_hours: 2\n  plans:\n    gold:\n      price_cents: 5000\n"
    )
    key = _create(run, "--name", "g", "--plan", "gold", "--config", str(config))
    result = run("keys", "rotate", key[:12], "--config", str(config))
    assert "works for 2 more hours" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve:\n  plans:\n    gold:\n      price_cent: 1\n")
    result = run("keys", "create", "--name", "g", "--plan", "gold", "--config", str(bad), code=2)
    assert result.stderr.startswith("error: ") and "price_cent" in result.stderr


def test_revoke_and_rotate(run):
    first = _create(run, "--name", "acme", "--plan", "starter")
    result = run("keys", "rotate", first[:12], "--grace-hours", "1")
    second = result.stdout.strip()
    assert second.startswith("fdy_") and second != first
    assert f"key {first[:12]} rotated to {second[:12]}" in result.stderr
    listing = run("keys", "list").stdout
    assert "grace until" in listing and second[:12] in listing

    gate = Gate()
    assert gate.authenticate(first).id != gate.authenticate(second).id  # both work in grace
    result = run("keys", "revoke", second[:12])
    assert result.stdout.startswith("revoked key 2 ") and "(acme)" in result.stdout
    for key in (first, second):
        with pytest.raises(ApiError, match="revoked"):
            Gate().authenticate(key)
    assert run("keys", "revoke", "fdy_nonexist", code=2).stderr.startswith("error: no API key")
    assert "already rotated" in run("keys", "rotate", "1", code=2).stderr


def test_list_when_empty(run):
    assert "no API keys yet" in run("keys", "list").stderr
    assert json.loads(run("keys", "list", "--json").stdout) == []


def test_usage_report_formats(run, tmp_path):
    key = _create(run, "--name", "acme", "--plan", "starter")
    gate = Gate()
    info = gate.authenticate(key)
    for i in range(3):
        gate.complete(
            gate.admit(info, model="m", units=7, request_id=str(i)), status=200, latency_ms=1.0
        )
    period = gate.usage(info)["period"]
    table = run("usage", "report").stdout
    assert f"usage for {period}" in table and "$49.00" in table and key[:12] in table
    lines = run("usage", "report", "--period", period, "--format", "csv").stdout.splitlines()
    assert lines[0].startswith("period,key,name,plan,requests,units")
    assert lines[1].startswith(f"{period},{key[:12]},acme,starter,3,21,100000,0,4900,0,4900")
    data = json.loads(run("usage", "report", "--format", "json").stdout)
    assert data["totals"]["units"] == 21 and data["rows"][0]["amount_due_cents"] == 4_900
    out = tmp_path / "bill.csv"
    result = run("usage", "report", "--format", "csv", "--output", str(out))
    assert out.read_text().splitlines() == lines and "wrote 1 rows" in result.stderr


def test_usage_report_checks_its_options(run):
    result = run("usage", "report", "--period", "2026-13", code=2)
    assert result.stderr == (
        "error: period must be a month as YYYY-MM (e.g. 2026-11), got '2026-13'\n"
    )
    assert "--format must be" in run("usage", "report", "--format", "xml", code=2).stderr
