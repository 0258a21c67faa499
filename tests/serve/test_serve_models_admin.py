"""`foundry models tag/untag/alias/delete/export/import` and the same over /admin/models,
on a real trained model served from an alias."""

from __future__ import annotations

import json

import pytest
from tests.serve.serve_app_support import PLANS, serving
from typer.testing import CliRunner

from foundry.cli import app as cli_app
from foundry.config.schema import ServeConfig

ADMIN = {"Authorization": "Bearer admin-secret"}


def _cli(*args: str):
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _refused(*args: str) -> str:
    """The error of a command that must fail (`foundry.cli.main` prints it as one line)."""
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code != 0 and result.exception is not None, result.output
    return str(result.exception)


def test_cli_round_trip(toy, foundry_home, tmp_path):
    """Export the trained toy, import it into this test's home, then tag, alias, predict
    through the alias, delete."""
    archive = tmp_path / "toy.tar.gz"
    from foundry.registry import Registry
    from foundry.registry.manage import export_version

    export_version(Registry(toy.home), toy.ref, archive)  # the shared registry is read-only
    imported = json.loads(_cli("models", "import", str(archive), "--json"))
    assert imported["ref"] == toy.ref
    assert "already exists" in _refused("models", "import", str(archive))
    assert _cli("models", "import", str(archive), "--as", "toy2").strip() == "imported toy2:1"

    assert _cli("models", "tag", "toy2:1", "reviewed").startswith("toy2:reviewed → toy2:1")
    assert json.loads(_cli("models", "untag", "toy2:1", "reviewed", "--json"))["tags"] == []
    assert _cli("models", "alias", "toy", "production", "1").strip() == "toy:production → toy:1"
    shown = json.loads(_cli("models", "show", "toy:production", "--json"))
    assert shown["ref"] == "toy:1" and shown["aliases"] == {"production": "toy:1"}
    predictions = _cli("predict", "toy:production", str(toy.csv))
    assert predictions.splitlines()[0].startswith("tier")  # the alias loads like a version

    out = tmp_path / "again.tar.gz"
    assert json.loads(_cli("models", "export", "toy:production", str(out), "--json"))["ref"] == (
        "toy:1"
    )
    assert "name the version" in _refused("models", "delete", "toy:production")
    deleted = json.loads(_cli("models", "delete", "toy:1", "--json"))
    assert deleted == {
        "deleted": "toy:1",
        "aliases": ["production"],
        "children": [],
        "served_by": 0,
    }
    assert "has no alias 'old'" in _refused("models", "alias", "toy2", "old", "--delete")


@pytest.mark.anyio
async def test_admin_routes_and_a_served_version(toy, foundry_home, tmp_path):
    """Over /admin/models: tag, alias, export, import; a version the app serves is not
    deleted (409) until forced."""
    from foundry.registry import Registry
    from foundry.registry.manage import export_version, import_archive
    from foundry.serve.app import create_app

    archive = export_version(Registry(toy.home), toy.ref, tmp_path / "toy.tar.gz").path
    registry = Registry()
    import_archive(registry, archive)
    registry.set_alias("toy", "production", 1)
    # The gate shares the registry's database, as `foundry serve` does.
    app = create_app(ServeConfig(plans=PLANS), ["toy:production"], admin_token="admin-secret")
    async with serving(app) as client:
        tagged = await client.put("/admin/models/toy/versions/1/tags/reviewed", headers=ADMIN)
        assert tagged.status_code == 200 and tagged.json()["tags"] == ["reviewed"]
        refused = await client.delete("/admin/models/toy/versions/1", headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert "serving process" in refused.json()["error"]["message"]
        no_token = await client.delete("/admin/models/toy/versions/1")
        assert no_token.status_code == 401
        missing = await client.put(
            "/admin/models/toy/aliases/staging", json={"version": 7}, headers=ADMIN
        )
        assert missing.status_code == 404 and "no version 7" in missing.text

        exported = await client.get("/admin/models/toy/versions/1/export", headers=ADMIN)
        assert exported.status_code == 200
        assert exported.headers["content-type"] == "application/gzip"
        conflict = await client.post(
            "/admin/models/import", content=exported.content, headers=ADMIN
        )
        assert conflict.status_code == 409
        copied = await client.post(
            "/admin/models/import?as=toy3", content=exported.content, headers=ADMIN
        )
        assert copied.status_code == 201 and copied.json()["ref"] == "toy3:1"
        bad = await client.post("/admin/models/import", content=b"not a tarball", headers=ADMIN)
        assert bad.status_code == 400 and "not a readable .tar.gz" in bad.text

        moved = await client.put(
            "/admin/models/toy3/aliases/production", json={"version": 1}, headers=ADMIN
        )
        assert moved.json() == {"alias": "toy3:production", "ref": "toy3:1"}
        forced = await client.delete("/admin/models/toy/versions/1?force=true", headers=ADMIN)
        assert forced.status_code == 200
        assert forced.json()["served_by"] == 1 and forced.json()["aliases"] == ["production"]
        # still answering: the weights are in memory
        assert (await client.get("/v1/models")).status_code == 200
