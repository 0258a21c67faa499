"""A hostile package cannot make the dashboard or `foundry report` read outside the
registry (foundry.registry.integrity.Confinement).

The hostile model is registered next to a real one with a manifest pointing its training
run (`training.run_dir`) and its compress reports (`config.output_dir`) at a folder
outside the home holding "secrets" shaped as foundry files would be. Through the real
dashboard route and the real `foundry report` command, those values never appear, the
page still answers, and it says what it did not read.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from tests.serve.serve_app_support import bearer, make_app, serving

from foundry.errors import ModelError
from foundry.registry import Registry

ADMIN = "dashboard-admin-token-0123456789"
SECRET_LOSS = 123456.789
SECRET_LATENCY = 987654.321


@pytest.fixture
def hostile(toy, tmp_path, monkeypatch):
    """A copy of the toy's home holding `evil:1`, whose manifest names a folder outside it."""
    home = tmp_path / "home"
    shutil.copytree(toy.home, home)
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    secrets = tmp_path / "secrets"  # outside the home, never recorded by foundry
    run = secrets / "evil-20260101-000000-000000"
    run.mkdir(parents=True)
    (run / "COMPLETED").write_text("evil:1\n")
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": SECRET_LOSS}) + "\n")
    compress = secrets / "evil-compress-20260101-000000-000000"
    compress.mkdir()
    (compress / "compress.json").write_text(
        json.dumps(
            {
                "parent": "toy:1",
                "variants": [{"ref": "evil:1", "latency_ms": {"1": SECRET_LATENCY}}],
            }
        )
    )
    registry = Registry(home)
    package = registry.load(toy.ref)
    manifest = json.loads(json.dumps(package.manifest))
    manifest["config"]["name"] = "evil"
    manifest["config"]["output_dir"] = str(secrets)
    manifest["training"]["run_dir"] = str(run)
    manifest["compression"] = {"method": "prune", "parent": toy.ref}  # same network
    registry.register("evil", weights=package.weights, manifest=manifest, metrics=package.metrics)
    return replace(toy, home=home), run


def _dashboard(toy) -> tuple[dict, int]:
    """GET /admin/dashboard/models (JSON) and the status of /admin/dashboard/view (the page)."""
    app, _ = make_app(toy, toy.home / "gate", admin_token=ADMIN)

    async def main() -> tuple[dict, int]:
        async with serving(app) as client:
            answer = await client.get("/admin/dashboard/models", headers=bearer(ADMIN))
            assert answer.status_code == 200, answer.text
            view = await client.get("/admin/dashboard/view", headers=bearer(ADMIN))
            return answer.json(), view.status_code

    return asyncio.run(main())


def test_the_dashboard_does_not_follow_a_manifest_out_of_the_registry(hostile):
    toy, run = hostile
    out, page = _dashboard(toy)
    text = json.dumps(out)
    assert str(SECRET_LOSS) not in text and str(SECRET_LATENCY) not in text
    versions = {v["ref"]: v for m in out["models"] for v in m["versions"]}
    evil = versions["evil:1"]
    assert evil["history"] == [] and evil["run_dir"] is None
    assert evil["compression"]["latency_ms"] is None
    assert any(str(run) in w and "not read" in w for w in evil["warnings"])
    # The model foundry trained still shows its curves, from the run folder it recorded.
    assert len(versions[toy.ref]["history"]) == 2 and versions[toy.ref]["warnings"] == []
    assert page == 200


def test_a_changed_manifest_is_one_version_problem_not_a_failed_page(hostile):
    toy, _ = hostile
    path = Registry(toy.home).resolve("evil:1").path / "foundry.json"
    manifest = json.loads(path.read_text())
    manifest["description"] = "edited"
    path.write_text(json.dumps(manifest))
    out, page = _dashboard(toy)
    assert page == 200
    versions = {v["ref"]: v for m in out["models"] for v in m["versions"]}
    assert "changed after registration" in versions["evil:1"]["problem"]
    assert versions[toy.ref]["problem"] is None


@pytest.mark.slow
def test_foundry_report_does_not_follow_a_manifest_out_of_the_registry(
    hostile, tmp_path, capsys, monkeypatch
):
    from foundry.cli import main

    toy, run = hostile
    out = tmp_path / "evil.html"
    monkeypatch.setattr(sys, "argv", ["foundry", "report", "evil:1", "-o", str(out)])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    assert exited.value.code in (0, None), captured.err
    page = out.read_text(encoding="utf-8")
    assert str(SECRET_LOSS) not in page and str(SECRET_LATENCY) not in page
    assert "not read" in page and str(run) in page


def test_a_run_folder_whose_completed_points_outside_it_is_refused(tmp_path):
    from foundry.report.sources import gather

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "COMPLETED").write_text("unregistered: ../../../etc\n")
    with pytest.raises(ModelError, match="outside"):
        gather(run)


def test_an_index_record_needs_no_manifest_to_be_trusted(hostile):
    toy, _ = hostile
    registry = Registry(toy.home)
    # The run folders the report may read are the ones foundry recorded at registration.
    assert registry.run_dirs(["evil"]) == []
    assert registry.run_dirs(["toy"]) == [registry.resolve(toy.ref).run_dir]
    assert Path(registry.resolve(toy.ref).run_dir, "metrics.jsonl").is_file()
