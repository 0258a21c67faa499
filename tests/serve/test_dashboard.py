"""The admin dashboard (`/dashboard`, foundry.serve.dashboard).

In-process (ASGI) tests check the JSON endpoints: the admin token is required, no
response ever holds a key's secret or hash, usage aggregates equal what was metered by
real predict calls, and revenue equals billing's report. The browser test starts a real
`foundry serve`, opens /dashboard in headless Chromium (Debian's `chromium`, driven by
Playwright's client; no browser download), logs in and reads the page; its screenshots go
to `test-artefacts/dashboard/` (or `$FOUNDRY_TEST_ARTEFACTS/dashboard/`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from tests.serve.serve_app_support import PLANS, bearer, make_app, serving

from foundry.config.schema import ServeConfig
from foundry.serve.loadtest import free_port
from foundry.serve.store import api_keys, usage_events

ADMIN = "dashboard-admin-token-0123456789"
JSON_ROUTES = (
    "/admin/dashboard/models",
    "/admin/dashboard/keys",
    "/admin/dashboard/usage",
    "/admin/dashboard/revenue",
    "/admin/dashboard/view",
)
REPO = Path(__file__).resolve().parents[2]


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def _secrets(gate, keys: list[str]) -> list[str]:
    """The secrets no dashboard answer may contain: each key and its stored hash."""
    with gate.store.read() as conn:
        hashes = [row.key_hash for row in conn.execute(select(api_keys.c.key_hash))]
    return [*keys, *hashes]


# --------------------------------------------------------------------------- auth


def test_every_data_route_needs_the_admin_token(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", admin_token=ADMIN)
    key = gate.create_key("acme", "test").key

    async def main() -> None:
        async with serving(app) as client:
            for path in JSON_ROUTES:
                missing = await client.get(path)
                assert missing.status_code == 401
                assert _error(missing)["code"] == "missing_api_key"
                for wrong in ("not-the-token", key, ADMIN + "x"):
                    answer = await client.get(path, headers=bearer(wrong))
                    assert answer.status_code == 401, (path, wrong)
                    assert _error(answer)["type"] == "authentication_error"
                assert (await client.get(path, headers=bearer(ADMIN))).status_code == 200
            report = await client.get(f"/admin/dashboard/report/{toy.name}/1")
            assert report.status_code == 401

    asyncio.run(main())
    gate.close()


def test_without_an_admin_token_the_dashboard_is_off(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate")

    async def main() -> None:
        async with serving(app) as client:
            for path in ("/dashboard", *JSON_ROUTES):
                answer = await client.get(path, headers=bearer("anything"))
                assert answer.status_code == 403
                error = _error(answer)
                assert error["code"] == "admin_disabled"
                assert "FOUNDRY_ADMIN_TOKEN" in error["message"]

    asyncio.run(main())
    gate.close()


def test_the_page_is_static_and_locked_down(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", admin_token=ADMIN)
    key = gate.create_key("acme", "test").key

    async def main() -> None:
        async with serving(app) as client:
            page = await client.get("/dashboard")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            for rule in (
                "script-src 'self'",
                "form-action 'none'",
                "frame-ancestors 'none'",
                "connect-src 'self'",
            ):
                assert rule in csp
            assert page.headers["cache-control"] == "no-store"
            html = page.text
            assert 'id="login"' in html and 'type="password"' in html
            assert "<script>" not in html  # no inline script: the CSP would block it
            assert "http://" not in html and "https://" not in html  # nothing remote
            for secret in (ADMIN, key, *_secrets(gate, [])):
                assert secret not in html
            script = await client.get("/dashboard/static/dashboard.js")
            assert script.status_code == 200
            assert script.headers["content-type"].startswith("text/javascript")
            assert "sessionStorage" in script.text and "Authorization" in script.text
            style = await client.get("/dashboard/static/dashboard.css")
            assert style.status_code == 200
            other = await client.get("/dashboard/static/..%2Fdashboard.py")
            assert other.status_code == 404
            _error(other)

    asyncio.run(main())
    gate.close()


def test_bad_parameters_are_refused_in_the_error_shape(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", admin_token=ADMIN)

    async def main() -> None:
        async with serving(app) as client:
            period = await client.get(
                "/admin/dashboard/revenue?period=2026-13", headers=bearer(ADMIN)
            )
            assert period.status_code == 400
            assert _error(period)["param"] == "period"
            days = await client.get("/admin/dashboard/usage?days=0", headers=bearer(ADMIN))
            assert days.status_code == 422
            assert _error(days)["param"] == "days"

    asyncio.run(main())
    gate.close()


# --------------------------------------------------------------------------- numbers


def test_usage_and_revenue_equal_what_was_metered(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", admin_token=ADMIN)
    starter = gate.create_key("Acme Corp", "starter").key
    tester = gate.create_key("Beta Labs", "test").key
    gate.create_key("Idle Inc", "pro")  # billed its monthly price, never used

    async def main() -> dict[str, dict]:
        async with serving(app) as client:
            url = f"/v1/models/{toy.name}/predict"
            for n in (4, 4, 3):
                answer = await client.post(url, json=toy.records(n), headers=bearer(starter))
                assert answer.status_code == 200
            for n in (1, 2):
                answer = await client.post(url, json=toy.records(n), headers=bearer(tester))
                assert answer.status_code == 200
            refused = await client.post(url, json=[{"age": "old"}], headers=bearer(tester))
            assert refused.status_code == 422  # not admitted, not metered
            # Answers settle within 0.2 s (docs/SERVING.md); the dashboard settles this
            # process's own first, so the page counts them at once.
            out = {}
            for path in JSON_ROUTES:
                answer = await client.get(path, headers=bearer(ADMIN))
                assert answer.status_code == 200
                assert answer.headers["cache-control"] == "no-store"
                for secret in _secrets(gate, [starter, tester]):
                    assert secret not in answer.text, path
                out[path] = answer.json() if path != "/admin/dashboard/view" else answer.text
            return out

    out = asyncio.run(main())

    with gate.store.read() as conn:  # what the meter wrote, summed here independently
        metered = {
            (row.key_id, row.model): (int(row.requests), int(row.units))
            for row in conn.execute(
                select(
                    usage_events.c.key_id,
                    usage_events.c.model,
                    func.count().label("requests"),
                    func.sum(usage_events.c.units).label("units"),
                )
                .where(usage_events.c.status < 500)
                .group_by(usage_events.c.key_id, usage_events.c.model)
            )
        }
    assert metered == {(1, toy.name): (3, 11), (2, toy.name): (2, 3)}

    usage = out["/admin/dashboard/usage"]
    assert len(usage["days"]) == 30 and len(usage["daily"]) == 30
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert usage["until"] == today
    assert usage["daily"][-1] == {"day": today, "requests": 5, "units": 14}
    assert (usage["requests"], usage["units"]) == (5, 14)
    by_key = {row["key_id"]: row for row in usage["by_key"]}
    assert {k: (r["requests"], r["units"]) for k, r in by_key.items()} == {
        k: v for (k, _), v in metered.items()
    }
    assert by_key[1]["name"] == "Acme Corp" and by_key[1]["plan"] == "starter"
    assert by_key[1]["prefix"].startswith("fdy_") and by_key[1]["daily_units"][-1] == 11
    assert [(r["model"], r["requests"], r["units"]) for r in usage["by_model"]] == [
        (toy.name, 5, 14)
    ]
    assert {r["plan"]: r["units"] for r in usage["by_plan"]} == {"starter": 11, "test": 3}

    revenue = out["/admin/dashboard/revenue"]
    billed = gate.usage_report().to_dict()
    assert {k: revenue[k] for k in billed} == billed
    assert revenue["totals"]["amount_due_cents"] == 4_900 + 19_900  # starter + idle pro
    assert revenue["amount_due"] == "$248.00"

    keys = out["/admin/dashboard/keys"]["keys"]
    assert [k["name"] for k in keys] == ["Acme Corp", "Beta Labs", "Idle Inc"]
    assert all(set(k) >= {"id", "name", "prefix", "plan", "status", "created_at"} for k in keys)
    assert not any("hash" in field or field == "key" for k in keys for field in k)

    models = out["/admin/dashboard/models"]["models"]
    (model,) = models
    (version,) = model["versions"]
    assert version["ref"] == toy.ref and version["served"] is True
    assert version["training"]["epochs_run"] == 2 and len(version["history"]) == 2
    assert version["key_metric"]["name"] == "accuracy"
    assert version["lineage"] == [toy.ref]

    view = out["/admin/dashboard/view"]
    for text in ("Acme Corp", "Beta Labs", toy.ref, "$248.00", "$49.00", "<svg"):
        assert text in view
    assert 'id="tile-units">14<' in view and 'id="tile-requests">5<' in view
    gate.close()


def test_usage_is_bucketed_by_utc_day_on_every_database(db_backend, tmp_path):
    """Events on either side of midnight UTC, a server error (never billed) and one before
    the window: the GROUP BY runs on SQLite and PostgreSQL alike."""
    from foundry.serve.dashboard import Dashboard
    from foundry.serve.gate import Gate

    day = 20_000  # 2024-10-04 (UTC day number)
    now = (day + 1) * 86_400 + 3_600  # 01:00 on the next day
    gate = Gate(ServeConfig(plans=PLANS).all_plans(), home=tmp_path / "gate", clock=lambda: now)
    created = gate.create_key("acme", "test")
    events = [  # (seconds since epoch, units, status)
        (day * 86_400 + 86_399.5, 3, 200),  # 23:59:59.5 on `day`
        ((day + 1) * 86_400, 5, 200),  # midnight: the next day
        ((day + 1) * 86_400 + 10, 7, 503),  # a server error: not billed
        ((day - 3) * 86_400, 11, 200),  # before a 2-day window
    ]
    with gate.store.write() as conn:
        for ts, units, status in events:
            conn.execute(
                usage_events.insert().values(
                    key_id=created.record.id,
                    model="toy",
                    units=units,
                    status=status,
                    request_id=f"r{ts}",
                    created_at=ts,
                    period=datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m"),
                )
            )
    service = SimpleNamespace(gate=gate, home=tmp_path / "home", models={}, language_models={})
    usage = Dashboard(service).usage(days=2)
    assert usage["days"] == ["2024-10-04", "2024-10-05"]
    assert usage["daily"] == [
        {"day": "2024-10-04", "requests": 1, "units": 3},
        {"day": "2024-10-05", "requests": 1, "units": 5},
    ]
    assert Dashboard(service).usage(days=5)["units"] == 19
    gate.close()


def test_the_day_bucket_compiles_for_both_databases():
    from foundry.serve.dashboard import utc_day

    expr = utc_day(usage_events.c.created_at)
    assert "FLOOR(" in str(expr.compile(dialect=postgresql.dialect()))
    assert "CAST(" in str(expr.compile(dialect=sqlite.dialect()))


def test_the_view_escapes_what_users_typed(toy, tmp_path):
    app, gate = make_app(toy, tmp_path / "gate", admin_token=ADMIN)
    gate.create_key('<script>alert("x")</script>', "test")

    async def main() -> str:
        async with serving(app) as client:
            answer = await client.get("/admin/dashboard/view", headers=bearer(ADMIN))
            assert answer.status_code == 200
            return answer.text

    view = asyncio.run(main())
    assert "<script>" not in view
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in view
    gate.close()


def test_a_broken_package_is_reported_not_fatal(tmp_path):
    from foundry.registry import ModelRecord, Registry
    from foundry.serve.dashboard_models import version_summary

    registry = Registry(tmp_path / "home")
    package = registry.home / "models" / "broken" / "1"
    package.mkdir(parents=True)
    (package / "foundry.json").write_text("{not json", encoding="utf-8")
    (package / "metrics.json").write_text("{}", encoding="utf-8")
    record = ModelRecord(
        name="broken",
        version=1,
        path=package,
        created_at=datetime.now(timezone.utc),
        parent=None,
        task="binary",
        metrics={"accuracy": 0.5, "note": "x"},
        fingerprint=None,
        description="",
        tags=("latest",),
        size_bytes=10,
    )
    summary = version_summary(record, registry=registry, by_ref={})
    assert summary["problem"].startswith("cannot read the package")
    assert summary["key_metric"] == {"name": "accuracy", "value": 0.5}
    assert summary["history"] == [] and summary["fairness"] is None


# --------------------------------------------------------------------------- a product


def _train_product(root: Path) -> SimpleNamespace:
    """A classifier audited for fairness, its int8 variant, and both cost estimates."""
    import foundry
    from foundry.compression import compress
    from foundry.config.schema import CompressConfig
    from foundry.economics import estimate, save
    from foundry.registry import Registry

    rng = np.random.default_rng(1)
    n = 240
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.normal(50, 20, n).round(2),
            "color": rng.choice(["red", "green", "blue"], n),
            "member": rng.choice(["yes", "no"], n),
        }
    )
    df["tier"] = np.where(df.age + (df.color == "red") * 10 > 45, "high", "low")
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "shop.csv", index=False)
    home = root / "home"
    config = {
        "name": "shop",
        "data": {"path": str(root / "shop.csv")},
        "features": {"target": "tier"},
        "train": {"epochs": 4, "batch_size": 32},
        "evaluate": {"fairness": {"sensitive_features": ["color"]}},
        "output_dir": str(root / "runs"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(home))
        trained = foundry.train(config, progress=False, quiet=True)
    registry = Registry(home)
    variant = (
        compress(trained.model_ref, CompressConfig(methods=["int8"]), registry=registry, quiet=True)
        .variants[1]
        .ref
    )
    for ref in (trained.model_ref, variant):
        save(estimate(ref, throughput=800.0, registry=registry), registry)
    records = json.loads(df.drop(columns=["tier"]).head(5).to_json(orient="records"))
    return SimpleNamespace(ref=trained.model_ref, variant=variant, home=home, records=records)


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    return _train_product(tmp_path_factory.mktemp("product"))


@pytest.mark.slow
def test_models_show_lineage_curves_fairness_compression_and_costs(product, tmp_path):
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    serve_config = ServeConfig()
    gate = Gate(serve_config.all_plans(), home=tmp_path / "gate")
    app = create_app(
        serve_config, [product.variant], gate=gate, home=product.home, admin_token=ADMIN
    )

    async def main() -> tuple[dict, str, httpx.Response]:
        async with serving(app) as client:
            models = (await client.get("/admin/dashboard/models", headers=bearer(ADMIN))).json()
            view = (await client.get("/admin/dashboard/view", headers=bearer(ADMIN))).text
            report = await client.get("/admin/dashboard/report/shop/1", headers=bearer(ADMIN))
            return models, view, report

    models, view, report = asyncio.run(main())
    (model,) = models["models"]
    parent, child = model["versions"]
    assert (parent["ref"], child["ref"]) == (product.ref, product.variant)
    assert child["parent"] == parent["ref"] and child["lineage"] == [child["ref"], parent["ref"]]
    assert child["served"] and not parent["served"]
    assert child["compression"]["method"] == "int8"
    assert child["compression"]["size_ratio"] == pytest.approx(
        child["size_bytes"] / parent["size_bytes"]
    )
    assert child["compression"]["latency_ms"]  # from the compress run's compress.json
    assert len(parent["history"]) == 4 and parent["run_dir"]
    fairness = parent["fairness"]
    assert fairness["sensitive_features"] == ["color"]
    assert {g["group"] for g in fairness["groups"]} == {"color=red", "color=green", "color=blue"}
    for version in (parent, child):
        economics = version["economics"]
        assert economics["cost_per_1k"] > 0 and economics["cost_per_1k_text"].startswith("$")
        assert {p["name"] for p in economics["plans"]} >= {"starter", "pro"}

    for text in (
        "loss per epoch",
        "Fairness",
        "color=red",
        "int8",
        "per 1,000",
        "break-even customers",
        f"Lineage: {product.variant} ← {product.ref}",
    ):
        assert text in view
    assert view.count("<svg") >= 3  # usage + loss + metric curves

    assert report.status_code == 200
    assert report.headers["content-disposition"] == 'attachment; filename="shop-1-report.html"'
    assert "plotly" in report.text.lower()
    gate.close()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    """(sync_playwright, chromium path), or a skip naming what is missing; with
    FOUNDRY_REQUIRE_BROWSER=1 (CI) a missing browser fails the test instead. Module
    scope, and asked for before `product`, so a skip trains nothing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the `playwright` Python package (pip install -e '.[dev]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing.append("a `chromium` executable (apt-get install chromium)")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if os.environ.get("FOUNDRY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FOUNDRY_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright, executable


def _artefacts() -> Path:
    root = Path(os.environ.get("FOUNDRY_TEST_ARTEFACTS") or REPO / "test-artefacts")
    folder = root / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _start_server(model: str, home: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "FOUNDRY_HOME": str(home), "FOUNDRY_ADMIN_TOKEN": ADMIN}
    env.pop("FOUNDRY_DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "foundry",
        "serve",
        model,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"server not ready after 120 s:\n{log_path.read_text()}")


@pytest.mark.slow
def test_a_new_user_reads_the_dashboard_in_a_browser(browser, product, tmp_path):
    sync_playwright, executable = browser
    from foundry.serve.gate import Gate

    gate = Gate(home=product.home)
    created = gate.create_key("Acme Corp", "starter")
    gate.close()
    key = created.key
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start_server(product.variant, product.home, port, tmp_path / "server.log")
    shots = _artefacts()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in (5, 5, 2):
                answer = client.post(
                    "/v1/models/shop/predict", json=product.records[:n], headers=bearer(key)
                )
                assert answer.status_code == 200, answer.text
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox"]
            )  # root in CI containers
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Console errors (a CSP violation, a script error), except the browser's own
            # note on each refused request (the wrong token's 401, a missing favicon).
            page.on(
                "console",
                lambda msg: (
                    errors.append(msg.text)
                    if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.clock.install()  # the auto-refresh timer runs when the test says so
            page.goto(f"{url}/dashboard")
            page.wait_for_selector("#login:not([hidden])")
            page.screenshot(path=str(shots / "01-login.png"))

            page.fill("#token", "wrong-token")
            page.click("#login-button")
            page.wait_for_selector("#login-error:not([hidden])")
            assert "wrong admin token" in page.inner_text("#login-error")

            page.fill("#token", ADMIN)
            page.click("#login-button")
            page.wait_for_selector("#summary")
            assert page.evaluate("sessionStorage.getItem('foundry.dashboard.token')") == ADMIN
            assert ADMIN not in page.url
            text = page.inner_text("#content")
            assert page.inner_text("#tile-requests") == "3"
            assert page.inner_text("#tile-units") == "12"
            assert page.inner_text("#tile-revenue") == "$49.00"  # starter, within its units
            for expected in (
                "Acme Corp",
                created.record.prefix,
                product.ref,
                product.variant,
                "int8",
                "loss per epoch",
                "color=red",
                "break-even customers",
            ):
                assert expected in text or expected in page.content(), expected
            html = page.content()
            assert key not in html and key not in text
            page.screenshot(path=str(shots / "02-dashboard.png"), full_page=True)
            page.locator("#usage").screenshot(path=str(shots / "03-usage.png"))
            page.locator("#model-shop details.version >> nth=1").evaluate("el => el.open = true")
            page.locator("#models").screenshot(path=str(shots / "04-models.png"))

            with page.expect_download() as download:  # the report needs the Bearer header
                page.locator("a[data-report]").first.click()
            assert download.value.suggested_filename == "shop-1-report.html"
            report = Path(download.value.path()).read_text(encoding="utf-8")
            assert "shop:1" in report and "plotly" in report.lower()

            # Auto-refresh (every 30 s by default) shows new usage and keeps the version
            # panel the reader opened; switched off, it leaves the page alone.
            from playwright.sync_api import expect

            panel = page.locator("#model-shop details.version >> nth=1")
            with httpx.Client(base_url=url, timeout=30) as client:
                answer = client.post(
                    "/v1/models/shop/predict", json=product.records[:1], headers=bearer(key)
                )
                assert answer.status_code == 200, answer.text
                page.clock.run_for(31_000)
                expect(page.locator("#tile-requests")).to_have_text("4")
                assert page.inner_text("#tile-units") == "13"
                assert panel.evaluate("el => el.open")
                assert page.inner_text("#status").startswith("Updated")
                page.select_option("#auto", "0")
                answer = client.post(
                    "/v1/models/shop/predict", json=product.records[:1], headers=bearer(key)
                )
                assert answer.status_code == 200, answer.text
                page.clock.run_for(120_000)
                page.wait_for_timeout(500)  # time for a (wrong) refresh to land
                assert page.inner_text("#tile-requests") == "4"
                page.click("#refresh")
                expect(page.locator("#tile-requests")).to_have_text("5")

            page.click("#logout")
            page.wait_for_selector("#login:not([hidden])")
            assert page.evaluate("sessionStorage.getItem('foundry.dashboard.token')") is None
            assert page.inner_text("#content") == ""
            browser.close()
        assert errors == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for name in ("01-login.png", "02-dashboard.png", "03-usage.png", "04-models.png"):
        assert (shots / name).stat().st_size > 1000
